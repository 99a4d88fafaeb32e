"""Reading a pod's log through `corral server`: time and server memory of a tail read of a 1 GiB log,
against a full read of a 10 MiB one.

    .venv/bin/python benchmarks/logs.py [--gib 1] [--repeats 5]

Starts `corral server` (local backend, the demo cluster), runs two one-line jobs, then replaces their
output files with generated logs (1 GiB and 10 MiB of numbered lines, written a block at a time). Each
read is made `--repeats` times over HTTP with the Python SDK; the table gives the median time and the
server's peak resident memory (VmHWM) after the reads of that row, above the peak before any read. The
full read of the 1 GiB log serves what the cap keeps (the newest 100 MiB), streamed. Writes the table
between the `logs` markers of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from report import publish

from corral.client import Client
from corral.paths import read_token
from corral.server.process import free_port, start, stop

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
CLUSTER = REPO / "examples" / "demo" / "cluster.yaml"
JOB = {"name": "log", "queue": "nlp", "command": "true", "resources": {"gpus": 1}}


def write_log(path: Path, size: int) -> None:
    """``size`` bytes of numbered lines, a megabyte block at a time."""
    line = b"%012d step=12345 loss=0.123456 lr=0.0003 tokens/s=98765 some more text to fill a line\n"
    block = b"".join(line % i for i in range((1 << 20) // len(line % 0)))
    with open(path, "wb") as file:
        written = 0
        while written < size:
            file.write(block)
            written += len(block)
        file.truncate(size)


def peak_rss_mib(pid: int) -> float:
    for entry in Path(f"/proc/{pid}/status").read_text().splitlines():
        if entry.startswith("VmHWM:"):
            return int(entry.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def measure(pid: int, repeats: int, read: Callable[[], int], parallel: int = 1) -> tuple[float, float, int]:
    """Median seconds of ``repeats`` rounds of ``parallel`` concurrent reads, the server's peak RSS
    growth (MiB) over them, and the bytes one read got."""
    before = peak_rss_mib(pid)
    times: list[float] = []
    sizes: list[int] = []
    for _ in range(repeats):
        sizes.clear()
        threads = [threading.Thread(target=lambda: sizes.append(read())) for _ in range(parallel)]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        times.append(time.perf_counter() - began)
    return statistics.median(times), peak_rss_mib(pid) - before, sizes[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        port = free_port()
        server = start(
            ["server", "--cluster", str(CLUSTER), "--data-dir", str(folder), "--port", str(port)],
            folder / "server.log",
            port,
        )
        try:
            with Client(f"http://127.0.0.1:{port}", token=read_token(folder), timeout=300) as client:
                big, small = (client.submit(JOB).id for _ in range(2))
                while any(client.job(job).status != "finished" for job in (big, small)):
                    time.sleep(0.1)
                write_log(folder / "runs" / big / "attempt-1" / "pod-0" / "output.log", int(args.gib * 2**30))
                write_log(folder / "runs" / small / "attempt-1" / "pod-0" / "output.log", 10 << 20)
                baseline = peak_rss_mib(server.pid)
                rows = [
                    (
                        "full read, 10 MiB log",
                        measure(server.pid, args.repeats, lambda: len(client.logs(small))),
                    ),
                    (
                        f"tail 100 lines, {args.gib:g} GiB log",
                        measure(server.pid, args.repeats, lambda: len(client.logs(big, tail=100))),
                    ),
                    (
                        f"tail 100 lines x 4 concurrent, {args.gib:g} GiB log",
                        measure(
                            server.pid, args.repeats, lambda: len(client.logs(big, tail=100)), parallel=4
                        ),
                    ),
                    (
                        f"1 MiB range near the end, {args.gib:g} GiB log",
                        measure(
                            server.pid,
                            args.repeats,
                            lambda: len(
                                client.logs(big, offset=int(args.gib * 2**30) - (2 << 20), limit=1 << 20)
                            ),
                        ),
                    ),
                    (
                        f"full read, {args.gib:g} GiB log (the newest 100 MiB kept)",
                        measure(server.pid, max(1, args.repeats // 2), lambda: len(client.logs(big))),
                    ),
                ]
        finally:
            stop(server)
    full_small = rows[0][1][0]
    lines = [
        f"Command: `.venv/bin/python benchmarks/logs.py --gib {args.gib:g} --repeats {args.repeats}` "
        f"({time.strftime('%Y-%m-%d')}, {platform.machine()}, Python {platform.python_version()}); "
        f"server peak RSS before the reads: {baseline:.0f} MiB.",
        "",
        "| read | bytes sent | median time | vs full read of 10 MiB | server peak RSS growth |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {size:,} | {seconds * 1000:.1f} ms | {seconds / full_small:.2f}x | {growth:.0f} MiB |"
            for name, (seconds, growth, size) in rows
        ),
    ]
    publish("logs", lines)


if __name__ == "__main__":
    main()
