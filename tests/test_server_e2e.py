"""A real ``corral server`` on loopback: the SDK and CLI submit, the reconcile loop starts the job, and a
kill -9 of the server loses no submitted job."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import admin_client, free_port, start_server, stop, stop_pods, wait_for
from typer.testing import CliRunner

from corral.api_models import NodeRegistration
from corral.cli.main import app
from corral.client import APIError, Client
from corral.paths import read_token
from corral.server.process import start
from corral.spec.job import load_job_spec

CLUSTER_FILE = Path(__file__).resolve().parents[1] / "examples" / "demo" / "cluster.yaml"
PREEMPTION = Path(__file__).resolve().parents[1] / "examples" / "jobs" / "preemption"
JOB = {"name": "train", "queue": "nlp", "command": "sleep 5", "resources": {"gpus": 1, "cpu": 1}}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Client, Path, int]]:
    port = free_port()
    process = start_server(tmp_path, port)
    try:
        with admin_client(tmp_path, port) as client:
            yield client, tmp_path, port
    finally:
        stop(process)


def test_submit_runs_through_the_reconcile_loop_and_the_cli_sees_it(server, monkeypatch) -> None:
    client, folder, port = server
    job = client.submit(JOB)
    wait_for(client, job.id, "running")
    monkeypatch.setenv("CORRAL_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("CORRAL_TOKEN", read_token(folder))
    listed = CliRunner().invoke(app, ["ls", "--json"])
    assert listed.exit_code == 0 and job.id in listed.output
    cancelled = CliRunner().invoke(app, ["cancel", job.id])
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.output
    again = CliRunner().invoke(app, ["cancel", job.id])
    assert again.exit_code == 2 and "already ended" in again.output
    with pytest.raises(APIError, match="unknown field"):
        client.submit(JOB | {"gpu": 1})


def test_kill_9_of_the_server_loses_no_submitted_job(tmp_path: Path) -> None:
    port = free_port()
    process = start_server(tmp_path, port)
    with admin_client(tmp_path, port) as client:
        submitted = [client.submit(JOB | {"name": f"j{i}"}, idempotency_key=f"k{i}").id for i in range(20)]
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    process = start_server(tmp_path, port)
    try:
        with admin_client(tmp_path, port) as client:
            assert {job.id for job in client.jobs(limit=100)} == set(submitted)
            assert client.submit(JOB | {"name": "j0"}, idempotency_key="k0").id == submitted[0]  # a retry
    finally:
        stop(process)


ONE_BOX = """\
clusters:
  - name: lab
    pools:
      - {name: box, flavor: gpu, count: 1, node: {cpu: 64, memory_gib: 256, gpus: 4, gpu_model: X}}
queues:
  - {name: q, quota: null}
"""
LEDGER_POD = (
    'f={ledger}/$CORRAL_JOB_ID.$CORRAL_POD_INDEX; echo "start $CUDA_VISIBLE_DEVICES $(date +%s.%N)" >> $f; '
    'trap \'echo "end $(date +%s.%N)" >> $f; exit 143\' TERM; sleep 0.1 & wait; echo "end $(date +%s.%N)" >> $f'
)
"""A pod that writes when it starts (on which GPUs) and when it ends, also when it is stopped."""


def test_kill_9_at_random_moments_while_jobs_flow_runs_each_once_and_double_books_no_gpu(
    tmp_path: Path,
) -> None:
    """60 jobs (gangs of 2, 2-GPU pods, single pods) flow through one 4-GPU node, some cancelled, while
    the server is killed -9 twice at random moments: afterwards every job is there and ended (finished
    or cancelled, none failed), each pod ran at most once and a finished job's pods exactly once, each
    finished job finished once, and no two pods held one GPU at the same time."""
    seed = random.randrange(10**6)
    chance = random.Random(seed)
    (tmp_path / "cluster.yaml").write_text(ONE_BOX)
    data = Path(tempfile.mkdtemp(prefix="corral-churn-"))  # in /tmp: the pod user passes through it
    ledger = Path(tempfile.mkdtemp(prefix="corral-ledger-"))
    ledger.chmod(0o777)
    port = free_port()
    shapes = [{"pods": 2, "resources": {"gpus": 1}}, {"resources": {"gpus": 2}}, {"resources": {"gpus": 1}}]
    submitted: dict[str, str] = {}
    specs: dict[str, dict] = {}
    cancelled: set[str] = set()
    try:
        for batch in range(2):
            process = start_server(data, port, tmp_path / "cluster.yaml", interval=0.1)
            with admin_client(data, port) as client:
                for i in range(30 * batch, 30 * batch + 30):
                    spec = {"name": f"j{i}", "queue": "q", "command": LEDGER_POD.format(ledger=ledger)}
                    specs[f"k{i}"] = spec | shapes[i % 3]
                    submitted[f"k{i}"] = client.submit(specs[f"k{i}"], idempotency_key=f"k{i}").id
                for key in chance.sample(sorted(submitted), 5):
                    with contextlib.suppress(APIError):  # it may have ended already
                        cancelled.add(client.cancel(submitted[key]).id)
            time.sleep(chance.uniform(0.2, 1.5))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        process = start_server(data, port, tmp_path / "cluster.yaml", interval=0.1)
        try:
            with admin_client(data, port) as client:
                for key, job_id in submitted.items():  # a retried submission is still the same job
                    assert client.submit(specs[key], idempotency_key=key).id == job_id
                deadline = time.monotonic() + 60
                while any(job.status in ("pending", "running") for job in client.jobs(limit=1000)):
                    assert time.monotonic() < deadline, f"seed {seed}: jobs still flow"
                    time.sleep(0.2)
                jobs = {job.id: job for job in client.jobs(limit=1000)}
                finished = {job_id for job_id, job in jobs.items() if job.status == "finished"}
                events = {job_id: [e.kind for e in client.events(job_id)] for job_id in finished}
        finally:
            stop(process)
    finally:
        stop_pods(data)
        shutil.rmtree(data, ignore_errors=True)
    assert set(jobs) == set(submitted.values()), seed
    assert {job.status for job in jobs.values()} <= {"finished", "cancelled"}, (seed, jobs)
    assert finished | cancelled == set(jobs), seed
    assert all(kinds.count("finished") == 1 for kinds in events.values()), (seed, events)
    held = []
    for job_id, job in jobs.items():
        for pod in range(job.spec.get("pods", 1)):
            written = ledger / f"{job_id}.{pod}"
            lines = written.read_text().splitlines() if written.exists() else []
            starts = [line.split() for line in lines if line.startswith("start")]
            ends = [float(line.split()[1]) for line in lines if line.startswith("end")]
            ran = 1 if job_id in finished else len(starts)
            assert len(starts) == ran <= 1 and len(ends) == ran, (seed, job_id, pod, lines)
            held += (
                [(int(gpu), float(starts[0][2]), ends[0]) for gpu in starts[0][1].split(",")] if ran else []
            )
    for gpu in range(4):
        spans = sorted((start, end) for g, start, end in held if g == gpu)
        assert all(end <= later for (_, end), (later, _) in zip(spans, spans[1:], strict=False)), (
            seed,
            gpu,
            spans,
        )
    shutil.rmtree(ledger, ignore_errors=True)


def test_run_logs_and_metrics(server, monkeypatch) -> None:
    """`corral run --json -- CMD` submits a command; `corral logs` prints its output once it finished;
    /metrics shows the reconcile rounds and the queue depth."""
    client, folder, port = server
    monkeypatch.setenv("CORRAL_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("CORRAL_TOKEN", read_token(folder))
    ran = CliRunner().invoke(
        app,
        ["run", "--json", "--gpus", "1", "--queue", "nlp", "--", "echo hello from GPU $CUDA_VISIBLE_DEVICES"],
    )
    assert ran.exit_code == 0, ran.output
    job_id = json.loads(ran.output)["id"]
    assert json.loads(ran.output)["status"] == "pending"
    wait_for(client, job_id, "finished")
    logs = CliRunner().invoke(app, ["logs", job_id])
    assert logs.exit_code == 0 and "hello from GPU " in logs.output
    assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 401
    auth = {"Authorization": f"Bearer {read_token(folder)}"}
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=auth).text
    assert "corral_reconcile_round_seconds_count" in metrics and "corral_admissions_total" in metrics
    assert 'corral_pool_gpus{cluster="lab",pool="dgx",state="total"} 16.0' in metrics


def test_nodes_lists_the_inventory_with_heartbeats(server, monkeypatch) -> None:
    client, folder, port = server
    assert client.heartbeat("dgx-0").last_heartbeat is not None
    monkeypatch.setenv("CORRAL_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("CORRAL_TOKEN", read_token(folder))
    listed = CliRunner().invoke(app, ["nodes", "--json"])
    assert listed.exit_code == 0, listed.output
    nodes = {n["name"]: n for n in json.loads(listed.output)}
    assert {"dgx-0", "dgx-1", "ws-0"} <= set(nodes) and nodes["dgx-0"]["gpus"] == 8
    assert nodes["dgx-0"]["last_heartbeat"] is not None and nodes["dgx-1"]["last_heartbeat"] is None
    removed = CliRunner().invoke(app, ["nodes", "rm", "dgx-0"])  # its heartbeats; the file declares it
    assert removed.exit_code == 0 and "node dgx-0 removed" in removed.output
    missing = CliRunner().invoke(app, ["nodes", "rm", "dgx-0"])
    assert missing.exit_code == 2 and "no registration of node 'dgx-0'" in missing.output


def test_corral_up_schedules_onto_this_machine(tmp_path: Path) -> None:
    """`corral up --gpus 2`: this machine as the only node, with 2 declared GPUs; a 2-GPU job runs on it."""
    port = free_port()
    arguments = ["up", "--data-dir", str(tmp_path), "--port", str(port), "--gpus", "2"]
    process = start(arguments, tmp_path / "up.log", port)
    try:
        assert (tmp_path / "token").stat().st_mode & 0o777 == 0o600
        with admin_client(tmp_path, port) as client:
            assert client.me().role == "admin"
            [node] = client.nodes()
            assert node.gpus == 2
            intruder = Client(client.url, token=client.create_user("intruder", "default", "agent").token)
            machine = NodeRegistration(cpu=1, memory_gib=1)
            with intruder, pytest.raises(APIError) as refused:  # it would take this machine down
                intruder.register(node.name, machine)
            assert refused.value.status == 403 and "run by this server itself" in refused.value.detail
            job = client.submit(
                {"name": "both", "command": "echo $CUDA_VISIBLE_DEVICES", "resources": {"gpus": 2}}
            )
            wait_for(client, job.id, "finished")
            assert client.logs(job.id).strip() == "0,1"
    finally:
        stop(process)


def test_the_cli_waits_follows_logs_shows_events_and_manages_users(server, monkeypatch) -> None:
    client, folder, port = server
    monkeypatch.setenv("CORRAL_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("CORRAL_TOKEN", read_token(folder))
    cli = CliRunner()
    ran = cli.invoke(
        app, ["run", "--wait", "--json", "--queue", "nlp", "--", "echo one; sleep 0.5; echo two"]
    )
    assert ran.exit_code == 0, ran.output
    job = json.loads(ran.output)
    assert job["status"] == "finished" and job["attempt"] == 1
    assert cli.invoke(app, ["logs", "-f", job["id"]]).output == "one\ntwo\n"
    assert cli.invoke(app, ["logs", "--tail", "1", job["id"]]).output == "two\n"
    assert "".join(client.follow_logs(job["id"], tail=1)) == "two\n"
    part = client.log_range(job["id"], offset=4, limit=2)
    assert (part.text, part.start, part.end, part.length, part.truncated_before) == ("tw", 4, 6, 8, 0)
    status = cli.invoke(app, ["status", job["id"]])
    assert all(kind in status.output for kind in ("submitted", "started", "finished"))
    assert "SIGKILL after 30 s (stop_grace_period)" in status.output
    failing = cli.invoke(app, ["run", "--wait", "--queue", "nlp", "--", "echo about to fail; exit 3"])
    assert failing.exit_code == 1 and "pod 0 exited with code 3" in failing.output
    assert "about to fail" in failing.output  # --wait shows the output as it runs
    view = cli.invoke(app, ["top", "--once"])
    assert view.exit_code == 0 and "dgx-0" in view.output and "nlp" in view.output
    assert "vision" in cli.invoke(app, ["queues"]).output
    assert cli.invoke(app, ["tenants", "add", "robotics"]).exit_code == 0
    added = cli.invoke(app, ["users", "add", "ada", "--tenant", "robotics"])
    assert added.exit_code == 0, added.output
    monkeypatch.setenv("CORRAL_TOKEN", added.output.split()[-1])
    assert "ada (member) in tenant robotics" in cli.invoke(app, ["whoami"]).output
    assert job["id"] not in cli.invoke(app, ["ls"]).output
    refused = cli.invoke(app, ["users", "ls"])
    assert refused.exit_code == 2 and "ada is member; this needs admin" in refused.output


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder pods may write to: they run as another user (docs/security.md), who cannot enter pytest's
    own folders (its base folder is root's alone when the tests run as root)."""
    folder = Path(tempfile.mkdtemp(prefix="corral-checkpoints-"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_preempted_job_resumes_from_its_checkpoint(shared_folder: Path) -> None:
    """The demo's story on `corral up --gpus 4`: the preemption example's `workdir: .` ships train.py,
    the checkpointing run is preempted by the urgent job of higher priority that the machine cannot hold
    beside it, then runs again as attempt 2, in a fresh copy of its code, from the step its checkpoint
    holds."""
    data = shared_folder / "up"  # pods pass through it to their folders: not under pytest's own
    port = free_port()
    process = start(
        ["up", "--gpus", "4", "--data-dir", str(data), "--port", str(port)], shared_folder / "up.log", port
    )
    try:
        with admin_client(data, port) as client:
            _preempt_and_resume(client, shared_folder / "checkpoints")
    finally:
        stop(process)


def _preempt_and_resume(client: Client, checkpoints: Path) -> None:
    spec = client.ship_workdir(load_job_spec(PREEMPTION / "train.yaml"), PREEMPTION)
    assert spec.code is not None and spec.workdir is None and spec.checkpoint is not None
    checkpoint = spec.checkpoint.model_copy(update={"dir": str(checkpoints)})
    train = client.submit(spec.model_copy(update={"checkpoint": checkpoint}))
    for _ in range(600):
        if any(int(p.read_text() or 0) >= 2 for p in checkpoints.glob("*.step")):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"no checkpoint written: {client.logs(train.id)!r}")
    urgent = client.submit(PREEMPTION / "urgent.yaml")
    wait_for(client, urgent.id, "finished", timeout=60)
    wait_for(client, train.id, "finished", timeout=60)
    assert [e.kind for e in client.events(train.id)] == [
        "submitted",
        "started",
        "preempted",
        "started",
        "finished",
    ]
    resumed = client.logs(train.id)
    assert resumed.startswith("attempt 2: resumed from step ") and "finished 12 steps" in resumed
    assert client.job(train.id).attempt == 2


def test_a_failed_job_runs_again_while_it_has_retries(server) -> None:
    client, _, _ = server
    flaky = {"name": "flaky", "queue": "nlp", "retries": 2, "resources": {"gpus": 1}}
    job = client.submit(flaky | {"command": 'echo "attempt $CORRAL_ATTEMPT"; test $CORRAL_ATTEMPT -ge 2'})
    wait_for(client, job.id, "finished", timeout=30)
    assert [e.kind for e in client.events(job.id)] == [
        "submitted",
        "started",
        "retried",
        "started",
        "finished",
    ]
    assert client.logs(job.id) == "attempt 2\n"
    hopeless = client.submit(flaky | {"retries": 1, "command": "exit 7"})
    wait_for(client, hopeless.id, "failed", timeout=30)
    assert client.job(hopeless.id).reason == "pod 0 exited with code 7"


def test_20_concurrent_clients_over_http_store_500_jobs_exactly_once(
    tmp_path: Path, database_url: str
) -> None:
    """A real server on SQLite and on PostgreSQL; 20 clients send 25 jobs each, every one twice with the
    same idempotency key (a retry after a lost answer): 500 jobs stored, none twice, none lost."""
    port = free_port()
    env = {} if database_url.startswith("sqlite") else {"CORRAL_DATABASE_URL": database_url}
    arguments = ["server", "--cluster", str(CLUSTER_FILE), "--data-dir", str(tmp_path), "--port", str(port)]
    process = start([*arguments, "--no-local"], tmp_path / "server.log", port, env)
    token = read_token(tmp_path)
    failures: list[BaseException] = []

    def submit(number: int) -> None:
        try:
            with Client(f"http://127.0.0.1:{port}", token=token) as client:
                for index in range(25):
                    key = f"{number}-{index}"
                    first = client.submit(JOB | {"name": f"c{number}"}, idempotency_key=key)
                    assert client.submit(JOB | {"name": f"c{number}"}, idempotency_key=key).id == first.id
        except BaseException as error:  # noqa: BLE001 - reported by the test thread
            failures.append(error)

    try:
        threads = [threading.Thread(target=submit, args=(n,)) for n in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not failures
        with Client(f"http://127.0.0.1:{port}", token=token) as client:
            jobs = client.jobs(limit=10_000)
        assert len(jobs) == 500 and len({job.id for job in jobs}) == 500
        assert sorted(job.name for job in jobs) == sorted(f"c{n}" for n in range(20) for _ in range(25))
    finally:
        stop(process)


def test_with_two_api_workers_one_loop_runs_what_either_worker_accepted(tmp_path: Path) -> None:
    """`corral server --workers 2`: requests are spread over two processes; the loop in the main process
    notices their submissions through the store, the jobs run, and /metrics (from either worker) shows
    the loop's rounds."""
    port = free_port()
    process = start_server(tmp_path, port, extra=["--workers", "2"])
    try:
        with admin_client(tmp_path, port) as client:
            jobs = [client.submit(JOB | {"name": f"w{i}", "command": f"echo {i}"}) for i in range(6)]
            for job in jobs:
                wait_for(client, job.id, "finished", timeout=30)
            assert [client.logs(job.id) for job in jobs] == [f"{i}\n" for i in range(6)]
            with pytest.raises(APIError) as refused:  # services need the one-process server's event loop
                client.apply_service({"type": "service", "name": "web", "command": "true"})
            assert refused.value.status == 409 and "without --workers" in refused.value.detail
            metrics = client.metrics()
        rounds = [
            line for line in metrics.splitlines() if line.startswith("corral_reconcile_round_seconds_count")
        ]
        assert rounds and float(rounds[0].split()[-1]) >= 1
        assert (
            "corral_queue_depth" in metrics
            or "corral_running_jobs" in metrics
            or "corral_pool_gpus" in metrics
        )
    finally:
        stop(process, kill=False)
