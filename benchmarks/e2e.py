"""End-to-end throughput of the control plane beside Slurm: submit, schedule, run, notice the exit, free the GPUs.

    .venv/bin/python benchmarks/e2e.py [--jobs 200] [--mode up|agents|slurm] [--workload burst|mix|paced]
        [--out benchmarks/results/e2e.json]
    .venv/bin/python benchmarks/e2e.py --side-by-side [--jobs 100]     # every mode and workload, one run

``--mode up`` starts `corral up --gpus 8` (API, reconcile loop and local backend in one process, SQLite)
on loopback in a temporary data dir; ``--mode agents`` starts `corral server --no-local` and two
`corral agent --gpus 4` processes that register their nodes; ``--mode slurm`` starts Slurm 22.05 with one
node of 8 fake GPUs (``slurm_cluster.py``; root, Debian's packages) and submits with `sbatch`. Each has 8
GPUs. One client submits ``--jobs`` jobs one after the other (the SDK, or `sbatch`), then waits until
every job has ended. The workloads:

- ``burst``: jobs of `true` asking 1 GPU and 0.1 CPU (Slurm: 1 CPU, its least), all at once. With 8 GPUs
  and jobs that take no time, what is measured is how fast the control plane turns a GPU over.
- ``mix``: the same, but every fourth job is a gang of 2 pods (Slurm: 2 tasks of 1 GPU each, `srun`)
  and every fourth one after it sleeps 10 s.
- ``paced``: jobs of `true` submitted one every 0.1 s: each finds free GPUs, so submit-to-start is
  the control plane's own latency.

Each corral server is measured once it is ready, its MLflow open (the first seconds after a start it
spends opening MLflow's stores). Reported: jobs per second end to end (jobs / (last end - first submission)), each job's submit-to-start
time (corral: its ``submitted`` and first ``started`` events; Slurm: the client's clock before `sbatch`
and the job script's first line), the CPU seconds the control plane's processes (corral's server and
agents, and the server's MLflow writer process; Slurm's slurmctld and slurmd) spent per 1,000 jobs while the jobs ran (psutil; pods, job steps
and the submitting client are not counted), and how many times a corral job was requeued (none is
expected). ``--side-by-side`` writes the table, as ratios to Slurm, between the ``e2e_slurm`` markers of
docs/benchmarks.md.
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

import httpx
import psutil
from report import replace_block
from slurm_cluster import slurm_cluster

from corral.api_models import Job
from corral.client import Client
from corral.paths import read_token
from corral.server.process import free_port, start, stop
from corral.store.jobs import ENDED

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
JOB = {"name": "e2e", "command": "true", "resources": {"gpus": 1, "cpu": 0.1, "memory": 0.1}}
AGENT_GPUS = 4
AGENTS = 2
WORKLOADS = ("burst", "mix", "paced")
MODES = ("up", "agents", "slurm")
PACE_SECONDS = 0.1
LONG_SECONDS = 10


def kind(index: int, workload: str) -> str:
    """What job ``index`` of a workload is: trivial, a 2-pod gang, or a 10 s job."""
    if workload == "mix" and index % 4 == 0:
        return "gang"
    if workload == "mix" and index % 4 == 1:
        return "long"
    return "trivial"


def corral_job(index: int, workload: str) -> dict[str, object]:
    job = kind(index, workload)
    if job == "gang":
        return JOB | {"pods": 2}
    if job == "long":
        return JOB | {"command": f"sleep {LONG_SECONDS}"}
    return JOB


def slurm_job(index: int, workload: str, folder: Path) -> list[str]:
    """`sbatch` arguments for job ``index``: its script writes when it started and ended."""
    job = kind(index, workload)
    work = {"gang": "srun true", "long": f"sleep {LONG_SECONDS}", "trivial": "true"}[job]
    script = f"s=$(date +%s.%N); {work}; echo $s $(date +%s.%N) > {folder}/times-$SLURM_JOB_ID"
    shape = ["-n", "2", "--gpus-per-task=1"] if job == "gang" else ["--gres=gpu:1"]
    return [
        "sbatch",
        "--parsable",
        "-c",
        "1",
        "--mem-per-cpu=100",
        "-o",
        "/dev/null",
        *shape,
        "--wrap",
        script,
    ]


def pace(index: int, began: float, workload: str) -> None:
    """For ``paced``, wait until job ``index``'s turn."""
    if workload == "paced":
        time.sleep(max(0.0, began + index * PACE_SECONDS - time.monotonic()))


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


def mlflow_writers(server: psutil.Process) -> list[psutil.Process]:
    """The server's MLflow writer process (``corral.mlops.writer``), whose CPU is the control plane's
    too; none on a server that writes to MLflow from its own threads."""
    writers = []
    for child in server.children():
        try:
            if "corral.mlops.writer" in child.cmdline():
                writers.append(child)
        except psutil.NoSuchProcess:
            continue
    return writers


def wait_for_nodes(client: Client, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(1 for node in client.nodes() if node.last_heartbeat is not None) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} agents did not register within {timeout:g} s")
        time.sleep(0.2)


def wait_for_mlflow(url: str, token: str, timeout: float = 120.0) -> None:
    """Until the server's MLflow is open (``/mlflow`` no longer answers 503): it opens on a thread of
    the server's for ten seconds or more on a busy machine, and a burst measured meanwhile shares the
    cores with that (and runs its first jobs untracked)."""
    deadline = time.monotonic() + timeout
    probe = f"{url}/mlflow/api/2.0/mlflow/experiments/search?max_results=1"
    while httpx.get(probe, headers={"Authorization": f"Bearer {token}"}).status_code == 503:
        if time.monotonic() > deadline:
            raise RuntimeError(f"MLflow did not open within {timeout:g} s")
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


def summary(jobs: int, first: float, last: float, waits: list[float], cpu: float) -> dict[str, float]:
    waits = sorted(waits)
    return {
        "jobs": jobs,
        "jobs_per_second": jobs / (last - first),
        "submit_to_start_p50_s": statistics.median(waits),
        "submit_to_start_p99_s": waits[min(len(waits) - 1, int(0.99 * len(waits)))],
        "cpu_seconds_per_1000_jobs": cpu * 1000 / jobs,
    }


def run_slurm(jobs: int, workload: str, folder: Path) -> dict[str, float]:
    with slurm_cluster(nodes=1) as daemons:
        cpu_before = cpu_seconds(daemons)
        submitted: dict[str, float] = {}
        began = time.monotonic()
        for index in range(jobs):
            pace(index, began, workload)
            at = time.time()
            answer = subprocess.run(
                slurm_job(index, workload, folder), capture_output=True, text=True, check=True
            )
            submitted[answer.stdout.strip().split(";")[0]] = at
        while len(list(folder.glob("times-*"))) < jobs or _slurm_queue():
            time.sleep(0.25)
        cpu = cpu_seconds(daemons) - cpu_before
    times = {path.name.removeprefix("times-"): path.read_text().split() for path in folder.glob("times-*")}
    waits = [float(times[job][0]) - at for job, at in submitted.items()]
    last = max(float(ended) for _, ended in times.values())
    return summary(jobs, min(submitted.values()), last, waits, cpu)


def _slurm_queue() -> bool:
    """Whether Slurm still has jobs queued or running."""
    return bool(subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.strip())


def run(jobs: int, mode: str, folder: Path, workload: str = "burst") -> dict[str, float]:
    if mode == "slurm":
        return run_slurm(jobs, workload, folder)
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
        wait_for_mlflow(url, token)
        with Client(url, token=token) as client:
            if mode == "agents":
                agents = start_agents(url, token, folder)
                wait_for_nodes(client, AGENTS)
            watched = [psutil.Process(p.pid) for p in [server, *agents]]
            watched += mlflow_writers(watched[0])
            cpu_before = cpu_seconds(watched)
            ids = []
            began = time.monotonic()
            for index in range(jobs):
                pace(index, began, workload)
                ids.append(client.submit(corral_job(index, workload)).id)
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
        return summary(jobs, first, last, waits, cpu) | {"requeues": requeues}
    finally:
        for agent in agents:
            stop(agent)
        stop(server, kill=False)


def side_by_side(jobs: int) -> dict[str, dict[str, dict[str, float]]]:
    """Every workload through every mode, in one run: workload -> mode -> result."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    for workload in WORKLOADS:
        for mode in MODES:
            with tempfile.TemporaryDirectory() as scratch:
                result = run(jobs, mode, Path(scratch), workload)
            results.setdefault(workload, {})[mode] = result
            print(workload, mode, json.dumps({k: round(v, 3) for k, v in result.items()}), flush=True)
    return results


SETUPS = {"up": "`corral up --gpus 8`", "agents": "`corral server` + 2 agents", "slurm": "Slurm 22.05"}


def table(results: dict[str, dict[str, dict[str, float]]], command: str) -> list[str]:
    lines = [
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {psutil.cpu_count()} CPUs); "
        "8 GPUs in each setup. Ratios are to Slurm (for times and CPU: Slurm's / corral's, so higher is "
        "better everywhere).",
        "",
        "| workload | setup | jobs/s | ratio | submit-to-start p50 | ratio | p99 | ratio | CPU s / 1,000 jobs | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for workload, modes in results.items():
        slurm = modes["slurm"]
        for mode, result in modes.items():
            lines.append(
                f"| {workload} ({result['jobs']:.0f} jobs) | {SETUPS[mode]} "
                f"| {result['jobs_per_second']:.1f} | {result['jobs_per_second'] / slurm['jobs_per_second']:.0f}x "
                f"| {_ms(result['submit_to_start_p50_s'])} "
                f"| {slurm['submit_to_start_p50_s'] / result['submit_to_start_p50_s']:.0f}x "
                f"| {_ms(result['submit_to_start_p99_s'])} "
                f"| {slurm['submit_to_start_p99_s'] / result['submit_to_start_p99_s']:.0f}x "
                f"| {result['cpu_seconds_per_1000_jobs']:.1f} "
                f"| {slurm['cpu_seconds_per_1000_jobs'] / result['cpu_seconds_per_1000_jobs']:.1f}x |"
            )
    return lines


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--mode", choices=MODES, default="up")
    parser.add_argument("--workload", choices=WORKLOADS, default="burst")
    parser.add_argument("--repeat", type=int, default=1, help="runs, each on a fresh server")
    parser.add_argument("--side-by-side", action="store_true", help="every mode and workload, into the docs")
    parser.add_argument("--out", type=Path, help="write the runs as JSON here")
    args = parser.parse_args()
    if args.side_by_side:
        command = f"benchmarks/e2e.py --side-by-side --jobs {args.jobs}"
        results = side_by_side(args.jobs)
        out = args.out or REPO / "benchmarks" / "results" / "e2e-slurm.json"
        out.write_text(json.dumps({"command": command, "results": results}, indent=2) + "\n")
        DOC.write_text(replace_block(DOC.read_text(), "e2e_slurm", table(results, command)))
        print("\n".join(table(results, command)))
        return
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as scratch:
            result = run(args.jobs, args.mode, Path(scratch), args.workload)
        runs.append(result)
        print(json.dumps({k: round(v, 3) for k, v in result.items()}))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "command": f"benchmarks/e2e.py --jobs {args.jobs} --mode {args.mode} --workload {args.workload} "
            f"--repeat {args.repeat}",
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {psutil.cpu_count()} CPUs",
            "runs": runs,
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
