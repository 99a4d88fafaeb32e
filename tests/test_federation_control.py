"""The control plane bursts as the simulator does (issue 6): a server whose local backend runs a private
1-GPU workstation, and a public cloud cluster whose one machine is a `corral agent`, on loopback.

While the workstation is busy, a job of a queue with ``burst_after_seconds`` waits, saying when it may
burst, and then runs on the cloud machine, no earlier than its submission plus the threshold; a sensitive
job keeps waiting for the workstation although a cloud GPU is free, and takes the workstation when it is
freed. The cost report charges the cloud cluster only. Times are checked on the store's recorded events,
never against the wall clock.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from servers import admin_client, free_port, start_server, stop, wait_for

from corral.api_models import Job
from corral.client import Client
from corral.store.database import database_url, open_store
from corral.store.jobs import JobStore

THRESHOLD = 3.0
"""The queue's burst_after_seconds: long enough that the first round after a submission comes before it,
even on a loaded machine."""
PRIVATE_NODE = "ws-0"
"""The cluster file's one workstation (pool ws, count 1): run by the server's local backend."""
CLOUD_NODE = "cloud-0"
"""The agent's machine. Its pool is declared with count 0, so the server's local backend has no node of it
to run, and the agent's registration joins the pool with the pool's price and privacy."""
WAIT = 30.0
"""Seconds any state change may take on a loaded machine; a failing test waits this long, a passing one
does not."""

CLUSTER_FILE = f"""
clusters:
  - name: lab
    private: true
    pools:
      - {{name: ws, flavor: t4, count: 1, node: {{cpu: 4, memory_gib: 16, gpus: 1, gpu_model: T4}}}}
  - name: cloud
    private: false
    pools:
      - name: cloud-t4
        flavor: t4-cloud
        gpu_hour_cost: 3.0
        count: 0
        node: {{cpu: 4, memory_gib: 16, gpus: 2, gpu_model: T4}}
queues:
  - {{name: research, quota: null, burst_after_seconds: {THRESHOLD}}}
"""


ROUND_INTERVAL = 60.0
"""Seconds between the rounds the clock alone starts, longer than any wait here: every round this test
needs is started by a submission, a registration, a cancel or, for the burst, by the round's ``wake_at``
(the threshold passing), which is what the control plane must honour to burst like the simulator."""


@dataclass(frozen=True)
class Federation:
    client: Client
    store: JobStore
    """The server's own store, read directly for placements (the API does not list them)."""
    data_dir: Path


def _cloud_agent(port: int, data_dir: Path, token: str) -> subprocess.Popen[bytes]:
    """`corral agent` registering a 2-GPU public machine into the cloud cluster's declared pool."""
    command = [sys.executable, "-m", "corral", "agent", "--node", CLOUD_NODE]
    command += ["--server", f"http://127.0.0.1:{port}", "--data-dir", str(data_dir / CLOUD_NODE)]
    command += ["--interval", "0.2", "--gpus", "2", "--gpu-model", "T4"]
    command += ["--cluster", "cloud", "--pool", "cloud-t4", "--no-private"]
    with open(data_dir / f"{CLOUD_NODE}.log", "ab") as log:
        env = os.environ | {"CORRAL_TOKEN": token}
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    """The server and the cloud agent, once the agent's machine is a node; afterwards both are stopped,
    and so are the pods they started (pods outlive their server by design, to be adopted on restart)."""
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(CLUSTER_FILE)
    port = free_port()
    processes = [start_server(tmp_path, port, cluster=cluster, interval=ROUND_INTERVAL)]
    store = JobStore(open_store(database_url(tmp_path), migrate=False))
    try:
        with admin_client(tmp_path, port) as client:
            token = client.create_user(f"agent-{CLOUD_NODE}", "default", "agent").token
            processes.append(_cloud_agent(port, tmp_path, token))
            _until(lambda: any(n.name == CLOUD_NODE for n in client.nodes()), "the cloud agent registers")
            yield Federation(client, store, tmp_path)
    finally:
        store.engine.dispose()
        for process in processes:
            stop(process)
        _stop_pods(tmp_path)


def _stop_pods(folder: Path) -> None:
    """Kill every pod started under ``folder`` (the server's and the agent's runs), by the process group
    each pod leads."""
    for pid_file in folder.glob("**/runs/*/attempt-*/pod-*/pid"):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {WAIT:g} s for {what}")
        time.sleep(0.05)


def _submit(client: Client, name: str, command: str, *, sensitive: bool = False) -> Job:
    """A one-GPU job in the queue that bursts after ``THRESHOLD``."""
    return client.submit(
        {
            "name": name,
            "queue": "research",
            "command": command,
            "sensitive": sensitive,
            "resources": {"gpus": 1, "cpu": 1, "memory": "1GiB"},
        }
    )


def _explained(client: Client, job_id: str) -> Job:
    """The job as it is once a round has looked at it: with the reason it waits, or started."""
    _until(lambda: _looked_at(client.job(job_id)), f"a round to look at {job_id}")
    return client.job(job_id)


def _looked_at(job: Job) -> bool:
    return job.reason is not None or job.status != "pending"


def _started_at(store: JobStore, job_id: str) -> float:
    [started] = [event.t for event in store.events(job_id) if event.kind == "started"]
    return started


def test_a_job_bursts_after_its_threshold_and_a_sensitive_job_stays_private(federation: Federation) -> None:
    client, store = federation.client, federation.store
    long = _submit(client, "long", "sleep 300")
    wait_for(client, long.id, "running", timeout=WAIT)
    assert store.placements(long.id) == [(0, PRIVATE_NODE, (0,))]

    # Submitted before the burst job, so the round that bursts comes after this job's threshold too.
    secret = _submit(client, "secret", "sleep 300", sensitive=True)
    burst = _submit(client, "burst", "sleep 300")
    waiting = _explained(client, burst.id)
    assert waiting.status == "pending", waiting
    assert "may burst to public clusters at t=" in (waiting.reason or ""), waiting.reason

    wait_for(client, burst.id, "running", timeout=WAIT)
    assert [node for _, node, _ in store.placements(burst.id)] == [CLOUD_NODE]
    burst_started = _started_at(store, burst.id)
    assert burst_started >= burst.submitted_at + THRESHOLD
    pod = federation.data_dir / CLOUD_NODE / "runs" / burst.id / "attempt-1" / "pod-0" / "pid"
    _until(pod.exists, "the cloud agent to start the burst job")

    assert burst_started >= secret.submitted_at + THRESHOLD
    kept = client.job(secret.id)
    assert kept.status == "pending", kept
    assert "job is sensitive, so it runs only on private clusters (not on cloud)" in (kept.reason or "")
    assert "started" not in [event.kind for event in store.events(secret.id)]

    spend = {line.key: line.usd for line in client.cost(by="cluster")}
    assert spend["cloud"] > 0 and spend["lab"] == 0, spend  # only the cloud pool has a price

    client.cancel(long.id)
    wait_for(client, secret.id, "running", timeout=WAIT)
    assert store.placements(secret.id) == [(0, PRIVATE_NODE, (0,))]
