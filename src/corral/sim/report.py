"""Turning a replay into its summary: waits, completion times, GPU allocation, cost.

Kept apart from the engine so the engine only records facts and this module owns every definition of a
metric (what counts as a wait, a miss, an hour of GPU).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from corral.core.budgets import BudgetSpec
from corral.core.workloads import Workload
from corral.scenario.models import QueueSummary, RejectedJob, Summary

REJECTED_SHOWN = 5
"""Rejections the summary spells out with their messages; the rest are only counted by reason."""


@dataclass
class JobRecord:
    workload: Workload
    first_start: float | None = None
    end: float | None = None
    outcome: str | None = None  # finished | rejected
    rejection: tuple[str, str] | None = None  # (reason code, message) when rejected


@dataclass
class ReplayTally:
    """Facts the engine accumulates while it replays; ``summarize`` turns them into a ``Summary``."""

    jobs: dict[str, JobRecord] = field(default_factory=dict)
    gpu_seconds: float = 0.0
    capacity_gpu_seconds: float = 0.0
    cost_usd: float = 0.0
    cost_per_queue: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    gpu_seconds_per_queue: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    preemptions_per_queue: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    preemptions: int = 0
    lost_gpu_seconds: float = 0.0
    """GPU-seconds of work thrown away by preemptions: what each victim had done since its last
    checkpoint, times the GPUs it held (the cost of thrash that the preemption count alone hides)."""
    zero_length_runs: int = 0
    """Runs preempted at the instant they started: a start the scheduler took back in the same round
    chain, the sign of two decisions undoing each other."""
    scheduler_seconds: float = 0.0
    rounds: int = 0
    forecast_seconds: float = 0.0
    forecasts: int = 0
    gpu_seconds_idled_by_limits: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    """Per queue, GPU-seconds left idle while jobs that would fit them waited only on the queue's
    borrowing limit: idleness a limit caused, not a lack of demand."""
    budgets: dict[str, BudgetSpec] = field(default_factory=dict)
    peak_period_cost: dict[str, float] = field(default_factory=dict)
    """Per budgeted queue, its largest public spend in one budget period (``SpendLedger``)."""
    first_time: float | None = None
    last_time: float = 0.0

    def reject(self, job: str, now: float, reason: str, message: str) -> None:
        record = self.jobs[job]
        record.outcome, record.end, record.rejection = "rejected", now, (reason, message)

    def add_usage(self, queue: str, gpu_milli: int, seconds: float, gpu_hour_cost: float) -> None:
        gpu_seconds = gpu_milli / 1000 * seconds
        self.gpu_seconds += gpu_seconds
        self.gpu_seconds_per_queue[queue] += gpu_seconds
        cost = gpu_seconds / 3600 * gpu_hour_cost
        self.cost_usd += cost
        if cost:
            self.cost_per_queue[queue] += cost


def summarize(tally: ReplayTally, policy: str) -> Summary:
    records = list(tally.jobs.values())
    waits = [r.first_start - r.workload.submit for r in records if r.first_start is not None]
    finished = [r for r in records if r.outcome == "finished"]
    jcts = [r.end - r.workload.submit for r in finished if r.end is not None]
    makespan = tally.last_time - (tally.first_time or 0.0)
    misses = sum(
        1
        for r in records
        if r.workload.deadline is not None
        and r.outcome != "rejected"
        and (r.end if r.outcome == "finished" and r.end is not None else tally.last_time)
        > r.workload.deadline
    )
    by_reason, shown = _rejections(records)
    return Summary(
        policy=policy,
        jobs=len(records),
        finished=len(finished),
        rejected=sum(1 for r in records if r.outcome == "rejected"),
        waiting=sum(1 for r in records if r.outcome is None),
        preemptions=tally.preemptions,
        lost_gpu_hours=tally.lost_gpu_seconds / 3600,
        gpu_hours_idled_by_limits=sum(tally.gpu_seconds_idled_by_limits.values()) / 3600,
        zero_length_runs=tally.zero_length_runs,
        gpu_hours_used=tally.gpu_seconds / 3600,
        gpu_allocation=tally.gpu_seconds / tally.capacity_gpu_seconds if tally.capacity_gpu_seconds else 0.0,
        makespan=makespan,
        wait_p50=_percentile(waits, 50),
        wait_p95=_percentile(waits, 95),
        jct_mean=float(np.mean(jcts)) if jcts else 0.0,
        jct_p95=_percentile(jcts, 95),
        cost_usd=tally.cost_usd,
        cost_per_queue=dict(tally.cost_per_queue),
        deadline_misses=misses,
        scheduler_seconds=tally.scheduler_seconds,
        scheduling_rounds=tally.rounds,
        forecast_seconds=tally.forecast_seconds,
        forecasts=tally.forecasts,
        queues=_per_queue(tally, records),
        rejected_by_reason=by_reason,
        rejected_jobs=shown,
    )


def _rejections(records: list[JobRecord]) -> tuple[dict[str, int], list[RejectedJob]]:
    """Rejections by reason, and the first few in full: a count alone does not say what to fix."""
    rejected = sorted(
        (r.end or 0.0, r.workload.id, r.rejection)
        for r in records
        if r.outcome == "rejected" and r.rejection is not None
    )
    by_reason: dict[str, int] = defaultdict(int)
    for _, _, (reason, _) in rejected:
        by_reason[reason] += 1
    shown = [
        RejectedJob(job=job, t=t, reason=reason, message=message)
        for t, job, (reason, message) in rejected[:REJECTED_SHOWN]
    ]
    return dict(sorted(by_reason.items())), shown


def _per_queue(tally: ReplayTally, records: list[JobRecord]) -> dict[str, QueueSummary]:
    """What each team got: the numbers fair share is judged by."""
    by_queue: dict[str, list[JobRecord]] = defaultdict(list)
    for record in records:
        by_queue[record.workload.queue].append(record)
    result = {}
    for queue, queue_records in sorted(by_queue.items()):
        waits = [r.first_start - r.workload.submit for r in queue_records if r.first_start is not None]
        result[queue] = QueueSummary(
            jobs=len(queue_records),
            finished=sum(1 for r in queue_records if r.outcome == "finished"),
            waiting=sum(1 for r in queue_records if r.outcome is None),
            wait_p50=_percentile(waits, 50),
            wait_p95=_percentile(waits, 95),
            gpu_hours=tally.gpu_seconds_per_queue.get(queue, 0.0) / 3600,
            preemptions=tally.preemptions_per_queue.get(queue, 0),
            gpu_hours_idled_by_limit=tally.gpu_seconds_idled_by_limits.get(queue, 0.0) / 3600,
            cost_usd=tally.cost_per_queue.get(queue, 0.0),
            **_budget(tally, queue),
        )
    return result


def _budget(tally: ReplayTally, queue: str) -> dict[str, object]:
    budget = tally.budgets.get(queue)
    if budget is None:
        return {}
    return {
        "budget_usd": budget.usd,
        "budget_period": budget.period.value,
        "peak_period_cost_usd": tally.peak_period_cost.get(queue, 0.0),
    }


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0
