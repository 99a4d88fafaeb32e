"""What one control-plane round costs as the queue grows: 100, 1,000 and 10,000 jobs waiting.

    .venv/bin/python benchmarks/round_time.py [--pending 100 1000 10000] [--rounds 30] [--clock cpu]
        [--out benchmarks/results/round-time.json]

A store (SQLite in a temporary folder) holds ``--pending`` waiting jobs of `true` asking 1 GPU and 0.1
CPU, and one node of 8 GPUs runs 8 of them. Each measured round is what the reconcile loop does after 8
exits: the 8 running jobs finish (not timed), then ``reconcile`` reads what changed, schedules, and
writes 8 starts and why the others wait (timed), with the loop's kept jobs and forecasting. "kept" is the
loop as it runs; "full read" reads every pending and running row each round (``full_read_seconds=0``:
what every round did before the loop kept its jobs). Reported: the median and the slowest round, and the
median as a ratio to the median with the fewest jobs waiting. The rounds of the queue lengths are taken
in turn (one of each, then again), so the machine's changing load touches them alike. ``--clock cpu``
times the rounds in this process's CPU seconds instead of wall seconds: on a machine shared with other
work, a round's wall time is mostly its wait for a core (10x its CPU time at a load average of 12 on
2 cores), and the CPU time is what the round itself costs. Writes the JSON
and the table between the ``round_time`` markers of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import date
from pathlib import Path

from report import replace_block
from sqlalchemy import insert

from corral.control.active import ActiveJobs
from corral.control.forecasting import Forecasting
from corral.control.inventory import local_cluster
from corral.control.reconcile import Inventory, reconcile
from corral.scheduling import SchedulingResult, get_policy
from corral.sim.engine import replay_first_starts
from corral.spec.job import JobSpec
from corral.store.database import open_store
from corral.store.jobs import JobStore
from corral.store.schema import EventRow, JobRow

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
JOB = JobSpec.model_validate(
    {"name": "round", "command": "true", "resources": {"gpus": 1, "cpu": 0.1, "memory": 0.1}}
)
GPUS = 8
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
"""What a round is timed by: wall seconds, or this process's CPU seconds (``--clock cpu``)."""


def fill(store: JobStore, jobs: int) -> None:
    """``jobs`` submissions as ``JobStore.submit`` stores them (a row and a ``submitted`` event), in one
    transaction: the submissions are not what is measured."""
    now = time.time()
    spec = JOB.model_dump(mode="json")
    ids = [f"j-{index:012d}" for index in range(jobs)]
    rows = [
        {
            "id": i,
            "name": JOB.name,
            "tenant": "default",
            "queue": JOB.queue,
            "status": "pending",
            "spec": spec,
        }
        | {"submitted_at": now, "attempt": 0, "checkpointed_seconds": 0.0}
        for i in ids
    ]
    with store.engine.begin() as connection:
        connection.execute(insert(JobRow), rows)
        connection.execute(insert(EventRow), [{"t": now, "job_id": i, "kind": "submitted"} for i in ids])


class Queue:
    """One store of ``pending`` waiting jobs (and the jobs that will run), with the loop's kept state."""

    def __init__(
        self, folder: str, pending: int, rounds: int, full_read: bool, clock: Callable[[], float]
    ) -> None:
        self.clock = clock
        self.store = JobStore(open_store(f"sqlite:///{folder}/corral.db"))
        fill(self.store, pending + GPUS * (rounds + 1))
        self.inventory = Inventory(clusters=[local_cluster(GPUS)])
        self.policy = get_policy("default")
        self.jobs = ActiveJobs(full_read_seconds=0.0 if full_read else float("inf"))
        self.forecasting = Forecasting(replay_first_starts)
        self.result: SchedulingResult | None = None
        self.first = self.round()

    def round(self) -> float:
        """The 8 running jobs finish (not timed), then one timed round."""
        for start in self.result.starts if self.result is not None else ():
            self.store.finish(start.job, succeeded=True)
        started = self.clock()
        self.result = reconcile(
            self.store.engine, self.inventory, self.policy, time.time(), self.jobs, self.forecasting
        )
        took = self.clock() - started
        assert len(self.result.starts) == GPUS, f"a round started {len(self.result.starts)} jobs, not {GPUS}"
        return took


def measure(
    sizes: list[int], rounds: int, full_read: bool, clock: Callable[[], float] = time.perf_counter
) -> list[dict[str, float]]:
    """Rounds of every queue length taken in turn, so a change in the machine's load (it is shared)
    touches every length alike and the ratios between them hold."""
    with ExitStack() as stack:
        queues = [
            Queue(stack.enter_context(tempfile.TemporaryDirectory()), n, rounds, full_read, clock)
            for n in sizes
        ]
        took: list[list[float]] = [[] for _ in sizes]
        for _ in range(rounds):
            for queue, times in zip(queues, took, strict=True):
                times.append(queue.round())
        for queue in queues:
            queue.store.engine.dispose()
    return [
        {"pending": n, "first": queue.first, "median": statistics.median(times), "max": max(times)}
        for n, queue, times in zip(sizes, queues, took, strict=True)
    ]


def table(result: dict[str, object]) -> list[str]:
    runs = result["runs"]
    assert isinstance(runs, dict)
    lines = [
        f"Command: `{result['command']}` ({result['date']}, {result['machine']}, Python {result['python']}); "
        f"{result['rounds']} rounds each, one node of {GPUS} GPUs, 8 exits and 8 starts per round; "
        f"{result.get('clock', 'wall')} time.",
        "",
        "| jobs waiting | reads | first round ms | round ms (median) | slowest ms | median / fewest |",
        "|---|---|---|---|---|---|",
    ]
    for mode in ("kept", "full read"):
        base = runs[mode][0]["median"]
        for run in runs[mode]:
            lines.append(
                f"| {run['pending']:,} | {mode} | {run['first'] * 1000:.0f} | {run['median'] * 1000:.1f} "
                f"| {run['max'] * 1000:.1f} | {run['median'] / base:.2f}x |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "round-time.json")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"kept": [], "full read": []}
    for mode, runs_of_mode in runs.items():
        runs_of_mode += measure(args.pending, args.rounds, mode == "full read", CLOCKS[args.clock])
        print(mode, runs_of_mode, file=sys.stderr)
    result = {
        "command": "python benchmarks/round_time.py " + " ".join(sys.argv[1:]),
        "date": date.today().isoformat(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "rounds": args.rounds,
        "clock": args.clock,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    DOC.write_text(replace_block(DOC.read_text(), "round_time", table(result)))
    print("\n".join(table(result)))


if __name__ == "__main__":
    main()
