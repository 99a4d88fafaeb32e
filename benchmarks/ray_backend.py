"""The Ray backend against the local backend, in one run: submit-to-start latency, and node loss.

    .venv/bin/python benchmarks/ray_backend.py [--jobs 10]

Starts a Ray cluster on this machine (a head without GPUs and two nodes with 2 declared GPUs each, Ray's
default health checks) and `corral server` (default settings) with two clusters: `lab`, one 2-GPU node
run by the local backend, and `ray`. Then:

1. `--jobs` one-GPU jobs, one at a time, alternating between the clusters; each pod prints the time it
   started. Latency is that time minus the job's submit time.
2. A 2-GPU job on a Ray node; that node's raylet is killed (-9). Measured from the kill until the store
   has the job running again on the other Ray node, and until its process there has started.

Writes the table between the `ray_backend` markers of docs/benchmarks.md.
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

import ray
from report import publish

from corral.client import APIError, Client
from corral.paths import read_token
from corral.server.process import free_port, start, stop

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
RAY = str(Path(sys.executable).with_name("ray"))
STAMP = 'python3 -c "import time; print(time.time())"'


def ray_start(*arguments: str) -> None:
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0"}
    command = [RAY, "start", "--num-cpus=4", "--disable-usage-stats", *arguments]
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=120)


def wait(client: Client, job_id: str, status: str, attempt: int = 1) -> None:
    while True:
        job = client.job(job_id)
        if job.status == status and job.attempt >= attempt:
            return
        time.sleep(0.05)


def latencies(client: Client, jobs: int) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {"local": [], "ray": []}
    for index in range(jobs):
        where, model = ("local", "T4") if index % 2 == 0 else ("ray", "ray-gpu")
        spec = {
            "name": f"{where}-{index}",
            "command": f"{STAMP}; sleep 0.5",
            "resources": {"gpus": f"{model}:1"},
        }
        job = client.submit(spec)
        wait(client, job.id, "finished")
        found[where].append(float(client.logs(job.id).split()[0]) - job.submitted_at)
    return found


def node_loss(client: Client) -> tuple[float, float, float]:
    """Seconds from the kill until Ray reports the node dead, until corral has the job running again,
    and until its process has started elsewhere."""
    job = client.submit(
        {"name": "lost", "command": f"{STAMP}; sleep 600", "resources": {"gpus": "ray-gpu:2"}}
    )
    wait(client, job.id, "running")
    node = next(n for n in client.nodes() if n.gpus_allocated == 2 and n.cluster == "ray").name
    ids = {
        next(k for k in n["Resources"] if k.startswith("corral-node-")).removeprefix("corral-node-"): n[
            "NodeID"
        ]
        for n in ray.nodes()
        if n["Alive"] and any(k.startswith("corral-node-") for k in n["Resources"])
    }
    raylets = subprocess.run(
        ["pgrep", "-f", f"raylet.*--node_id={ids[node]}"], capture_output=True, text=True
    )
    killed = time.time()
    for pid in raylets.stdout.split():
        os.kill(int(pid), signal.SIGKILL)
    dead = requeued = None
    while requeued is None:
        if dead is None and not any(n["Alive"] for n in ray.nodes() if n["NodeID"] == ids[node]):
            dead = time.time() - killed
        current = client.job(job.id)
        if current.status == "running" and current.attempt == 2:
            requeued = time.time() - killed
        time.sleep(0.05)
    output = ""
    while not output.strip():
        time.sleep(0.05)
        try:
            output = client.logs(job.id)
        except APIError:  # nothing shipped yet
            output = ""
    client.cancel(job.id)
    return dead or requeued, requeued, float(output.split()[0]) - killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10)
    args = parser.parse_args()
    ray_port = free_port()
    address = f"127.0.0.1:{ray_port}"
    try:
        ray_start("--head", f"--port={ray_port}", "--num-gpus=0", "--include-dashboard=false")
        for name in ("ray-b", "ray-c"):
            ray_start(f"--address={address}", "--num-gpus=2", f'--resources={{"corral-node-{name}": 1}}')
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            (folder / "cluster.yaml").write_text(
                "clusters:\n"
                "  - name: lab\n"
                "    pools:\n"
                "      - {name: ws, flavor: t4, count: 1, node: {cpu: 4, memory_gib: 16, gpus: 2, gpu_model: T4}}\n"
                "  - name: ray\n"
                f"    backend: {{kind: ray, address: '{address}'}}\n"
            )
            port = free_port()
            arguments = ["server", "--cluster", str(folder / "cluster.yaml"), "--data-dir", str(folder)]
            server = start([*arguments, "--port", str(port)], folder / "server.log", port)
            try:
                with Client(f"http://127.0.0.1:{port}", token=read_token(folder)) as client:
                    while sum(n.cluster == "ray" for n in client.nodes()) < 3:
                        time.sleep(0.2)
                    found = latencies(client, args.jobs)
                    dead, requeued, running = node_loss(client)
            finally:
                stop(server, kill=False)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)
    local, through_ray = statistics.median(found["local"]), statistics.median(found["ray"])
    lines = [
        f"Command: `.venv/bin/python benchmarks/ray_backend.py --jobs {args.jobs}` "
        f"({time.strftime('%Y-%m-%d')}, {platform.machine()}, Python {platform.python_version()}, "
        f"Ray {ray.__version__}); corral and Ray defaults (reconcile interval 2 s; Ray's health checks).",
        "",
        "| measure | local backend | Ray backend | Ray / local |",
        "|---|---|---|---|",
        f"| submit to process start, median of {len(found['local'])} / {len(found['ray'])} jobs "
        f"| {local:.2f} s | {through_ray:.2f} s | {through_ray / local:.1f} |",
        f"| submit to process start, max | {max(found['local']):.2f} s | {max(found['ray']):.2f} s | |",
        f"| Ray node killed -9 until Ray reports it dead | | {dead:.1f} s | |",
        f"| Ray node killed -9 until the job runs again (store) | | {requeued:.1f} s | |",
        f"| Ray node killed -9 until its process has started elsewhere | | {running:.1f} s | |",
    ]
    publish("ray_backend", lines)


if __name__ == "__main__":
    main()
