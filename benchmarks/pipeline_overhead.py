"""What a pipeline adds per step: a 10-step chain of `true` steps on `corral up`, and the same run again.

    PYTHONPATH=src .venv/bin/python benchmarks/pipeline_overhead.py [--steps 10] [--repeat 5] \
        [--out benchmarks/results/pipeline-overhead.json]

Starts `corral up --gpus 0` on loopback in a temporary data dir. Each repeat measures, in this order:

- **baseline**: the same chain driven by a client: submit `true`, poll until it finished, submit the
  next (what a user's script would do without pipelines; polling every 20 ms).
- **cold run**: the pipeline (each step `needs` the one before), with a parameter no earlier repeat used,
  so every step misses the cache and runs its job: wall time from the request to the run's end.
- **cache hits**: the same run again: every step a hit, no job.

Reported per step: the cold run's wall time divided by the steps (the work, `true`, is about a
millisecond: nearly all of it is overhead), the part of it between one step's job ending and the
next one's starting (the controller and the scheduler's round), and the cache-hit run's wall time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from report import write_result

from corral.client import Client
from corral.paths import read_token
from corral.pipelines.status import PipelineRun
from corral.server.process import free_port, start, stop

POLL_SECONDS = 0.02


def chain(steps: int) -> dict[str, Any]:
    names = [f"s{i}" for i in range(steps)]
    return {
        "type": "pipeline",
        "name": "chain",
        "params": {"salt": "x"},
        "steps": {
            name: {
                "command": f"true {name} ${{{{ params.salt }}}}",  # steps alike would hit each other
                "resources": {"cpu": 0.1},
                **({"needs": [names[i - 1]]} if i else {}),
            }
            for i, name in enumerate(names)
        },
    }


def until_ended(client: Client, run: PipelineRun) -> PipelineRun:
    while run.status == "running":
        time.sleep(POLL_SECONDS)
        run = client.pipeline(run.id)
    if run.status != "succeeded":
        raise RuntimeError(f"run {run.id} {run.status}: {run.reason}")
    return run


def baseline(client: Client, steps: int) -> float:
    """Seconds for a client to run ``steps`` `true` jobs one after another."""
    began = time.perf_counter()
    for index in range(steps):
        job = client.submit({"name": f"b{index}", "command": "true", "resources": {"cpu": 0.1}})
        while client.job(job.id).status not in ("finished", "failed", "cancelled"):
            time.sleep(POLL_SECONDS)
    return time.perf_counter() - began


def handoffs(client: Client, run: PipelineRun) -> list[float]:
    """Seconds from each step's job ending to the next step's job starting."""
    jobs = [client.job(step.job_id or "") for step in run.steps]
    return [
        (after.started_at or 0) - (before.ended_at or 0)
        for before, after in zip(jobs, jobs[1:], strict=False)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pipeline-overhead.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="corral-pipeline-bench-") as scratch:
        data = Path(scratch) / "data"
        port = free_port()
        arguments = ["up", "--gpus", "0", "--data-dir", str(data), "--port", str(port)]
        server = start(arguments, Path(scratch) / "up.log", port)
        try:
            with Client(f"http://127.0.0.1:{port}", token=read_token(data) or "") as client:
                spec = chain(args.steps)
                for _ in range(args.repeat):
                    base = baseline(client, args.steps)
                    params = {"salt": uuid.uuid4().hex[:8]}
                    began = time.perf_counter()
                    cold = until_ended(client, client.run_pipeline(spec, params))
                    cold_seconds = time.perf_counter() - began
                    began = time.perf_counter()
                    hits = until_ended(client, client.run_pipeline(spec, params))
                    hit_seconds = time.perf_counter() - began
                    assert all(step.cached for step in hits.steps) and not any(s.cached for s in cold.steps)
                    row = {
                        "baseline_seconds": base,
                        "cold_seconds": cold_seconds,
                        "handoff_seconds": handoffs(client, cold),
                        "cache_hit_seconds": hit_seconds,
                    }
                    rows.append(row)
                    print(
                        f"baseline {base / args.steps:.3f} s/step, pipeline {cold_seconds / args.steps:.3f} s/step "
                        f"(handoff median {statistics.median(row['handoff_seconds']):.3f} s), "
                        f"all-hits run {hit_seconds:.3f} s"
                    )
        finally:
            stop(server, kill=False)
    per_step = [row["cold_seconds"] / args.steps for row in rows]
    ratio = [row["cold_seconds"] / row["baseline_seconds"] for row in rows]
    print(
        f"per step: {min(per_step):.3f}-{max(per_step):.3f} s (median {statistics.median(per_step):.3f}); "
        f"pipeline / client-driven chain {min(ratio):.2f}-{max(ratio):.2f}; "
        f"all-hits run {min(r['cache_hit_seconds'] for r in rows):.3f}-{max(r['cache_hit_seconds'] for r in rows):.3f} s"
    )
    write_result(args.out, {"steps": args.steps, "rows": rows})


if __name__ == "__main__":
    main()
