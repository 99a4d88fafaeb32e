"""The MLflow writer process (``corral.mlops.writer``) under a real `corral up`: killed in the middle of a
burst, jobs still start and end, runs are made again by a new writer, no job gets two runs and none is
left RUNNING; a job started after the burst gets its run in its tenant's experiment with corral's tags;
and the writer never outlives a server killed with kill -9.

One server for the module (opening MLflow takes seconds); the kill -9 of the server is the last test.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from corral.client import Client
from corral.paths import read_token
from corral.server.process import free_port, start, stop
from tests.servers import stop_pods

pytest.importorskip("mlflow")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # MLflow's own

TRUE = {"command": "true", "resources": {"gpus": 1, "cpu": 0.1, "memory": 0.1}}


@dataclass
class Up:
    server: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    admin: Client
    lab: Client
    lab_token: str


@pytest.fixture(scope="module")
def up() -> Iterator[Up]:
    root = Path(tempfile.mkdtemp(prefix="corral-writer-"))  # pods pass through it: not pytest's folder
    root.chmod(0o711)
    data_dir = root / "data"
    port = free_port()
    previous = os.environ.get("MLFLOW_DISABLE_TELEMETRY")
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    arguments = ["up", "--gpus", "4", "--data-dir", str(data_dir), "--port", str(port)]
    server = start(arguments, root / "server.log", port, timeout=120)
    url = f"http://127.0.0.1:{port}"
    token = read_token(data_dir) or ""
    deadline = time.monotonic() + 180
    probe = f"{url}/mlflow/api/2.0/mlflow/experiments/search?max_results=1"
    while httpx.get(probe, headers={"Authorization": f"Bearer {token}"}).status_code == 503:
        assert time.monotonic() < deadline, "MLflow never opened"
        time.sleep(0.2)
    admin = Client(url, token=token)
    admin.create_tenant("lab")
    lab_token = admin.create_user("lab-member", "lab", "member").token
    lab = Client(url, token=lab_token)
    try:
        yield Up(server, url, data_dir, admin, lab, lab_token)
    finally:
        admin.close()
        lab.close()
        stop(server)
        stop_pods(root)
        if previous is None:
            os.environ.pop("MLFLOW_DISABLE_TELEMETRY", None)
        else:
            os.environ["MLFLOW_DISABLE_TELEMETRY"] = previous
        shutil.rmtree(root, ignore_errors=True)


def writer_of(server: psutil.Process, timeout: float = 60.0) -> psutil.Process:
    """The server's (running) MLflow writer process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in server.children():
            try:
                if "corral.mlops.writer" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.1)
    raise AssertionError("the server has no MLflow writer")


def wait_ended(client: Client, ids: list[str], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while any(client.job(job_id).status not in ("finished", "failed", "cancelled") for job_id in ids):
        assert time.monotonic() < deadline, "jobs never ended"
        time.sleep(0.2)


def runs_by_job(up: Up) -> dict[str, list[Any]]:
    """Every live run of tenant lab's ``default`` experiment, by its ``corral.job_id`` tag (the admin
    sees the stored name)."""
    from mlflow import MlflowClient

    os.environ["MLFLOW_TRACKING_TOKEN"] = read_token(up.data_dir) or ""
    client = MlflowClient(tracking_uri=f"{up.url}/mlflow")
    experiment = client.get_experiment_by_name("lab/default")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    found: dict[str, list[Any]] = {}
    for run in runs:
        found.setdefault(run.data.tags["corral.job_id"], []).append(run)
    return found


def wait_for_ended_runs(up: Up, ids: list[str], timeout: float = 60.0) -> dict[str, list[Any]]:
    """The runs of ``ids`` once none of them is RUNNING (the sweep ends them shortly after their job)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = runs_by_job(up)
        if all(run.info.status != "RUNNING" for job in ids for run in runs.get(job, [])):
            return runs
        assert time.monotonic() < deadline, "runs left RUNNING after their jobs ended"
        time.sleep(0.5)


def test_the_writer_killed_mid_burst_jobs_still_run_and_no_job_gets_two_runs(up: Up) -> None:
    server = psutil.Process(up.server.pid)
    first = writer_of(server)
    ids = [up.lab.submit(TRUE | {"name": f"burst-{i}"}).id for i in range(40)]
    while sum(1 for job_id in ids[:10] if up.lab.job(job_id).status != "pending") < 4:
        time.sleep(0.02)  # a few have started: the burst is under way
    first.send_signal(signal.SIGKILL)
    wait_ended(up.lab, ids)
    assert all(up.lab.job(job_id).status == "finished" for job_id in ids)
    second = writer_of(server)
    assert second.pid != first.pid  # made again by a new writer

    late = up.lab.submit(TRUE | {"name": "after-the-burst"}).id
    wait_ended(up.lab, [late])
    runs = wait_for_ended_runs(up, [*ids, late])
    assert all(len(runs.get(job_id, [])) <= 1 for job_id in ids)  # never two for one attempt
    assert sum(1 for job_id in ids if runs.get(job_id)) >= len(ids) // 2  # tracked again after the kill
    (run,) = runs[late]
    tags = run.data.tags
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"after-the-burst-{late}"
    assert tags["corral.tenant"] == "lab" and tags["corral.queue"] == "default"
    assert tags["corral.attempt"] == "1" and tags["corral.gpus"] == "1" and tags["corral.pods"] == "1"
    assert tags["corral.node"]  # tagged at its start

    from mlflow import MlflowClient

    os.environ["MLFLOW_TRACKING_TOKEN"] = up.lab_token
    mine = MlflowClient(tracking_uri=f"{up.url}/mlflow").get_run(run.info.run_id)
    assert mine.info.experiment_id == run.info.experiment_id  # its tenant's own experiment, "default"


def test_the_writer_does_not_outlive_a_killed_server(up: Up) -> None:
    server = psutil.Process(up.server.pid)
    writer = writer_of(server)
    server.send_signal(signal.SIGKILL)
    up.server.wait(30)
    gone, alive = psutil.wait_procs([writer], timeout=30)
    assert writer in gone and not alive
