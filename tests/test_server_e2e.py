"""A real ``corral server`` on loopback: the SDK and CLI submit, the reconcile loop starts the job, and a
kill -9 of the server loses no submitted job."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from corral.cli.main import app
from corral.client import APIError, Client

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "examples" / "demo" / "cluster.yaml"
JOB = {"name": "train", "queue": "nlp", "command": "sleep 5", "resources": {"gpus": 1, "cpu": 1}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "corral", "server", "--cluster", str(CLUSTER)]
    command += ["--data-dir", str(data_dir), "--port", str(port), "--interval", "0.2"]
    log = data_dir / "server.log"
    with open(log, "ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    with Client(f"http://127.0.0.1:{port}", timeout=5) as client:
        for _ in range(300):
            if client.health():
                return process
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()}")
            time.sleep(0.1)
    _stop(process)
    raise RuntimeError("server did not answer /health in 30 s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait(timeout=10)


def _wait(client: Client, job_id: str, status: str) -> None:
    for _ in range(200):
        if client.job(job_id).status == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"{job_id} is {client.job(job_id).status}, never {status}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Client, Path, int]]:
    port = _free_port()
    process = _start(tmp_path, port)
    try:
        with Client(f"http://127.0.0.1:{port}") as client:
            yield client, tmp_path, port
    finally:
        _stop(process)


def test_submit_runs_through_the_reconcile_loop_and_the_cli_sees_it(server, monkeypatch) -> None:
    client, _, port = server
    job = client.submit(JOB)
    _wait(client, job.id, "running")
    monkeypatch.setenv("CORRAL_URL", f"http://127.0.0.1:{port}")
    listed = CliRunner().invoke(app, ["ls", "--json"])
    assert listed.exit_code == 0 and job.id in listed.output
    cancelled = CliRunner().invoke(app, ["cancel", job.id])
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.output
    again = CliRunner().invoke(app, ["cancel", job.id])
    assert again.exit_code == 2 and "already ended" in again.output
    with pytest.raises(APIError, match="unknown field"):
        client.submit(JOB | {"gpu": 1})


def test_kill_9_of_the_server_loses_no_submitted_job(tmp_path: Path) -> None:
    port = _free_port()
    process = _start(tmp_path, port)
    with Client(f"http://127.0.0.1:{port}") as client:
        submitted = [client.submit(JOB | {"name": f"j{i}"}, idempotency_key=f"k{i}").id for i in range(20)]
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    process = _start(tmp_path, port)
    try:
        with Client(f"http://127.0.0.1:{port}") as client:
            assert {job.id for job in client.jobs(limit=100)} == set(submitted)
            assert client.submit(JOB | {"name": "j0"}, idempotency_key="k0").id == submitted[0]  # a retry
    finally:
        _stop(process)


def test_run_logs_and_metrics(server, monkeypatch) -> None:
    """`corral run --json -- CMD` submits a command; `corral logs` prints its output once it finished;
    /metrics shows the reconcile rounds and the queue depth."""
    client, _, port = server
    monkeypatch.setenv("CORRAL_URL", f"http://127.0.0.1:{port}")
    ran = CliRunner().invoke(
        app,
        ["run", "--json", "--gpus", "1", "--queue", "nlp", "--", "echo hello from GPU $CUDA_VISIBLE_DEVICES"],
    )
    assert ran.exit_code == 0, ran.output
    job_id = json.loads(ran.output)["id"]
    assert json.loads(ran.output)["status"] == "pending"
    _wait(client, job_id, "finished")
    logs = CliRunner().invoke(app, ["logs", job_id])
    assert logs.exit_code == 0 and "hello from GPU " in logs.output
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert "corral_reconcile_round_seconds_count" in metrics and "corral_admissions_total" in metrics


def test_nodes_lists_the_inventory_with_heartbeats(server, monkeypatch) -> None:
    client, _, port = server
    assert client.heartbeat("dgx-0").last_heartbeat is not None
    monkeypatch.setenv("CORRAL_URL", f"http://127.0.0.1:{port}")
    listed = CliRunner().invoke(app, ["nodes", "--json"])
    assert listed.exit_code == 0, listed.output
    nodes = {n["name"]: n for n in json.loads(listed.output)}
    assert {"dgx-0", "dgx-1", "ws-0"} <= set(nodes) and nodes["dgx-0"]["gpus"] == 8
    assert nodes["dgx-0"]["last_heartbeat"] is not None and nodes["dgx-1"]["last_heartbeat"] is None
