"""What a control-plane round that asks for a forecast costs: the replay inside it, or on a thread.

    .venv/bin/python benchmarks/forecast_round.py [--pending 1000] [--rounds 15]
        [--out benchmarks/results/forecast-round.json]

Three stores as ``round_time.py`` fills them (``--pending`` waiting jobs of 1 GPU, one node of 8 GPUs),
each round after 8 exits, with a forecast due in every round (its clock moves ``STEP_SECONDS`` a
round). "inline" makes it inside the round (``Forecasting``: what every round that forecast did before);
"background" hands it to the forecast thread (``BackgroundForecasting``: the loop now), whose replay
begins when the round is over (``round_done``, as the loop does) and is waited for after the timing, so
the next round starts alike. The baseline, "reused", is a round that uses a forecast made before
(the clock moves ``REUSED_STEP_SECONDS`` a round, so none is due), as most rounds do; "none" makes and
uses none (a forecast costs the scheduler too: each job it covers is decided on its own). The rounds of the three are taken in turn, so the machine's load touches them alike. Reported:
the median and slowest round, the median as a ratio to "reused", and the median replay seconds. Writes
the JSON and the table between the ``forecast_round`` markers of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from report import publish, write_result
from round_time import GPUS, fill

from corral.control.active import ActiveJobs
from corral.control.forecaster import BackgroundForecasting
from corral.control.forecasting import Forecasting
from corral.control.inventory import local_cluster
from corral.control.reconcile import Inventory, reconcile
from corral.scheduling import SchedulingResult, get_policy
from corral.sim.engine import replay_first_starts
from corral.store.database import open_store
from corral.store.jobs import JobStore

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
MODES = ("none", "reused", "inline", "background")
STEP_SECONDS = 100.0
"""The store's and the rounds' clock moves this much a round: more than any gap between two forecasts
(``REFRESH_SECONDS``, a replay's time over ``TIME_SHARE``), so every round has one due."""
REUSED_STEP_SECONDS = 0.05
"""The clock's step for "reused": a forecast is due only every ``MIN_GAP_SECONDS`` (40 rounds)."""


class Queue:
    """One store of waiting jobs and the loop's kept state, forecasting as ``mode`` says."""

    def __init__(self, folder: str, pending: int, rounds: int, mode: str) -> None:
        self.now = time.time()
        self.store = JobStore(open_store(f"sqlite:///{folder}/corral.db"), clock=lambda: self.now)
        fill(self.store, pending + GPUS * (rounds + 1))
        self.inventory = Inventory(clusters=[local_cluster(GPUS)])
        self.policy = get_policy("default")
        self.jobs = ActiveJobs(full_read_seconds=float("inf"))  # no periodic full read: the clocks differ
        self.replays: list[float] = []
        self.forecasting: Forecasting | None = None
        self.step = REUSED_STEP_SECONDS if mode == "reused" else STEP_SECONDS
        if mode in ("inline", "reused"):
            self.forecasting = Forecasting(replay_first_starts, on_forecast=self.replays.append)
        elif mode == "background":
            self.forecasting = BackgroundForecasting(
                replay_first_starts, self.replays.append, after_round=True
            )
        self.result: SchedulingResult | None = None
        self.round()

    def round(self) -> float:
        """The 8 running jobs finish (not timed), then one timed round with a forecast due."""
        self.now += self.step
        for start in self.result.starts if self.result is not None else ():
            self.store.finish(start.job, succeeded=True)
        started = time.perf_counter()
        self.result = reconcile(
            self.store.engine, self.inventory, self.policy, self.now, self.jobs, self.forecasting
        )
        took = time.perf_counter() - started
        if isinstance(self.forecasting, BackgroundForecasting):
            self.forecasting.round_done()
            assert self.forecasting.wait(60), "a replay did not end"
        assert len(self.result.starts) == GPUS, f"a round started {len(self.result.starts)} jobs, not {GPUS}"
        return took

    def close(self) -> None:
        if isinstance(self.forecasting, BackgroundForecasting):
            self.forecasting.close()
        self.store.engine.dispose()


def measure(pending: int, rounds: int) -> dict[str, dict[str, float]]:
    with ExitStack() as stack:
        queues = {
            mode: Queue(stack.enter_context(tempfile.TemporaryDirectory()), pending, rounds, mode)
            for mode in MODES
        }
        took: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(rounds):
            for mode, queue in queues.items():
                took[mode].append(queue.round())
        for queue in queues.values():
            queue.close()
    return {
        mode: {
            "median": statistics.median(took[mode]),
            "max": max(took[mode]),
            "replay": statistics.median(queues[mode].replays) if queues[mode].replays else 0.0,
            "replays": len(queues[mode].replays),
        }
        for mode in MODES
    }


def table(result: dict[str, object]) -> list[str]:
    runs = result["runs"]
    assert isinstance(runs, dict)
    base = runs["reused"]["median"]
    lines = [
        f"Command: `{result['command']}` ({result['date']}, {result['machine']}, Python {result['python']}); "
        f"{result['pending']:,} jobs waiting, {result['rounds']} rounds each, one node of {GPUS} GPUs, "
        "8 exits and 8 starts per round, a forecast due in every round.",
        "",
        "| forecast | round ms (median) | slowest ms | median / reused | replay ms (median) | replays |",
        "|---|---|---|---|---|---|",
    ]
    for mode in MODES:
        run = runs[mode]
        lines.append(
            f"| {mode} | {run['median'] * 1000:.1f} | {run['max'] * 1000:.1f} | {run['median'] / base:.2f}x "
            f"| {run['replay'] * 1000:.0f} | {run['replays']} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "forecast-round.json")
    args = parser.parse_args()
    runs = measure(args.pending, args.rounds)
    print(runs, file=sys.stderr)
    result = write_result(args.out, {"pending": args.pending, "rounds": args.rounds, "runs": runs})
    publish("forecast_round", table(result))


if __name__ == "__main__":
    main()
