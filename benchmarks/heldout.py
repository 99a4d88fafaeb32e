"""Replay the held-out scenarios through the CLI users run (`corral sim`, then `corral check`), time-boxed,
and write a table of every policy against fifo into docs/benchmarks.md.

The scenarios (src/corral/bench/heldout.py) differ in kind from the families the policies were tuned on.
Each replay is a `corral sim` process under a wall-clock limit, so a hang is a finding, not a stuck
benchmark; its log is then judged by `corral check` (with `--work-conserving` for every policy but
strict-fifo, whose queue head blocks on purpose). Ratios are to fifo on the same scenario and seed.

    PYTHONPATH=src .venv/bin/python benchmarks/heldout.py --jobs 200 --workers 3 \
        --out benchmarks/results/heldout.json --doc
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from corral.bench.heldout import FAMILIES, SEEDS, generate, write_regression_set
from corral.scenario.io import read_events
from corral.scheduling import POLICIES

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
START, END = "<!-- heldout:start -->", "<!-- heldout:end -->"
BASELINE = "fifo"
TIMEOUT_SECONDS = 300.0


@dataclass
class Replay:
    family: str
    seed: int
    policy: str
    sim_exit: int | None
    """None: killed at the time limit."""
    sim_error: str = ""
    check_exit: int | None = None
    check_message: str = ""
    wall_seconds: float = 0.0
    summary: dict[str, object] = field(default_factory=dict)
    max_wait_per_queue: dict[str, float] = field(default_factory=dict)
    preempted_twice_at_one_instant: int = 0


def corral(*args: str, timeout: float) -> tuple[int | None, str]:
    """Run ``python -m corral ARGS``; the exit status (None when killed at ``timeout``) and stderr's tail."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "corral", *args], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return None, f"killed after {timeout:.0f} s"
    return done.returncode, (done.stderr or done.stdout).strip()[-400:]


def replay(folder: Path, family: str, seed: int, policy: str, timeout: float) -> Replay:
    import time

    cluster, workload, failures = (
        folder / "cluster.yaml",
        folder / "workload.jsonl",
        folder / "failures.jsonl",
    )
    events, summary = folder / f"{policy}.events.jsonl", folder / f"{policy}.summary.json"
    extra = ["--failures", str(failures)] if failures.exists() else []
    started = time.perf_counter()
    code, message = corral(
        "sim", str(cluster), str(workload), "--policy", policy, "--events", str(events),
        "--summary", str(summary), "-q", *extra, timeout=timeout,
    )  # fmt: skip
    result = Replay(
        family, seed, policy, code, message if code else "", wall_seconds=time.perf_counter() - started
    )
    if code != 0 or not events.exists():
        return result
    result.summary = json.loads(summary.read_text())
    flags = [] if policy == "strict-fifo" else ["--work-conserving"]
    result.check_exit, check = corral(
        "check", str(cluster), str(workload), str(events), *flags, timeout=timeout
    )
    result.check_message = "" if result.check_exit == 0 else check
    result.max_wait_per_queue, result.preempted_twice_at_one_instant = _from_log(workload, events)
    return result


def _from_log(workload: Path, events: Path) -> tuple[dict[str, float], int]:
    """Each queue's longest wait to first start (to the log's end for a job that never started), and how
    many times a job was preempted a second time at one instant."""
    queue_of, submitted, first_start = {}, {}, {}
    for line in workload.read_text().splitlines():
        job = json.loads(line)
        queue_of[job["id"]] = job.get("queue", "default")
    preempted_at: dict[str, float] = {}
    twice, end = 0, 0.0
    for event in read_events(events):
        end = max(end, event.t)
        if event.job is None:
            continue
        if event.event == "submitted":
            submitted[event.job] = event.t
        elif event.event == "started":
            first_start.setdefault(event.job, event.t)
        elif event.event == "preempted":
            twice += preempted_at.get(event.job) == event.t
            preempted_at[event.job] = event.t
        elif event.event == "rejected":
            submitted.pop(event.job, None)
    longest: dict[str, float] = defaultdict(float)
    for job, t in submitted.items():
        longest[queue_of[job]] = max(longest[queue_of[job]], first_start.get(job, end) - t)
    return dict(longest), twice


def run(
    jobs: int, seeds: list[int], policies_seed: int, policies: list[str], timeout: float, workers: int
) -> list[Replay]:
    """Every replay, ``workers`` `corral` processes at a time, in a fixed order whatever ends first."""
    tasks = []
    with tempfile.TemporaryDirectory() as scratch:
        for family in FAMILIES:
            for seed in seeds:
                folder = generate(family, seed, jobs).write(Path(scratch) / f"{family}-{seed}")
                chosen = policies if seed == policies_seed else ["default", BASELINE]
                tasks += [(folder, family, seed, policy) for policy in chosen]

        def one(task: tuple[Path, str, int, str]) -> Replay:
            result = replay(*task, timeout)
            print(_line(result), file=sys.stderr, flush=True)
            return result

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, tasks))


def _line(r: Replay) -> str:
    s = r.summary
    return (
        f"{r.family} {r.seed} {r.policy}: sim {r.sim_exit} check {r.check_exit} {r.wall_seconds:.1f}s "
        f"jct {s.get('jct_mean', 0):.0f} p95 {s.get('wait_p95', 0):.0f} alloc {s.get('gpu_allocation', 0):.3f} "
        f"pre {s.get('preemptions')} zero {s.get('zero_length_runs')} {r.sim_error} {r.check_message}"
    )


def _ratio(value: float, base: float) -> str:
    if base == 0:
        return "-" if value == 0 else "inf"
    return f"{value / base:.2f}"


def markdown(replays: list[Replay], jobs: int) -> list[str]:
    by_key = {(r.family, r.seed, r.policy): r for r in replays}
    lines = [
        f"{jobs} jobs per scenario; ratios are to fifo on the same scenario and seed. `check`: `corral check` "
        "(`--work-conserving` but for strict-fifo); `lost`: GPU-hours thrown away by preemption as a % of "
        "GPU-hours allocated; `zero`: runs preempted at the instant they started; `max wait/fifo`: the "
        "worst ratio over queues of a queue's longest wait to fifo's (queues fifo serves at once left out).",
        "",
        "| scenario | seed | policy | sim | check | mean JCT h | JCT / fifo | p95 wait h | p95 / fifo | "
        "allocation (fifo) | lost | preemptions | zero | max wait / fifo, worst queue |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in replays:
        base = by_key.get((r.family, r.seed, BASELINE))
        s, b = r.summary, base.summary if base else {}
        if not s:
            lines.append(
                f"| {r.family} | {r.seed} | {r.policy} | {_exit(r.sim_exit)}: {r.sim_error} | | | | | | | | | | |"
            )
            continue
        used = float(s["gpu_hours_used"]) or 1.0  # type: ignore[arg-type]
        worst = _worst_queue(r, base) if base and r.policy != BASELINE else "-"
        lines.append(
            f"| {r.family} | {r.seed} | {r.policy} | ok | {'ok' if r.check_exit == 0 else r.check_message} | "
            f"{float(s['jct_mean']) / 3600:.2f} | {_ratio(float(s['jct_mean']), float(b.get('jct_mean', 0)))} | "  # type: ignore[arg-type]
            f"{float(s['wait_p95']) / 3600:.2f} | {_ratio(float(s['wait_p95']), float(b.get('wait_p95', 0)))} | "  # type: ignore[arg-type]
            f"{100 * float(s['gpu_allocation']):.1f}% ({100 * float(b.get('gpu_allocation', 0)):.1f}%) | "  # type: ignore[arg-type]
            f"{100 * float(s['lost_gpu_hours']) / used:.2f}% | {s['preemptions']} | {s['zero_length_runs']} | {worst} |"  # type: ignore[arg-type]
        )
    return lines


def _exit(code: int | None) -> str:
    return "hang" if code is None else f"exit {code}"


def _worst_queue(r: Replay, base: Replay) -> str:
    worst, name = 0.0, "-"
    for queue, wait in r.max_wait_per_queue.items():
        reference = base.max_wait_per_queue.get(queue, 0.0)
        if reference > 60 and wait / reference > worst:
            worst, name = wait / reference, queue
    return f"{worst:.2f} ({name})" if name != "-" else "-"


def summary_lines(replays: list[Replay]) -> list[str]:
    """Medians of default over fifo per family, over seeds."""
    by_key = {(r.family, r.seed, r.policy): r for r in replays}
    lines = [
        "| scenario | seeds | default JCT / fifo, median (range) | p95 wait / fifo | allocation minus fifo's, points |",
        "|---|---|---|---|---|",
    ]
    for family in FAMILIES:
        pairs = [
            (by_key[(family, seed, "default")].summary, by_key[(family, seed, BASELINE)].summary)
            for seed in sorted({r.seed for r in replays if r.family == family})
            if by_key.get((family, seed, "default"))
            and by_key[(family, seed, "default")].summary
            and by_key.get((family, seed, BASELINE))
            and by_key[(family, seed, BASELINE)].summary
        ]
        pairs = [(d, f) for d, f in pairs if float(f["jct_mean"])]  # type: ignore[arg-type]
        if not pairs:
            continue
        jct = [float(d["jct_mean"]) / float(f["jct_mean"]) for d, f in pairs]  # type: ignore[arg-type]
        p95 = [float(d["wait_p95"]) / float(f["wait_p95"]) for d, f in pairs if float(f["wait_p95"]) > 0]  # type: ignore[arg-type]
        alloc = [100 * (float(d["gpu_allocation"]) - float(f["gpu_allocation"])) for d, f in pairs]  # type: ignore[arg-type]
        lines.append(
            f"| {family} | {len(pairs)} | {np.median(jct):.2f} ({min(jct):.2f}-{max(jct):.2f}) | "
            + (f"{np.median(p95):.2f} ({min(p95):.2f}-{max(p95):.2f})" if p95 else "- (fifo's is 0)")
            + f" | {np.median(alloc):+.1f} ({min(alloc):+.1f} to {max(alloc):+.1f}) |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument(
        "--all-policies-seed", type=int, default=SEEDS[0], help="Seed replayed under every policy."
    )
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument(
        "--timeout", type=float, default=TIMEOUT_SECONDS, help="Wall-clock limit per command, s."
    )
    parser.add_argument("--workers", type=int, default=1, help="Replays run at once (each its own process).")
    parser.add_argument("--out", type=Path, default=None, help="Write every replay here (JSON).")
    parser.add_argument("--doc", action="store_true", help="Write the tables into docs/benchmarks.md.")
    parser.add_argument(
        "--examples",
        type=Path,
        default=None,
        help="Only write the regression set into this folder (examples/heldout).",
    )
    args = parser.parse_args()
    if args.examples is not None:
        for folder in write_regression_set(args.examples):
            print(folder)
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    replays = run(
        args.jobs, seeds, args.all_policies_seed, args.policies.split(","), args.timeout, args.workers
    )
    lines = summary_lines(replays) + [""] + markdown(replays, args.jobs)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps([asdict(r) for r in replays], indent=2) + "\n")
    print("\n".join(lines))
    if args.doc:
        text = DOC.read_text()
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        DOC.write_text(head + START + "\n" + "\n".join(lines) + "\n" + END + tail)


if __name__ == "__main__":
    main()
