"""End-to-end throughput of the control plane: submit, schedule, run, notice the exit, free the GPUs.

    .venv/bin/python benchmarks/e2e.py [--jobs 200] [--mode up|agents] [--out benchmarks/results/e2e.json]

``--mode up`` starts `corral up --gpus 8` (API, reconcile loop and local backend in one process, SQLite)
on loopback in a temporary data dir; ``--mode agents`` starts `corral server --no-local` and two
`corral agent --gpus 4` processes that register their nodes. One SDK client (`corral.client.Client`)
submits ``--jobs`` jobs of `true` asking 0.1 CPU and 1 GPU as fast as it can, then waits until every job
has ended. With 8 GPUs and jobs that take no time, what is measured is how fast the control plane turns
a GPU over: notice a pod's exit, record it, start the next job.

Reported: jobs per second end to end (jobs / (last end - first submission), server clock), each job's
submit-to-start time (its ``submitted`` and first ``started`` events), and the CPU seconds the control
plane's processes (server, and agents) spent per 1,000 jobs while the jobs ran (psutil; the pods' own
processes are not counted), and how many times a job was requeued (a node taken for lost, a
preemption, a retry: none is expected).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from corral.api_models import Job
from corral.client import Client
from corral.paths import read_token
from corral.server.process import free_port, start, stop
from corral.store.jobs import ENDED

JOB = {"name": "e2e", "command": "true", "resources": {"gpus": 1, "cpu": 0.1, "memory": 0.1}}
AGENT_GPUS = 4
AGENTS = 2


def start_agents(url: str, token: str, folder: Path) -> list[subprocess.Popen[bytes]]:
    """Two agents on this machine, each registering a node of ``AGENT_GPUS`` declared GPUs."""
    agents = []
    for index in range(AGENTS):
        log = folder / f"agent-{index}.log"
        with open(log, "ab") as output:
            agents.append(
                subprocess.Popen(
                    [sys.executable, "-m", "corral", "agent", "--node", f"agent-{index}", "--server", url]
                    + ["--data-dir", str(folder / f"agent-{index}"), "--gpus", str(AGENT_GPUS)],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=os.environ | {"CORRAL_TOKEN": token},
                )
            )
    return agents


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User and system CPU of the processes themselves (not their children: those are the pods)."""
    return sum(p.cpu_times().user + p.cpu_times().system for p in processes)


def wait_for_nodes(client: Client, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(1 for node in client.nodes() if node.last_heartbeat is not None) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} agents did not register within {timeout:g} s")
        time.sleep(0.2)


def wait_until_ended(client: Client, ids: list[str]) -> list[Job]:
    """The jobs once none is pending or running. Two cheap queries a look; a job that went from running
    back to pending between them (requeued) is caught by reading every job before answering."""
    while True:
        if not client.jobs(status="pending", limit=1) and not client.jobs(status="running", limit=1):
            records = [client.job(job_id) for job_id in ids]
            if all(record.status in ENDED for record in records):
                return records
        time.sleep(0.25)


def run(jobs: int, mode: str, folder: Path) -> dict[str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if mode == "up":
        arguments = ["up", "--gpus", "8", "--data-dir", str(folder), "--port", str(port)]
    else:
        arguments = ["server", "--no-local", "--data-dir", str(folder), "--port", str(port)]
    server = start(arguments, folder / "server.log", port)
    agents: list[subprocess.Popen[bytes]] = []
    token = read_token(folder) or ""
    try:
        with Client(url, token=token) as client:
            if mode == "agents":
                agents = start_agents(url, token, folder)
                wait_for_nodes(client, AGENTS)
            watched = [psutil.Process(p.pid) for p in [server, *agents]]
            cpu_before = cpu_seconds(watched)
            ids = [client.submit(JOB).id for _ in range(jobs)]
            records = wait_until_ended(client, ids)
            cpu = cpu_seconds(watched) - cpu_before
            unfinished = [r for r in records if r.status != "finished"]
            if unfinished:  # failed or cancelled
                job = unfinished[0]
                raise RuntimeError(
                    f"{len(unfinished)} jobs did not finish, e.g. {job.id}: {job.status} ({job.reason})"
                )
            waits, requeues = [], 0
            for job_id in ids:
                events = client.events(job_id)
                requeues += sum(1 for e in events if e.kind in ("node_lost", "preempted", "retried"))
                submitted = next(e.t for e in events if e.kind == "submitted")
                waits.append(next(e.t for e in events if e.kind == "started") - submitted)
        first = min(r.submitted_at for r in records)
        last = max(r.ended_at or 0.0 for r in records)
        waits.sort()
        return {
            "jobs": jobs,
            "jobs_per_second": jobs / (last - first),
            "submit_to_start_p50_s": statistics.median(waits),
            "submit_to_start_p99_s": waits[min(len(waits) - 1, int(0.99 * len(waits)))],
            "cpu_seconds_per_1000_jobs": cpu * 1000 / jobs,
            "requeues": requeues,
        }
    finally:
        for agent in agents:
            stop(agent)
        stop(server, kill=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--mode", choices=("up", "agents"), default="up")
    parser.add_argument("--repeat", type=int, default=1, help="runs, each on a fresh server")
    parser.add_argument("--out", type=Path, help="write the runs as JSON here")
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as scratch:
            result = run(args.jobs, args.mode, Path(scratch))
        runs.append(result)
        print(json.dumps({k: round(v, 3) for k, v in result.items()}))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "command": f"benchmarks/e2e.py --jobs {args.jobs} --mode {args.mode} --repeat {args.repeat}",
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {psutil.cpu_count()} CPUs",
            "runs": runs,
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
