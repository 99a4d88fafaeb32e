"""Node loss to requeue: how long after a machine dies its job runs again elsewhere, with default settings.

    .venv/bin/python benchmarks/node_loss.py [--trials 5]

`corral server --no-local` (heartbeat timeout at its default, 5 s; reconcile interval at its default,
2 s) and two `corral agent`s (heartbeat every 1 s, the default), each registering a declared 2-GPU
machine. Each trial submits a 2-GPU job that runs until stopped, waits until it runs, then kills -9 the
agent of its machine together with the job's process (the machine is gone), and measures the time from
the kill until (a) the store says the job runs again (attempt 2, on the other machine) and (b) the other
agent has started its process. The killed agent is restarted before the next trial. Writes the table
between the `node_loss` markers of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import publish

from corral.client import Client
from corral.paths import read_token
from corral.server.process import free_port, start, stop

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
NODES = ("m-0", "m-1")


def agent(node: str, url: str, folder: Path, token: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "corral", "agent", "--node", node, "--server", url]
    command += ["--data-dir", str(folder / node), "--gpus", "2", "--gpu-model", "T4"]
    with open(folder / f"{node}.log", "ab") as log:
        env = os.environ | {"CORRAL_TOKEN": token}
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def kill_machine(process: subprocess.Popen[bytes], folder: Path) -> None:
    """The agent and every pod it started die at once, as when the machine loses power."""
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    for pid_file in (folder / "runs").glob("*/*/*/pid"):
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def trial(
    client: Client,
    folder: Path,
    agents: dict[str, subprocess.Popen[bytes]],
    url: str,
    tokens: dict[str, str],
) -> tuple[float, float]:
    job = client.submit({"name": "long", "command": "sleep 600", "resources": {"gpus": 2}})
    while client.job(job.id).status != "running":
        time.sleep(0.05)
    node = None
    while node is None:
        time.sleep(0.05)
        node = next((n for n in NODES if _pid_file(folder, n, job.id, 1).exists()), None)
    other = next(n for n in NODES if n != node)
    killed = time.monotonic()
    kill_machine(agents[node], folder / node)
    requeued = None
    while True:
        current = client.job(job.id)
        if requeued is None and current.status == "running" and current.attempt == 2:
            requeued = time.monotonic() - killed
        if _pid_file(folder, other, job.id, 2).exists():
            running = time.monotonic() - killed
            break
        time.sleep(0.05)
    client.cancel(job.id)
    agents[node] = agent(node, url, folder, tokens[node])
    while not all(n.last_heartbeat and time.time() - n.last_heartbeat < 2 for n in client.nodes()):
        time.sleep(0.2)
    return requeued or running, running


def _pid_file(folder: Path, node: str, job_id: str, attempt: int) -> Path:
    return folder / node / "runs" / job_id / f"attempt-{attempt}" / "pod-0" / "pid"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start(
            ["server", "--no-local", "--data-dir", str(folder), "--port", str(port)],
            folder / "server.log",
            port,
        )
        agents: dict[str, subprocess.Popen[bytes]] = {}
        try:
            with Client(url, token=read_token(folder)) as client:
                # One agent user per node: an agent's tokens speak for its own node only.
                tokens = {
                    node: client.create_user(f"agent-{node}", "default", "agent", node=node).token
                    for node in NODES
                }
                agents = {node: agent(node, url, folder, tokens[node]) for node in NODES}
                while len(client.nodes()) < len(NODES):
                    time.sleep(0.2)
                results = [trial(client, folder, agents, url, tokens) for _ in range(args.trials)]
        finally:
            for process in [*agents.values(), server]:
                stop(process)
    requeued = [r for r, _ in results]
    running = [r for _, r in results]
    lines = [
        f"Command: `.venv/bin/python benchmarks/node_loss.py --trials {args.trials}` "
        f"({time.strftime('%Y-%m-%d')}, {platform.machine()}, Python {platform.python_version()}); "
        "defaults: heartbeat every 1 s, timeout 5 s, reconcile interval 2 s.",
        "",
        "| from kill -9 of the machine's agent until | median | min | max |",
        "|---|---|---|---|",
        f"| the store has the job running elsewhere (attempt 2) | {statistics.median(requeued):.1f} s "
        f"| {min(requeued):.1f} s | {max(requeued):.1f} s |",
        f"| the other agent has started its process | {statistics.median(running):.1f} s "
        f"| {min(running):.1f} s | {max(running):.1f} s |",
    ]
    publish("node_loss", lines)


if __name__ == "__main__":
    main()
