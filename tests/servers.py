"""Starting and stopping real `corral server` processes on loopback, for the end-to-end tests."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import psutil

from corral.client import Client
from corral.paths import read_token
from corral.server.process import free_port, start, stop

__all__ = ["admin_client", "free_port", "start_server", "stop", "stop_pods", "wait_for"]

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "examples" / "demo" / "cluster.yaml"


def start_server(
    data_dir: Path,
    port: int,
    cluster: Path | None = CLUSTER,
    extra: list[str] | None = None,
    interval: float = 0.2,
) -> subprocess.Popen[bytes]:
    """``corral server`` on ``cluster`` (None: only the nodes agents register), a round every ``interval``
    seconds besides the rounds that submissions, cancels and exits start."""
    arguments = ["server", "--data-dir", str(data_dir), "--port", str(port)]
    arguments += ["--cluster", str(cluster)] if cluster is not None else []
    return start([*arguments, "--interval", f"{interval:g}", *(extra or [])], data_dir / "server.log", port)


def admin_client(data_dir: Path, port: int) -> Client:
    """A client with the first admin's token, which the server wrote to its data directory."""
    return Client(f"http://127.0.0.1:{port}", token=read_token(data_dir))


def wait_for(client: Client, job_id: str, status: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.job(job_id).status == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"{job_id} is {client.job(job_id).status}, never {status}")


def stop_pods(folder: Path) -> None:
    """Kill what a killed server left running under ``folder`` (pods outlive their server, which adopts
    them when it starts again)."""
    me = psutil.Process()
    spared = {me.pid, *(parent.pid for parent in me.parents())}
    for process in psutil.process_iter(["cmdline"]):
        if process.pid not in spared and any(str(folder) in part for part in process.info["cmdline"] or ()):
            members = [process]
            with contextlib.suppress(psutil.Error):
                members += process.children(recursive=True)
            for member in members:
                with contextlib.suppress(psutil.Error):  # one already gone must not spare the rest
                    member.kill()
