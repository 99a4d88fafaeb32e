"""How long a cancelled job that ignores SIGTERM keeps its GPU: cancel to the next job's start.

    .venv/bin/python benchmarks/cancel.py [--graces 1,5,10] [--repeat 3] [--out benchmarks/results/cancel.json]

Starts `corral up --gpus 1` on loopback in a temporary data dir. For each grace period, a job
`trap '' TERM; sleep 600` with that `stop_grace_period` runs on the one GPU and a second job waits for
it; the first is cancelled. Reported: seconds from the cancel to the second job's process starting (it
prints the time: the store's `started` event comes when the round decides, before the GPU is free),
which must be at least the grace (SIGTERM is ignored, so only the SIGKILL after it frees the GPU)
and, above it, what the control plane adds. The baseline the figures are read against is the grace itself.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from report import write_result

from corral.client import Client
from corral.paths import read_token
from corral.server.process import free_port, start, stop


def measure(client: Client, grace: float) -> float:
    """Seconds from cancelling a TERM-ignoring job to the start of the job waiting for its GPU."""
    stubborn = client.submit(
        {
            "name": "stubborn",
            "command": "trap '' TERM; sleep 600",
            "resources": {"gpus": 1, "cpu": 0.1},
            "stop_grace_period": f"{grace:g}s",
        }
    )
    _wait_for(client, stubborn.id, "running")
    time.sleep(0.5)  # its shell has set the trap
    # The store records a start when the round decides it; the process itself starts only once the GPU
    # is free, so the next job prints when it really began.
    waiting = client.submit({"name": "next", "command": "date +%s.%N", "resources": {"gpus": 1, "cpu": 0.1}})
    cancelled_at = time.time()
    client.cancel(stubborn.id)
    _wait_for(client, waiting.id, "finished")
    return float(client.logs(waiting.id).split()[-1]) - cancelled_at


def _wait_for(client: Client, job_id: str, status: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while client.job(job_id).status != status:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"job {job_id} is {client.job(job_id).status}, not {status}, after {timeout:g} s"
            )
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graces", default="1,5,10", help="stop_grace_period values to measure, seconds")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cancel.json"))
    args = parser.parse_args()
    graces = [float(g) for g in args.graces.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="corral-cancel-") as scratch:
        data = Path(scratch) / "data"
        port = free_port()
        server = start(
            ["up", "--gpus", "1", "--data-dir", str(data), "--port", str(port)],
            Path(scratch) / "up.log",
            port,
        )
        try:
            with Client(f"http://127.0.0.1:{port}", token=read_token(data) or "") as client:
                for grace in graces:
                    runs = [measure(client, grace) for _ in range(args.repeat)]
                    rows.append({"grace_seconds": grace, "cancel_to_next_start_seconds": runs})
                    print(
                        f"grace {grace:g} s: cancel to the next start {statistics.median(runs):.2f} s "
                        f"(runs {', '.join(f'{r:.2f}' for r in runs)}), over the grace "
                        f"{statistics.median(runs) - grace:.2f} s"
                    )
        finally:
            stop(server, kill=False)
    write_result(args.out, {"rows": rows})


if __name__ == "__main__":
    main()
