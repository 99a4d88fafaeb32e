"""Which waiting job of a queue goes first within a priority band: by submission, or by response ratio.

Under contention, the order of a queue decides its waits. Submission order (FIFO) makes a two-minute job
wait behind every day-long gang submitted before it; shortest-job-first removes that but starves long
jobs for as long as short ones keep arriving. Highest Response Ratio Next (HRRN, Brinch Hansen 1971)
takes both into account: a job's ratio is ``(wait + expected run time) / expected run time``, so a short
job overtakes a long one soon after it arrives, and every job's ratio grows with its wait, so a long job
is not passed over forever (it overtakes any newcomer once it has waited as many multiples of its run
time as the newcomer has of its own). Measured on the contended `mixed` and `gangs` scenarios, it is most
of what brings `default` under `fifo` in mean JCT and p95 wait; its price is the longest waits of long
jobs and a later makespan (docs/benchmarks.md, "Policies under contention").

One exception, for the end of a busy spell: a job expected to run at least as long as the cluster needs
to finish all the work it knows of (the running jobs' estimated GPU-time left plus every waiting job's,
over its GPUs: ``drain_horizon``) goes first, longest first. Such a job ends last wherever it stands in
the order; holding it back lets the others use its GPUs meanwhile, but then it runs alone on an
otherwise idle cluster once they are done, which is what the ratio did to the longest gangs of the
contended replays (Graham's longest-processing-time argument for the makespan). While the queue is deep
the horizon is long and no job is moved.

Run times are estimated, never known: the run-time estimates learned from finished jobs, else the
declared time limit, else an hour (``corral.scheduling.backfill.total_runtime``), less the checkpointed
progress of a requeued job. Priority bands and fair share between queues are untouched: the ratio only
orders jobs of one queue and one priority.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from enum import StrEnum

from corral.core.workloads import Workload


class JobOrder(StrEnum):
    SUBMISSION = "submission"  # earliest submitted first (FIFO)
    RESPONSE_RATIO = "response-ratio"  # highest (wait + expected) / expected first (HRRN)


MIN_EXPECTED_SECONDS = 60.0
"""The shortest run time a ratio assumes: a job estimated at seconds would otherwise overtake a queue of
jobs that have waited hours the instant it arrives, on an estimate that coarse."""


def response_ratio(wait: float, expected: float) -> float:
    """``(wait + expected) / expected``: 1 on arrival, growing by one for every expected run time waited."""
    expected = max(expected, MIN_EXPECTED_SECONDS)
    return (max(wait, 0.0) + expected) / expected


def order_by_response_ratio(
    jobs: list[Workload],
    now: float,
    expected_left: Callable[[Workload], float],
    horizon: float = math.inf,
) -> None:
    """Sort ``jobs`` (in submission order) in place, highest response ratio first; equal ratios keep
    their order, so jobs of one size stay first come, first served. Jobs expected to run at least
    ``horizon`` seconds (``drain_horizon``) go before all others, longest first."""

    def key(job: Workload) -> tuple[int, float]:
        left = expected_left(job)
        if left >= horizon:
            return (0, -left)
        return (1, -response_ratio(now - job.submit, left))

    jobs.sort(key=key)


def drain_horizon(
    waiting: Iterable[Workload],
    expected_left: Callable[[Workload], float],
    running_gpu_seconds: float,
    gpus: float,
) -> float:
    """Seconds the cluster's ``gpus`` would need to finish all the work it knows of: the GPU-seconds the
    running jobs have left and every waiting job's, by the estimates. A job expected to run longer ends
    last whatever its place in the order (infinite without GPUs: then no job is)."""
    if gpus <= 0:
        return math.inf
    work = sum(job.gpu_demand_milli / 1000 * expected_left(job) for job in waiting)
    return (work + running_gpu_seconds) / gpus
