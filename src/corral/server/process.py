"""Running `corral server` (or `corral up`) as a child process on loopback: for the demo, the benchmarks
and the end-to-end tests, which all need a real server and must not leave one behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from corral.client import Client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(
    arguments: Sequence[str], log: Path, port: int, env: dict[str, str] | None = None, timeout: float = 30.0
) -> subprocess.Popen[bytes]:
    """Run ``python -m corral ARGUMENTS`` (which must listen on ``port``) and wait until /health answers;
    the output goes to ``log``."""
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "corral", *arguments],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=os.environ | (env or {}),
        )
    deadline = time.monotonic() + timeout
    with Client(f"http://127.0.0.1:{port}", timeout=5) as client:
        while not client.health():
            if process.poll() is not None:
                raise RuntimeError(f"corral exited before answering; see {log}:\n{log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                stop(process)
                raise RuntimeError(f"corral did not answer /health within {timeout:g} s; see {log}")
            time.sleep(0.1)
    return process


def stop(process: subprocess.Popen[bytes], *, kill: bool = True) -> None:
    """Kill (or terminate, for a clean shutdown) and reap the process."""
    process.kill() if kill else process.terminate()
    process.wait(timeout=10)
