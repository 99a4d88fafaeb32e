"""The control-plane part of `make demo`: what a newcomer does with `corral up`, scripted. Start `corral up
--gpus 4` on loopback (SQLite, pods' output and uploaded code in out/corral, fresh each time), then

1. submit the example jobs as written (a one-GPU job, a quarter-GPU share, a 2-pod gang) and wait;
2. submit preemption/train.yaml, whose `workdir: .` uploads train.py: a long low-priority run that
   checkpoints every step; then urgent.yaml, which this machine's 4 GPUs cannot hold beside it: the
   scheduler preempts the training job, runs the urgent one, and the training job resumes from its
   checkpoint as attempt 2;

and show `corral ls`, the training job's events and every pod's output.

    .venv/bin/python examples/jobs/demo.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from corral.api_models import Job
from corral.client import Client
from corral.paths import read_token
from corral.server.process import free_port, start, stop
from corral.spec.job import JobSpec, load_job_spec

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = REPO / "out" / "corral"
PREEMPTION = HERE / "preemption"


def main() -> None:
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start(["up", "--gpus", "4", "--data-dir", str(DATA), "--port", str(port)], DATA / "up.log", port)
    try:
        token = read_token(DATA) or ""
        with Client(url, token=token) as client:
            print(
                f"corral up at {url} (store, pod output and code in {DATA}; admin token in {DATA / 'token'})"
            )
            jobs = [client.submit(path) for path in sorted(HERE.glob("*.yaml"))]
            for job in jobs:
                print(f"submitted {job.id} ({job.name})")
            _wait(client, jobs)
            jobs += _preemption(client)
        env = os.environ | {"CORRAL_URL": url, "CORRAL_TOKEN": token}
        corral = [sys.executable, "-m", "corral"]
        subprocess.run([*corral, "ls"], env=env, check=True)
        subprocess.run([*corral, "status", jobs[-2].id], env=env, check=True)
        for log_file in sorted(DATA.glob("runs/*/attempt-*/pod-*/output.log")):
            for line in log_file.read_text().splitlines():
                print(f"{log_file.relative_to(DATA)}: {line}")
    finally:
        stop(server, kill=False)


def _preemption(client: Client) -> list[Job]:
    """A checkpointing run is preempted by an urgent job and resumes from its checkpoint.

    Pods run as an unprivileged user (docs/security.md): its checkpoints go to a fresh folder that user
    may write, so a run of the demo never resumes from the last one's."""
    checkpoints = Path(tempfile.mkdtemp(prefix="corral-demo-"))
    checkpoints.chmod(0o1777)
    spec = client.ship_workdir(load_job_spec(PREEMPTION / "train.yaml"), PREEMPTION)  # uploads train.py
    train = client.submit(in_folder(spec, checkpoints))
    print(
        f"submitted {train.id} (train, priority 0, code {spec.code}, checkpoints every step in {checkpoints})"
    )
    deadline = time.monotonic() + 120
    while not any(int(path.read_text() or 0) >= 3 for path in checkpoints.glob("*.step")):
        if client.job(train.id).status not in ("pending", "running") or time.monotonic() > deadline:
            raise SystemExit(f"the training job wrote no checkpoint; its output:\n{client.logs(train.id)}")
        time.sleep(0.2)
    urgent = client.submit(PREEMPTION / "urgent.yaml")
    print(f"submitted {urgent.id} (urgent, priority 10): this machine's 4 GPUs cannot hold both")
    _wait(client, [train, urgent])
    shutil.rmtree(checkpoints, ignore_errors=True)
    return [train, urgent]


def in_folder(spec: JobSpec, checkpoints: Path) -> JobSpec:
    assert spec.checkpoint is not None
    return spec.model_copy(
        update={"checkpoint": spec.checkpoint.model_copy(update={"dir": str(checkpoints)})}
    )


def _wait(client: Client, jobs: list[Job]) -> None:
    while any(client.job(job.id).status in ("pending", "running") for job in jobs):
        time.sleep(0.3)


if __name__ == "__main__":
    main()
