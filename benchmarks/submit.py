"""Submit throughput and submit-to-start latency of `corral server`, on SQLite and on PostgreSQL.

    .venv/bin/python benchmarks/submit.py [--clients 20] [--jobs 800] [--workers 1,2]

For each database and number of API worker processes: start `corral server` (no local backend: jobs are
only scheduled) on a 100-node, 800-GPU cluster; `--clients` concurrent clients submit `--jobs` one-GPU
jobs over HTTP, each with an idempotency key; then wait until the reconcile loop has started them all.
Two kinds of client: the Python SDK (`corral.client.Client`, 20 threads), which costs about as much CPU
per request as the server does and shares this machine's cores with it; and a lean HTTP/1.1 client (20
keep-alive connections in one asyncio loop), standing in for clients on other machines. Throughput is
jobs stored per second of submitting; latency is each job's start time minus its submit time. Writes the
table between the `submit` markers of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

from report import publish

from corral.client import Client
from corral.paths import read_token
from corral.server.process import free_port, start, stop
from corral.store.local_postgres import fresh_database, postgres_server

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
CLUSTER = """\
clusters:
  - name: lab
    private: true
    pools:
      - {name: dgx, flavor: gpu, count: 100, node: {cpu: 128, memory_gib: 1024, gpus: 8, gpu_model: A100}}
"""
JOB = {"name": "bench", "command": "true", "resources": {"gpus": 1, "cpu": 1, "memory": 1}}


def sdk_clients(url: str, token: str, clients: int, jobs: int) -> None:
    def submit(number: int) -> None:
        with Client(url, token=token) as client:
            for index in range(jobs // clients):
                client.submit(JOB, idempotency_key=f"{number}-{index}")

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def lean_clients(port: int, token: str, clients: int, jobs: int) -> None:
    body = json.dumps(JOB).encode()

    async def client(number: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for index in range(jobs // clients):
            head = (
                f"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {token}\r\nIdempotency-Key: {number}-{index}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if status != 201:
                raise RuntimeError(f"submission answered {status}")
        writer.close()

    async def everyone() -> None:
        await asyncio.gather(*(client(n) for n in range(clients)))

    asyncio.run(everyone())


def run(
    database_url: str | None, workers: int, kind: str, clients: int, jobs: int, folder: Path
) -> dict[str, float]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cluster.yaml").write_text(CLUSTER)
    port = free_port()
    env = {"CORRAL_DATABASE_URL": database_url} if database_url else {}
    arguments = ["server", "--cluster", str(folder / "cluster.yaml"), "--data-dir", str(folder)]
    arguments += ["--port", str(port), "--no-local", "--heartbeat-timeout", "0", "--interval", "0.5"]
    server = start([*arguments, "--workers", str(workers)], folder / "server.log", port, env)
    url = f"http://127.0.0.1:{port}"
    token = read_token(folder) or ""
    try:
        time.sleep(1.0)  # every worker up
        started = time.perf_counter()
        if kind == "SDK":
            sdk_clients(url, token, clients, jobs)
        else:
            lean_clients(port, token, clients, jobs)
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
    parser.add_argument("--workers", default="1,2", help="API worker processes to try, comma-separated")
    args = parser.parse_args()
    configurations = [(w, kind) for w in map(int, args.workers.split(",")) for kind in ("SDK", "lean")]
    rows = []
    with tempfile.TemporaryDirectory() as scratch, postgres_server() as server:
        for name, url in [("SQLite (WAL)", None), ("PostgreSQL 15", "postgres")]:
            for workers, kind in configurations:
                database = fresh_database(server) if url else None
                folder = Path(scratch) / f"{name[:6]}-{workers}-{kind}"
                result = run(database, workers, kind, args.clients, args.jobs, folder)
                rows.append((name, workers, kind, result))
                print(name, workers, kind, {k: round(v, 2) for k, v in result.items()})
    lines = [
        f"Command: `.venv/bin/python benchmarks/submit.py --clients {args.clients} --jobs {args.jobs} "
        f"--workers {args.workers}` ({time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"Python {platform.python_version()}, {args.clients} clients on the same 2 cores as the server).",
        "",
        "| store | API workers | clients | jobs | submissions/s | submit-to-start p50 | p95 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, workers, kind, r in rows:
        lines.append(
            f"| {name} | {workers} | {kind} | {r['jobs']:.0f} | {r['per_second']:.0f} | {r['p50']:.2f} s "
            f"| {r['p95']:.2f} s |"
        )
    publish("submit", lines)


if __name__ == "__main__":
    main()
