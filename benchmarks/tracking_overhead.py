"""What tracking through corral costs per logged metric, from inside a job, against MLflow without corral.

    .venv/bin/python benchmarks/tracking_overhead.py [--metrics 200] [--rounds 5] [--out benchmarks/results/tracking.json]

Starts `corral server` (local backend, SQLite, MLflow behind `/mlflow`) and the stock `mlflow server`
(one worker, its own SQLite) on loopback in a temporary folder, then runs one corral job whose script
logs ``--metrics`` metrics one `MlflowClient.log_metric` call at a time (the synchronous call a script
makes) into three runs, in turns, for ``--rounds`` rounds:

- **store**: straight to MLflow's SQLAlchemy store on a SQLite file in the pod's folder (no HTTP): the
  baseline, measured in the same process in the same rounds;
- **mlflow server**: over HTTP to the stock MLflow server (no authentication);
- **corral**: over HTTP to the job's own run through corral's `/mlflow` gate, with the job's token
  (authentication, the allow-list, the tenant check of the run).

Reported: seconds per metric (median over rounds, with the rounds' range) and the ratio to the store.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import httpx
from report import write_result

from corral.client import Client
from corral.paths import read_token
from corral.server.process import free_port, start, stop

CLUSTER = """
clusters:
  - name: bench
    pools:
      - name: cpu
        flavor: cpu
        count: 1
        node: {cpu: 8, memory_gib: 16, gpus: 0}
"""

JOB = """
import json, os, time
from mlflow import MlflowClient

metrics, rounds = int(os.environ["BENCH_METRICS"]), int(os.environ["BENCH_ROUNDS"])
clients = {
    "corral": (MlflowClient(), os.environ["MLFLOW_RUN_ID"]),
    "store": MlflowClient(f"sqlite:///{os.getcwd()}/direct.db"),
    "mlflow server": MlflowClient(os.environ["BENCH_STOCK_URI"]),
}
for name in ("store", "mlflow server"):
    client = clients[name]
    clients[name] = (client, client.create_run(client.create_experiment("bench")).info.run_id)
seconds = {name: [] for name in clients}
for round in range(rounds):
    names = list(clients)[round % 3:] + list(clients)[: round % 3]
    for name in names:
        client, run_id = clients[name]
        started = time.perf_counter()
        for step in range(metrics):
            client.log_metric(run_id, f"m{round}", float(step), step=step)
        seconds[name].append((time.perf_counter() - started) / metrics)
print("RESULT " + json.dumps(seconds), flush=True)
"""


def pod_python() -> tuple[str, dict[str, str]]:
    """A Python with MLflow that the pod's user may run: this one, unless it lies under a folder others
    may not enter (a root's pyenv); then the system's of the same version with this one's packages."""
    real = Path(os.path.realpath(sys.executable))
    if os.geteuid() != 0 or all(os.stat(p).st_mode & 0o001 for p in real.parents if p != Path("/")):
        return sys.executable, {}
    system = shutil.which("python3", path="/usr/bin:/usr/local/bin")
    if system is None or not os.path.realpath(system).endswith(
        f"python{sys.version_info[0]}.{sys.version_info[1]}"
    ):
        raise SystemExit("no Python with MLflow that a pod's user may run")
    return system, {"PYTHONPATH": sysconfig.get_paths()["purelib"]}


def stock_mlflow(folder: Path, port: int) -> subprocess.Popen[bytes]:
    """The stock MLflow server on loopback, one worker, waiting until /health answers."""
    env = os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'stock.db'}"]
    command += ["--artifacts-destination", str(folder / "stock-artifacts")]
    with open(folder / "mlflow.log", "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"mlflow server did not answer; see {folder / 'mlflow.log'}")


def wait_for_mlflow(url: str, token: str) -> None:
    """MLflow opens in the background after the server starts; jobs started before get no run."""
    deadline = time.monotonic() + 180
    headers = {"Authorization": f"Bearer {token}"}
    while httpx.get(f"{url}/mlflow/api/3.0/mlflow/server-info", headers=headers).status_code == 503:
        if time.monotonic() > deadline:
            raise SystemExit("MLflow did not open behind corral within 180 s")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=int, default=200, help="metrics logged per run per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tracking.json"))
    args = parser.parse_args()
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    scratch = Path(tempfile.mkdtemp(prefix="corral-tracking-"))  # pods pass through it
    scratch.chmod(0o755)
    data = scratch / "data"
    (scratch / "cluster.yaml").write_text(CLUSTER)
    script = scratch / "job.py"
    script.write_text(JOB)
    script.chmod(0o644)
    port, stock_port = free_port(), free_port()
    stock = stock_mlflow(scratch, stock_port)
    server = start(
        ["server", "--data-dir", str(data), "--port", str(port), "--cluster", str(scratch / "cluster.yaml")],
        scratch / "server.log",
        port,
        timeout=120,
    )
    try:
        python, env = pod_python()
        env |= {
            "BENCH_METRICS": str(args.metrics),
            "BENCH_ROUNDS": str(args.rounds),
            "BENCH_STOCK_URI": f"http://127.0.0.1:{stock_port}",
        }
        token = read_token(data) or ""
        wait_for_mlflow(f"http://127.0.0.1:{port}", token)
        with Client(f"http://127.0.0.1:{port}", token=token) as client:
            job = client.submit({"name": "tracking", "command": [python, str(script)], "env": env})
            deadline = time.monotonic() + 1800
            while client.job(job.id).status not in ("finished", "failed", "cancelled"):
                if time.monotonic() > deadline:
                    raise SystemExit("the benchmark job did not end within 30 min")
                time.sleep(0.5)
            output = client.logs(job.id)
        lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
        if not lines:
            raise SystemExit(f"the job printed no result:\n{output[-3000:]}")
        seconds: dict[str, list[float]] = json.loads(lines[-1].removeprefix("RESULT "))
    finally:
        stop(server, kill=False)
        stock.terminate()
        stock.wait(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)
    baseline = statistics.median(seconds["store"])
    rows = []
    print("| client | ms per metric (median of rounds, range) | ratio to the store |")
    print("|---|---|---|")
    for name in ("store", "mlflow server", "corral"):
        runs = seconds[name]
        median = statistics.median(runs)
        rows.append({"client": name, "seconds_per_metric": runs, "ratio": median / baseline})
        print(
            f"| {name} | {median * 1000:.2f} ({min(runs) * 1000:.2f}-{max(runs) * 1000:.2f}) "
            f"| {median / baseline:.2f} |"
        )
    write_result(args.out, {"metrics": args.metrics, "rounds": args.rounds, "rows": rows})


if __name__ == "__main__":
    main()
