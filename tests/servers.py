"""Starting and stopping real `corral server` processes on loopback, for the end-to-end tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from corral.client import Client

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "examples" / "demo" / "cluster.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    data_dir: Path, port: int, cluster: Path = CLUSTER, extra: list[str] | None = None
) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "corral", "server", "--cluster", str(cluster)]
    command += ["--data-dir", str(data_dir), "--port", str(port), "--interval", "0.2", *(extra or [])]
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
    stop(process)
    raise RuntimeError("server did not answer /health in 30 s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait(timeout=10)


def wait_for(client: Client, job_id: str, status: str) -> None:
    for _ in range(200):
        if client.job(job_id).status == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"{job_id} is {client.job(job_id).status}, never {status}")
