"""What a member's job can reach through the local backend (issue 14): nothing of the server's (token,
database, environment) nor of other tenants' pods; a pod that cannot start fails its job alone; a stopped
pod that ignores SIGTERM is killed after its grace period and its GPU is not given to another pod before;
exit codes are never lost to a race with the pod's end."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from builders import make_cluster, make_desired_pod, make_pool

from corral.backends import pod_users
from corral.backends.local import LocalBackend
from corral.backends.pod_users import PodIdentity
from corral.backends.pods import DesiredPod, PodRunner
from corral.control.reconcile import Inventory, reconcile
from corral.logs import pod_log_files
from corral.paths import secure_data_dir, write_token
from corral.scheduling import get_policy
from corral.spec.job import JobSpec
from corral.store.accounts import AccountStore
from corral.store.database import open_store
from corral.store.jobs import JobStore

ONE_GPU = Inventory(clusters=[make_cluster("lab", [make_pool("n", flavor="gpu", count=1, gpus=1)])])
TWO_NODES = Inventory(clusters=[make_cluster("lab", [make_pool("n", flavor="gpu", count=2, gpus=2)])])
POLICY = get_policy("default")
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="only root can run pods as another user")
TENANT_UIDS = {"vision": 64_001, "nlp": 64_002}
"""Each tenant's pod user in these tests: uids without a passwd entry, as a node set up per tenant
would have (setpriv needs no entry), so the test machine's users are left alone."""


def submit(store: JobStore, tenant: str = "default", **spec: object) -> str:
    return store.submit(JobSpec.model_validate({"name": "job"} | spec), tenant=tenant).id


def step(store: JobStore, backend: LocalBackend, inventory: Inventory = TWO_NODES) -> None:
    reconcile(store.engine, inventory, POLICY, now=time.time())
    backend.sync()


def run_until_ended(store: JobStore, backend: LocalBackend, *jobs: str) -> dict[str, str]:
    for _ in range(300):
        step(store, backend)
        statuses = {job: store.get(job).status for job in jobs}
        if all(status in ("finished", "failed", "cancelled") for status in statuses.values()):
            return statuses
        time.sleep(0.05)
    raise AssertionError(f"still running: {statuses}")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data dir laid out as the server lays it out, where a pod user could reach it: directly in /tmp
    (pytest's own folders are root's alone, which would hide everything whatever corral did)."""
    folder = Path(tempfile.mkdtemp(prefix="corral-isolation-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@AS_ROOT
def test_a_members_job_reads_no_token_no_database_no_server_secret_and_no_other_tenant_s_files(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "server-cloud-key")
    store = JobStore(open_store(f"sqlite:///{data_dir / 'corral.db'}"))
    token = AccountStore(store.engine).bootstrap()
    assert token is not None
    write_token(data_dir, token)
    secure_data_dir(data_dir)
    backend = LocalBackend(
        store, data_dir, identities=lambda tenant: PodIdentity(tenant, *[TENANT_UIDS[tenant]] * 2)
    )
    other = submit(store, "nlp", command="echo other-tenant-secret > secret.txt", env={"NLP_KEY": "nlp-key"})
    assert run_until_ended(store, backend, other) == {other: "finished"}
    runs, pod = data_dir / "runs", f"{other}/attempt-1/pod-0"
    attack = (
        f"cat {data_dir}/token; cat {data_dir}/corral.db; env; ls {data_dir} {runs} {runs}/{other}; "
        f"cat {runs}/{pod}/work/secret.txt {runs}/{pod}/output.log; ls {runs}/{pod}/work; "
        "cat /proc/1/environ; id -u; echo attack-done"
    )
    job = submit(store, "vision", command=attack)
    assert run_until_ended(store, backend, job) == {job: "finished"}
    output = backend.runner.files(job, 1, 0).log.read_text(errors="replace")
    assert "attack-done" in output and f"\n{TENANT_UIDS['vision']}\n" in output
    for secret in (token, "server-cloud-key", "SQLite format", "other-tenant-secret", "nlp-key", other):
        assert secret not in output.replace(f"{runs}/{other}", ""), secret
    assert f"HOME={runs}/{job}/attempt-1/pod-0/work" in output
    store.engine.dispose()


@AS_ROOT
def test_a_pod_reads_no_other_pod_s_command_line_in_proc(data_dir: Path) -> None:
    """Every process's arguments are world-readable (``/proc/<pid>/cmdline``): the pod's command line
    travels in its root wrapper's environment instead, so a pod of another tenant running beside it
    sees neither the command nor what the command holds; the command still runs as written."""
    store = JobStore(open_store(f"sqlite:///{data_dir / 'corral.db'}"))
    backend = LocalBackend(
        store, data_dir, identities=lambda tenant: PodIdentity(tenant, *[TENANT_UIDS[tenant]] * 2)
    )
    secret = f"nlp-secret-{data_dir.name}"
    other = submit(store, "nlp", command=f'echo "$1$0 $CORRAL_POD_COMMAND"; : {secret}; sleep 30')
    try:
        step(store, backend)
        spy = (
            "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done; "
            "for f in /proc/[0-9]*/environ; do cat $f 2>/dev/null; done | tr '\\0' '\\n' | grep nlp-secret; "
            "echo spied"
        )
        job = submit(store, "vision", command=spy)
        assert run_until_ended(store, backend, job) == {job: "finished"}
        output = backend.runner.files(job, 1, 0).log.read_text(errors="replace")
        assert f"{other}/attempt-1/pod-0/exit" in output  # it saw the other pod's wrapper ...
        assert secret not in output  # ... but not its command
    finally:
        store.cancel(other)
        run_until_ended(store, backend, other)
        for _ in range(200):  # until its processes are gone (and its wrapper reaped)
            step(store, backend)
            if backend.runner.files(other, 1, 0).gone.exists():
                break
            time.sleep(0.05)
    assert backend.runner.files(other, 1, 0).log.read_text() == "/bin/sh \n"  # no $1, the variable unset
    store.engine.dispose()


@AS_ROOT
def test_by_default_pods_run_as_an_unprivileged_user(store: JobStore, tmp_path: Path) -> None:
    backend = LocalBackend(store, tmp_path)
    job = submit(store, command="id -u")
    assert run_until_ended(store, backend, job) == {job: "finished"}
    assert backend.runner.files(job, 1, 0).log.read_text().strip() not in ("", "0")


@pytest.mark.parametrize("switching", [True, False], ids=["pod-user", "as-the-server"])
def test_a_pod_is_told_only_an_allowlist_of_the_server_s_environment(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, switching: bool
) -> None:
    """Also where the user cannot be switched (the server is not root): the environment is scrubbed."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "server-cloud-key")
    monkeypatch.setenv("CORRAL_TOKEN", "server-token")
    monkeypatch.setenv("LC_ALL", "C")
    backend = LocalBackend(store, tmp_path, identities=None if switching else lambda tenant: None)
    job = submit(store, command="env", env={"MINE": "mine"})
    assert run_until_ended(store, backend, job) == {job: "finished"}
    names = {line.split("=", 1)[0] for line in backend.runner.files(job, 1, 0).log.read_text().splitlines()}
    assert {"PATH", "HOME", "TMPDIR", "LC_ALL", "MINE", "CORRAL_JOB_ID", "CUDA_VISIBLE_DEVICES"} <= names
    assert not names & {"AWS_SECRET_ACCESS_KEY", "CORRAL_TOKEN"}
    assert not any(name.startswith("CORRAL_POD_ENV_") for name in names)


def test_a_pod_that_cannot_start_fails_its_job_with_the_reason_and_the_next_job_still_runs(
    store: JobStore, tmp_path: Path
) -> None:
    backend = LocalBackend(store, tmp_path)
    bad = submit(store, command="true", workdir="/nonexistent")
    good = submit(store, command="echo fine")
    assert run_until_ended(store, backend, bad, good) == {bad: "failed", good: "finished"}
    assert store.get(bad).reason == "pod 0 did not start: workdir /nonexistent does not exist"
    log = pod_log_files(backend.runner.runs)(bad, 0, None)
    assert log is not None and b"workdir /nonexistent does not exist" in log.read(log.kept_from, log.length)
    later = submit(store, command="echo later")
    assert run_until_ended(store, backend, later) == {later: "finished"}


def test_a_stopped_pod_that_ignores_sigterm_is_killed_after_its_grace_and_holds_its_gpu_until_then(
    store: JobStore, tmp_path: Path
) -> None:
    backend = LocalBackend(store, tmp_path)
    command = "trap '' TERM; touch trapped; sleep 45"
    stubborn = submit(store, command=command, resources={"gpus": 1}, stop_grace_period=1)
    step(store, backend, ONE_GPU)
    files = backend.runner.files(stubborn, 1, 0)
    session = int(files.pid.read_text())
    for _ in range(200):  # a SIGTERM before the trap is set would end it (on a busy machine it may come)
        if (files.work / "trapped").exists():
            break
        time.sleep(0.05)
    store.cancel(stubborn)
    follower = submit(store, command="echo next", resources={"gpus": 1})
    step(store, backend, ONE_GPU)  # SIGTERM, ignored; the follower is placed on the same GPU ...
    assert store.get(follower).status == "running" and _session_alive(session)
    assert not backend.runner.files(follower, 1, 0).pid.exists()  # ... but not started there
    for _ in range(300):
        step(store, backend, ONE_GPU)
        if backend.runner.files(follower, 1, 0).pid.exists():
            assert not _session_alive(session), "a pod started on a GPU a stopped pod still holds"
        if store.get(follower).status == "finished":
            break
        time.sleep(0.05)
    assert store.get(follower).status == "finished" and not _session_alive(session)


def test_a_process_that_left_its_pod_s_session_is_stopped_and_holds_its_gpu_until_then(
    store: JobStore, tmp_path: Path
) -> None:
    """A job that daemonizes (``setsid``) a process and ends: the process is found by the pod's variables
    it still carries, stopped when its pod ends, and no pod starts on its GPU while it runs."""
    backend = LocalBackend(store, tmp_path)
    command = "setsid sleep 60 > /dev/null 2>&1 & echo $! > daemon.pid"
    daemonizing = submit(store, command=command, resources={"gpus": 1})
    follower = submit(store, command="echo next", resources={"gpus": 1})
    pid_file = backend.runner.files(daemonizing, 1, 0).work / "daemon.pid"
    for _ in range(200):
        step(store, backend, ONE_GPU)
        if pid_file.exists() and pid_file.read_text().strip():
            break
        time.sleep(0.05)
    daemon = psutil.Process(int(pid_file.read_text()))
    for _ in range(200):  # the shell forked it; setsid is about to run there
        if os.getsid(daemon.pid) == daemon.pid:
            break
        time.sleep(0.02)
    assert os.getsid(daemon.pid) == daemon.pid  # it left its pod's session
    for _ in range(300):
        step(store, backend, ONE_GPU)
        if backend.runner.files(follower, 1, 0).pid.exists():
            assert not daemon.is_running() or daemon.status() == psutil.STATUS_ZOMBIE, "a GPU held twice"
        if store.get(follower).status == "finished":
            break
        time.sleep(0.05)
    assert store.get(daemonizing).status == "finished" and store.get(follower).status == "finished"
    assert not daemon.is_running() or daemon.status() == psutil.STATUS_ZOMBIE


@AS_ROOT
def test_another_user_s_process_posing_as_a_pod_s_stray_is_neither_stopped_nor_holds_its_gpu(
    store: JobStore, tmp_path: Path
) -> None:
    """A process of another user that copied a pod's variables into its environment is not that pod's:
    it is not signalled when the pod ends, and the pod's GPU goes to the next pod."""
    backend = LocalBackend(store, tmp_path)
    job = submit(store, command="true", resources={"gpus": 1})
    follower = submit(store, command="echo next", resources={"gpus": 1})
    posing = {"CORRAL_JOB_ID": job, "CORRAL_ATTEMPT": "1", "CORRAL_POD_INDEX": "0", "PATH": "/usr/bin:/bin"}
    drop = ["setpriv", "--reuid=64003", "--regid=64003", "--clear-groups", "--"]
    impostor = subprocess.Popen([*drop, "sleep", "30"], env=posing, start_new_session=True)
    try:
        for _ in range(300):  # one GPU: the follower starts once the job's pod is found gone
            step(store, backend, ONE_GPU)
            if store.get(follower).status == "finished":
                break
            time.sleep(0.05)
        assert store.get(job).status == "finished" and store.get(follower).status == "finished"
        assert impostor.poll() is None
    finally:
        impostor.kill()
        impostor.wait(timeout=10)


def test_a_pod_that_floods_its_output_takes_at_most_twice_the_log_cap_of_disk(
    store: JobStore, tmp_path: Path
) -> None:
    """``yes``-style output used to fill the server's disk (its database's): only the newest ``log_cap``
    bytes are served, and the disk the older ones took is given back on each sync, offsets unchanged."""
    cap = 1 << 20
    backend = LocalBackend(store, tmp_path, log_cap=cap)
    flood = submit(store, command="head -c 8000000 /dev/zero | tr '\\0' x; echo; echo last-line; sleep 30")
    log = backend.runner.files(flood, 1, 0).log
    try:
        for _ in range(300):
            step(store, backend, ONE_GPU)
            if log.exists() and log.stat().st_size > 8_000_000 and log.stat().st_blocks * 512 <= 2 * cap:
                break
            time.sleep(0.05)
        assert log.stat().st_size == 8_000_011 and log.stat().st_blocks * 512 <= 2 * cap
        served = pod_log_files(backend.runner.runs, cap)(flood, 0, None)
        assert served is not None and served.kept_from == 8_000_011 - cap
        assert served.read(served.kept_from, served.length) == b"x" * (cap - 11) + b"\nlast-line\n"
    finally:
        store.cancel(flood)
        run_until_ended(store, backend, flood)
        for _ in range(200):  # until its processes are gone (and its wrapper reaped)
            step(store, backend, ONE_GPU)
            if backend.runner.files(flood, 1, 0).gone.exists():
                break
            time.sleep(0.05)


def _session_alive(session: int) -> bool:
    for process in psutil.process_iter(["status"]):
        try:
            if process.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(process.pid) == session:
                return True
        except OSError:
            continue
    return False


def _short_pods(count: int, command: str) -> list[DesiredPod]:
    return [make_desired_pod(f"j{index}", {"command": command}) for index in range(count)]


def test_a_pod_that_ends_while_it_is_polled_keeps_its_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst moment, made certain: each pod ends during the liveness reading of a poll. Reading the
    exit file first (as it once was) took such a pod for one that vanished, and recorded 137 for a 0."""
    runner = PodRunner(tmp_path / "runs")
    reading = runner.alive

    def ending_while_polled(pid: int) -> bool:
        child = runner._children.get(pid)
        if child is not None:
            child.wait(timeout=10)
        return reading(pid)

    monkeypatch.setattr(runner, "alive", ending_while_polled)
    pods = _short_pods(5, "sleep 0.2")
    assert [runner.ensure(pod) for pod in pods] == [None] * 5
    assert [runner.ensure(pod) for pod in pods] == [0] * 5


def test_many_short_pods_polled_in_a_tight_loop_all_exit_0(tmp_path: Path) -> None:
    runner = PodRunner(tmp_path / "runs")
    pods = _short_pods(100, "true")
    codes: dict[str, int] = {}
    while len(codes) < len(pods):
        for pod in pods:
            if pod.job_id not in codes and (code := runner.ensure(pod)) is not None:
                codes[pod.job_id] = code
    assert set(codes.values()) == {0}


@pytest.mark.parametrize(
    ("users", "expected"),
    [
        ({"corral-vision": 2001, "corral-pod": 2000, "nobody": 65534}, "corral-vision"),
        ({"corral-vision": 0, "corral-pod": 2000, "nobody": 65534}, "corral-pod"),  # never root
        ({"nobody": 65534}, "nobody"),
        ({}, None),
    ],
)
def test_a_tenant_s_pods_run_as_its_own_user_else_the_pod_user_else_nobody(
    monkeypatch: pytest.MonkeyPatch, users: dict[str, int], expected: str | None
) -> None:
    def getpwnam(name: str) -> pwd.struct_passwd:
        if name not in users:
            raise KeyError(name)
        return pwd.struct_passwd((name, "x", users[name], users[name], "", "/", "/bin/false"))

    monkeypatch.setattr(pod_users.pwd, "getpwnam", getpwnam)
    monkeypatch.setattr(pod_users, "can_switch_users", lambda: True)
    if expected is None:
        with pytest.raises(pod_users.NoPodUser, match="no user to run pods as"):
            pod_users.PodUsers()("vision")
    else:
        assert pod_users.PodUsers()("vision") == PodIdentity(expected, users[expected], users[expected])
    monkeypatch.setattr(pod_users, "can_switch_users", lambda: False)
    assert pod_users.PodUsers()("vision") is None  # not root: pods run as the server, said at start
