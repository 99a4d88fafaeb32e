"""A server without a cluster file and two agents on loopback, each registering one 2-GPU machine: a 2-pod gang spans
both and each pod sees its own GPUs; when an agent is killed -9, its job is requeued and completes on the
other machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from builders import make_desired_pod
from servers import admin_client, free_port, start_server, stop, wait_for

from corral.backends.agent import Agent
from corral.backends.pods import DesiredPod
from corral.client import APIError, Client
from corral.paths import read_token
from corral.spec.job import JobSpec


def _agent(node: str, port: int, folder: Path, token: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "corral",
        "agent",
        "--node",
        node,
        "--server",
        f"http://127.0.0.1:{port}",
    ]
    command += ["--data-dir", str(folder / node), "--interval", "0.2", "--gpus", "2", "--gpu-model", "T4"]
    with open(folder / f"{node}.log", "ab") as log:
        env = os.environ | {"CORRAL_TOKEN": token}
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Client, Path, dict[str, subprocess.Popen[bytes]]]]:
    for folder in [tmp_path, *tmp_path.parents[:2]]:  # pods pass through, as a data dir must let them
        folder.chmod(folder.stat().st_mode | 0o711)
    port = free_port()
    server = start_server(tmp_path, port, cluster=None, extra=["--no-local", "--heartbeat-timeout", "2"])
    agents: dict[str, subprocess.Popen[bytes]] = {}
    try:
        with admin_client(tmp_path, port) as client:
            for node in ("m-0", "m-1"):
                token = client.create_user(f"agent-{node}", "default", "agent").token
                agents[node] = _agent(node, port, tmp_path, token)
            while len(client.nodes()) < 2:  # each agent registers its machine: 2 declared T4s
                time.sleep(0.1)
            assert {(n.pool, n.gpus, n.registered) for n in client.nodes()} == {("t4", 2, True)}
            metrics = client.metrics()
            assert all(f'corral_node_heartbeat_age_seconds{{node="{n}"}}' in metrics for n in agents)
            yield client, tmp_path, agents
    finally:
        for process in [*agents.values(), server]:
            stop(process)


def _logs(folder: Path, job_id: str) -> list[str]:
    return sorted(p.read_text().strip() for p in folder.glob(f"m-*/runs/{job_id}/attempt-*/pod-*/output.log"))


def test_a_gang_spans_two_agents_and_each_pod_sees_its_own_gpus(lab) -> None:
    client, folder, _ = lab
    job = client.submit(
        {
            "name": "gang",
            "pods": 2,
            "command": "echo pod $CORRAL_POD_INDEX gpus $CUDA_VISIBLE_DEVICES",
            "resources": {"gpus": 2, "cpu": 1},
        }
    )
    wait_for(client, job.id, "finished")
    assert _logs(folder, job.id) == ["pod 0 gpus 0,1", "pod 1 gpus 0,1"]
    assert [client.logs(job.id, pod) for pod in (0, 1)] == ["pod 0 gpus 0,1\n", "pod 1 gpus 0,1\n"]
    assert {
        p.parent.parent.parent.parent.parent.name for p in folder.glob(f"m-*/runs/{job.id}/*/*/output.log")
    } == {
        "m-0",
        "m-1",
    }


def test_an_agent_killed_9_has_its_job_requeued_and_completed_elsewhere(lab) -> None:
    """The agent of the job's machine and the job's process die together (the machine is gone); after
    the heartbeat timeout (2 s) the job runs again, as attempt 2, on the other machine."""
    client, folder, agents = lab
    job = client.submit(
        {
            "name": "long",
            "command": "sleep 1.5; echo done on attempt $CORRAL_ATTEMPT",
            "resources": {"gpus": 2},
        }
    )
    wait_for(client, job.id, "running")
    node = _node_running(folder, job.id)
    agents[node].send_signal(signal.SIGKILL)
    agents[node].wait(timeout=10)
    for pid_file in (folder / node / "runs").glob("*/*/*/pid"):
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(client, job.id, "finished")
    other = "m-1" if node == "m-0" else "m-0"
    output = folder / other / "runs" / job.id / "attempt-2" / "pod-0" / "output.log"
    assert output.read_text().strip() == "done on attempt 2"
    assert client.logs(job.id) == "done on attempt 2\n"  # shipped by the agent that ran it


def _node_running(folder: Path, job_id: str) -> str:
    for _ in range(100):
        found = [p.name for p in folder.glob("m-*") if (p / "runs" / job_id).exists()]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no agent started {job_id}")


def test_an_agent_cut_off_from_the_server_stops_its_pods(tmp_path: Path) -> None:
    """Fencing: once the server stops answering for its heartbeat timeout (1 s here, which each heartbeat's
    answer tells the agent), the server would run the job elsewhere as attempt 2, so the agent stops the
    pod of attempt 1 instead of letting both run; the agent itself keeps waiting for the server."""
    port = free_port()
    server = start_server(tmp_path, port, cluster=None, extra=["--no-local", "--heartbeat-timeout", "1"])
    agent = None
    try:
        with admin_client(tmp_path, port) as client:
            token = client.create_user("agent-m-0", "default", "agent", node="m-0").token
            agent = _agent("m-0", port, tmp_path, token)
            while not client.nodes():
                time.sleep(0.1)
            assert client.nodes()[0].heartbeat_timeout == 1.0
            job = client.submit({"name": "long", "command": "sleep 600", "resources": {"gpus": 1}})
            wait_for(client, job.id, "running")
        pid_file = tmp_path / "m-0" / "runs" / job.id / "attempt-1" / "pod-0" / "pid"
        _until(pid_file.exists)
        pid = int(pid_file.read_text())
        assert _alive(pid)
        stop(server)
        _until(lambda: not _alive(pid))
        assert agent.poll() is None
    finally:
        for process in [server, *([agent] if agent is not None else [])]:
            stop(process)


def test_a_job_submitted_before_any_agent_registered_waits_and_runs_when_one_does(tmp_path: Path) -> None:
    """`corral server --no-local` with no agent yet: `corral run --gpus 1` is accepted and pending with the
    reason (Slurm and Kueue keep such work too), and runs once an agent registers a machine that holds it."""
    port = free_port()
    server = start_server(tmp_path, port, cluster=None, extra=["--no-local"])
    agent = None
    try:
        env = os.environ | {"CORRAL_TOKEN": read_token(tmp_path) or ""}
        corral = [sys.executable, "-m", "corral", "--url", f"http://127.0.0.1:{port}"]
        ran = subprocess.run(
            [*corral, "run", "--json", "--gpus", "1", "--", "echo ran"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert ran.returncode == 0, ran.stderr
        job_id = json.loads(ran.stdout)["id"]
        with admin_client(tmp_path, port) as client:
            _until(lambda: "no node registered yet" in (client.job(job_id).reason or ""))
            why = subprocess.run([*corral, "why", job_id], env=env, capture_output=True, text=True)
            assert "pending: no node registered yet can hold a pod of 1 GPUs" in why.stdout
            token = client.create_user("agent-m-0", "default", "agent", node="m-0").token
            agent = _agent("m-0", port, tmp_path, token)
            wait_for(client, job_id, "finished", timeout=30)
            assert client.logs(job_id) == "ran\n"
    finally:
        for process in [server, *([agent] if agent is not None else [])]:
            stop(process)


def test_an_agent_runs_a_job_in_a_copy_of_the_code_its_spec_file_shipped(lab, tmp_path: Path) -> None:
    """`corral submit job.yaml` with `workdir: .` uploads the spec's folder; the agent that runs the pod
    downloads it with its node's token and starts the pod, after `setup`, in a fresh copy."""
    client, folder, _ = lab
    project = tmp_path / "project"
    project.mkdir()
    (project / "job.yaml").write_text(
        "name: shipped\nworkdir: .\nsetup: echo setup > done.txt\ncommand: sh run.sh\n"
        "resources: {gpus: 1, cpu: 1}\n"
    )
    (project / "run.sh").write_text("cat done.txt config.txt; echo changed > config.txt\n")
    (project / "config.txt").write_text("lr=0.1\n")
    env = os.environ | {"CORRAL_TOKEN": read_token(folder) or ""}
    corral = [sys.executable, "-m", "corral", "--url", client.url]
    for _ in range(2):  # the second pod starts in a fresh copy: it sees nothing the first changed
        submitted = subprocess.run(
            [*corral, "submit", "--json", str(project / "job.yaml")], env=env, capture_output=True, text=True
        )
        assert submitted.returncode == 0, submitted.stderr
        job = json.loads(submitted.stdout)
        assert job["spec"]["code"].startswith("sha256:") and job["spec"]["workdir"] is None
        wait_for(client, job["id"], "finished", timeout=30)
        assert client.logs(job["id"]) == "setup\nlr=0.1\n"
    assert (project / "config.txt").read_text() == "lr=0.1\n"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{condition} never held")
        time.sleep(0.05)


class _ServerPastAttempt1:
    """A server that still lists attempt 1's pod (as the agent last heard) but refuses every report about
    it with 409, as a server does once the job runs again elsewhere."""

    def __init__(self, pod: DesiredPod) -> None:
        self.pod = pod
        self.reports = 0

    def heartbeat(self, node: str, address: str | None = None) -> SimpleNamespace:
        return SimpleNamespace(heartbeat_timeout=5.0)

    def node_pods(self, node: str) -> list[DesiredPod]:
        return [self.pod]

    def ship_logs(self, *args: object) -> int:
        self.reports += 1
        raise APIError(409, "job j-1 runs attempt 2 now; attempt 1 is over: stop its pods")

    report_exit = ship_logs


def test_an_agent_told_its_attempt_is_over_stops_reporting_it(tmp_path: Path) -> None:
    spec = JobSpec.model_validate({"name": "old", "command": "echo old", "resources": {"cpu": 1}})
    pod = DesiredPod(
        job_id="j-1", attempt=1, pod=0, node="m-0", gpus=(), gpu_milli=0, gpu_memory_gib=0.0, cpu=1.0,
        memory_gib=1.0, spec=spec,
    )  # fmt: skip
    server = _ServerPastAttempt1(pod)
    agent = Agent(server, "m-0", tmp_path)  # type: ignore[arg-type]
    agent.step()
    agent.step()
    assert server.reports == 1
    _until(lambda: agent.runner.ensure(pod) is not None)  # reaps the pod's process


class _ServerRefusingOnePod:
    """A server that refuses every chunk of one pod's output (422), as it did a chunk with a NUL byte on
    PostgreSQL, and takes everything about the other pod."""

    def __init__(self, refused: DesiredPod, other: DesiredPod) -> None:
        self.refused, self.pods = refused, [refused, other]
        self.exits: list[str] = []

    def heartbeat(self, node: str, address: str | None = None) -> SimpleNamespace:
        return SimpleNamespace(heartbeat_timeout=5.0)

    def node_pods(self, node: str) -> list[DesiredPod]:
        return self.pods

    def ship_logs(self, job_id: str, attempt: int, pod: int, offset: int, text: str) -> int:
        if job_id == self.refused.job_id:
            raise APIError(422, "a value does not fit the store (too long or too large)")
        return offset + len(text.encode())

    def report_exit(self, job_id: str, attempt: int, pod: int, code: int) -> None:
        self.exits.append(job_id)


def test_a_refused_report_about_one_pod_does_not_stop_the_node_s_other_pods(tmp_path: Path) -> None:
    refused, other = (
        make_desired_pod(job, {"command": f"echo {job}", "resources": {"cpu": 1}}) for job in ("j-a", "j-b")
    )
    server = _ServerRefusingOnePod(refused, other)
    agent = Agent(server, "m-0", tmp_path)  # type: ignore[arg-type]
    _until(lambda: (agent.step(), server.exits)[1] == ["j-b"])
