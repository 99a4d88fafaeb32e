"""Submit throughput and submit-to-start latency of `corral server`, on SQLite and on PostgreSQL.

    .venv/bin/python benchmarks/submit.py [--clients 20] [--jobs 2000]

For each database: start `corral server` (no local backend: jobs are only scheduled) on a 100-node,
800-GPU cluster; `--clients` threads submit `--jobs` one-GPU jobs over HTTP, each with an idempotency key;
then wait until the reconcile loop has started all that fit. Throughput is jobs stored per second of
submitting; latency is each started job's start time minus its submit time. Writes the table between
the `submit` markers of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

from corral.client import Client
from corral.paths import read_token
from corral.server.process import free_port, start, stop
from corral.store.local_postgres import fresh_database, postgres_server

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
START, END = "<!-- submit:start -->", "<!-- submit:end -->"
CLUSTER = """\
clusters:
  - name: lab
    private: true
    pools:
      - {name: dgx, flavor: gpu, count: 100, node: {cpu: 128, memory_gib: 1024, gpus: 8, gpu_model: A100}}
"""
JOB = {"name": "bench", "command": "true", "resources": {"gpus": 1, "cpu": 1, "memory": 1}}


def run(database_url: str | None, clients: int, jobs: int, folder: Path) -> dict[str, float]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cluster.yaml").write_text(CLUSTER)
    port = free_port()
    env = {"CORRAL_DATABASE_URL": database_url} if database_url else {}
    arguments = ["server", "--cluster", str(folder / "cluster.yaml"), "--data-dir", str(folder)]
    arguments += ["--port", str(port), "--no-local", "--heartbeat-timeout", "0", "--interval", "0.5"]
    server = start(arguments, folder / "server.log", port, env)
    url = f"http://127.0.0.1:{port}"
    token = read_token(folder)
    try:
        per_client = jobs // clients

        def submit(number: int) -> None:
            with Client(url, token=token) as client:
                for index in range(per_client):
                    client.submit(JOB, idempotency_key=f"{number}-{index}")

        threads = [threading.Thread(target=submit, args=(n,)) for n in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        with Client(url, token=token) as client:
            while client.jobs(status="pending", limit=1):
                time.sleep(0.2)
            records = client.jobs(limit=jobs)
        latencies = sorted(r.started_at - r.submitted_at for r in records if r.started_at is not None)
        return {
            "jobs": len(records),
            "per_second": len(records) / seconds,
            "p50": statistics.median(latencies),
            "p95": latencies[int(0.95 * (len(latencies) - 1))],
        }
    finally:
        stop(server, kill=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=800)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        results["SQLite (WAL)"] = run(None, args.clients, args.jobs, Path(scratch) / "sqlite")
        with postgres_server() as server:
            results["PostgreSQL 15"] = run(
                fresh_database(server), args.clients, args.jobs, Path(scratch) / "pg"
            )
    lines = [
        START,
        f"Command: `.venv/bin/python benchmarks/submit.py --clients {args.clients} --jobs {args.jobs}` "
        f"({time.strftime('%Y-%m-%d')}, {platform.machine()}, Python {platform.python_version()}).",
        "",
        "| store | jobs | submissions/s | submit-to-start p50 | p95 |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['jobs']} | {r['per_second']:.0f} | {r['p50']:.2f} s | {r['p95']:.2f} s |"
        )
    lines.append(END)
    block = "\n".join(lines)
    text = DOC.read_text()
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n## Control plane: submissions\n\n" + block + "\n"
    DOC.write_text(text)
    print(block)


if __name__ == "__main__":
    main()
