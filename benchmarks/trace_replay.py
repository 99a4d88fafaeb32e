"""Replay the Alibaba openb trace under every policy and write the table into docs/benchmarks.md.

Two settings: the trace as recorded (its cluster is nearly idle in real time: peak demand is ~65 GPUs of
6212), and a contended one where arrivals come 300x faster on a cluster cut to 10% of each pool, so queues
form and the scheduler works on thousands of waiting jobs. Each setting replays every policy in the same
run; ratios are against the `fifo` baseline of the same run, since the machine is shared and noisy.

    .venv/bin/python benchmarks/trace_replay.py [--trace-dir ../shared/traces/alibaba-gpu-v2023]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

from corral.scenario.io import load_cluster_file, load_workload
from corral.scenario.models import ClusterFile, Summary
from corral.scheduling import get_policy
from corral.sim.engine import Simulator
from corral.traces.alibaba import import_openb

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
START, END = "<!-- trace_replay:start -->", "<!-- trace_replay:end -->"
SETTINGS = {"as recorded": (1.0, 1.0), "300x arrivals, 10% cluster": (300.0, 0.1)}
POLICIES = (
    "fifo",
    "default",
    "strict-fifo",
    "spread",
    "best-fit",
    "gpu-packing",
    "fgd",
    "corral-fgd",
    "corral-defrag",
)


def scaled(cluster: ClusterFile, fraction: float) -> ClusterFile:
    clusters = [
        c.model_copy(
            update={
                "pools": [p.model_copy(update={"count": max(1, round(p.count * fraction))}) for p in c.pools]
            }
        )
        for c in cluster.clusters
    ]
    return ClusterFile(clusters=clusters, queues=cluster.queues)


def run(cluster: ClusterFile, workload: list, policy: str) -> tuple[Summary, float]:
    started = time.perf_counter()
    summary = Simulator(cluster, workload, get_policy(policy)).run().summary
    return summary, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--trace-dir", type=Path, default=REPO.parent / "shared" / "traces" / "alibaba-gpu-v2023"
    )
    args = parser.parse_args()
    if not args.trace_dir.is_dir():
        sys.exit(f"trace not found at {args.trace_dir}; pass --trace-dir")
    with tempfile.TemporaryDirectory() as scratch:
        imported = import_openb(args.trace_dir, Path(scratch))
        base_cluster = load_cluster_file(imported.cluster_path)
        base_workload = load_workload(imported.workload_path)
    lines = [
        START,
        f"Command: `.venv/bin/python benchmarks/trace_replay.py` ({time.strftime('%Y-%m-%d')}, "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}).",
        "",
        "| setting | policy | jobs | GPU allocation | wait p50 | wait p95 | JCT mean | preemptions | scheduler s "
        "| ms/round | scheduler time vs fifo |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for setting, (speedup, fraction) in SETTINGS.items():
        cluster = scaled(base_cluster, fraction)
        workload = [w.model_copy(update={"submit": w.submit / speedup}) for w in base_workload]
        results = {}
        for policy in POLICIES:
            summary, wall = run(cluster, workload, policy)
            results[policy] = summary
            print(
                f"{setting} / {policy}: {summary.scheduler_seconds:.1f} s scheduler, {wall:.1f} s wall",
                flush=True,
            )
        baseline = results["fifo"].scheduler_seconds
        for policy, s in results.items():
            per_round = 1000 * s.scheduler_seconds / max(1, s.scheduling_rounds)
            lines.append(
                f"| {setting} | {policy} | {s.jobs} | {100 * s.gpu_allocation:.1f}% | {s.wait_p50:.0f} s | {s.wait_p95:.0f} s | {s.jct_mean:.0f} s "
                f"| {s.preemptions} | {s.scheduler_seconds:.1f} | {per_round:.2f} | {s.scheduler_seconds / baseline:.2f}x |"
            )
    lines.append(END)
    text = DOC.read_text() if DOC.exists() else ""
    block = "\n".join(lines)
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:
        text = text + "\n" + block + "\n"
    DOC.write_text(text)
    print(block)


if __name__ == "__main__":
    main()
