"""kill -9 at random moments of a server with two agents while gangs run: each agent and the server are
killed and started again (an agent on the same data dir, the server on the same store), as a crash and
a supervisor's restart would. Afterwards every job finished, no pod of an attempt ran twice, no job's
work completed in two attempts, and every GPU is free again with no pod process left behind."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
from servers import admin_client, free_port, start_server, stop

from corral.client import Client

SEED = int(os.environ.get("CORRAL_CHAOS_SEED", "7"))
JOBS = 4
HEARTBEAT_TIMEOUT = "15"
"""Seconds of an agent's silence before its node is down, and of the server's before an agent stops its
pods: longer than a restart takes here (a server's takes seconds on a loaded machine), so a restarted
agent adopts its pods and a restarted server gives its agents the time to check in (nothing is
requeued merely because its agent or the server restarted)."""


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


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def test_kill_9_of_agents_and_server_while_gangs_run_loses_nothing_and_runs_nothing_twice(
    tmp_path: Path,
) -> None:
    for folder in [tmp_path, *tmp_path.parents[:2]]:  # pods pass through, as a data dir must let them
        folder.chmod(folder.stat().st_mode | 0o711)
    marks = tmp_path / "marks"
    marks.mkdir(mode=0o777)
    marks.chmod(0o777)  # pods run as the pod user: each appends what it did
    chance = random.Random(SEED)
    port = free_port()
    arguments = ["--no-local", "--heartbeat-timeout", HEARTBEAT_TIMEOUT]
    server = start_server(tmp_path, port, cluster=None, extra=arguments)
    agents: dict[str, subprocess.Popen[bytes]] = {}
    tokens: dict[str, str] = {}
    try:
        with admin_client(tmp_path, port) as client:
            for node in ("m-0", "m-1"):
                tokens[node] = client.create_user(f"agent-{node}", "default", "agent").token
                agents[node] = _agent(node, port, tmp_path, tokens[node])
            while len(client.nodes()) < 2:
                time.sleep(0.1)
            line = '"$CORRAL_JOB_ID $CORRAL_ATTEMPT $CORRAL_POD_INDEX' + ' {}" >> ' + str(marks / "log")
            command = f"echo {line.format('start')}; sleep 1; echo {line.format('end')}"
            jobs = [
                client.submit(
                    {"name": f"gang-{i}", "pods": 2, "command": command, "resources": {"gpus": 1, "cpu": 1}}
                ).id
                for i in range(JOBS)
            ]
        # Random moments: each agent and the server killed -9 once, in a random order, while gangs run.
        victims = ["m-0", "m-1", "server"]
        chance.shuffle(victims)
        for victim in victims:
            time.sleep(chance.uniform(0.3, 1.5))
            if victim == "server":
                _kill(server)
                server = start_server(tmp_path, port, cluster=None, extra=arguments)
            else:
                _kill(agents[victim])
                agents[victim] = _agent(victim, port, tmp_path, tokens[victim])
        with admin_client(tmp_path, port) as client:
            deadline = time.monotonic() + 60
            while not all(client.job(j).status in ("finished", "failed", "cancelled") for j in jobs):
                assert time.monotonic() < deadline, [(j, client.job(j).status) for j in jobs]
                time.sleep(0.2)
            ended = {j: client.job(j) for j in jobs}
            assert {j: job.status for j, job in ended.items()} == dict.fromkeys(jobs, "finished"), (
                SEED,
                {j: (job.status, job.reason) for j, job in ended.items()},
            )
            lines = (marks / "log").read_text().split()
            records = [tuple(lines[i : i + 4]) for i in range(0, len(lines), 4)]
            started = Counter((job, attempt, pod) for job, attempt, pod, what in records if what == "start")
            assert max(started.values()) == 1, (SEED, started)  # no pod of an attempt started twice
            completed = {(job, attempt) for job, attempt, _, what in records if what == "end"}
            assert sorted(job for job, _ in completed) == sorted(jobs), (SEED, records)  # once each
            _until_free(client)
        assert not _pod_processes(tmp_path)
    finally:
        for process in [*agents.values(), server]:
            if process.poll() is None:
                stop(process)


def _pod_processes(folder: Path) -> list[psutil.Process]:
    """Pod wrappers still running under ``folder`` (their arguments name the pod's exit file there)."""
    runs = [str(folder / node / "runs") for node in ("m-0", "m-1")]
    return [
        process
        for process in psutil.process_iter(["cmdline"])
        if any(part.startswith(tuple(runs)) for part in process.info["cmdline"] or ())
    ]


def _until_free(client: Client) -> None:
    """Every GPU free again (a finished gang's GPUs go back as its exits are recorded)."""
    deadline = time.monotonic() + 10
    while any(node.gpus_allocated for node in client.nodes()):
        assert time.monotonic() < deadline, client.nodes()
        time.sleep(0.2)
