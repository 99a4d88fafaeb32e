"""When a job may leave private clusters for public (cloud) ones, and what its queue's budget allows.

Owned GPUs are free at the margin and cloud GPUs are not, so a burstable job first waits for private
room, and bursts when (a) it has waited its queue's threshold, (b) the forecast says it would start on
private clusters too late to meet its deadline, or (c) the forecast private wait is worth more to its
team than the burst costs. Budgets apply on top of every rule: a queue whose hard budget is spent
bursts nothing until the next period; over a flex budget only rule (b) still bursts. Sensitive and
non-burstable jobs never get this far: feasibility gives them private domains only.

Rule (c) is a queue's choice (``wait_usd_per_hour``): what an hour of a job's waiting is worth to the team.

The forecast (predicted private start and run time per job) comes from the caller, who replays the
current state forward (``corral.forecasting.replay``); without one, rules (b) and (c) are simply not used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.core.budgets import period_bounds
from corral.core.queues import QueueSpec
from corral.core.workloads import Workload

BUDGET_TOLERANCE_USD = 1e-6
"""Spend this close to a hard budget counts as the whole budget: float dust must not start a burst."""


@dataclass(frozen=True)
class Bursting:
    """A policy's rule for using public clusters; budgets are enforced whatever the rule says."""

    enabled: bool = True
    """False: never burst (public clusters are not used at all)."""
    after_seconds: float | None = None
    """Burst after waiting this long, for every queue; None: each queue's own ``burst_after_seconds``
    (a queue without one bursts at once)."""
    deadlines: bool = True
    """Burst early when the forecast private start would miss the job's deadline and bursting would not."""
    wait_value: bool = True
    """Burst at once when the forecast private wait, priced at the queue's ``wait_usd_per_hour``, is worth
    more than the burst would cost."""

    @property
    def uses_forecast(self) -> bool:
        return self.enabled and (self.deadlines or self.wait_value)


@dataclass
class Forecast:
    """What the caller predicts for jobs: when each waiting job would start on private clusters, and how
    long each job runs. A job missing from ``private_start`` has no prediction."""

    private_start: dict[str, float] = field(default_factory=dict)
    runtime: dict[str, float] = field(default_factory=dict)
    guessed: frozenset[str] = frozenset()
    """Jobs whose run time is neither learned from similar jobs nor declared (``time_limit``), only
    assumed: a start that waits on one of them is a guess, not a prediction to show."""

    def runtime_of(self, job: Workload) -> float:
        return self.runtime.get(job.id, job.duration)


@dataclass(frozen=True, slots=True)
class BurstVerdict:
    allowed: bool
    note: str = ""
    """Why the job may or may not burst, for its pending reason."""
    recheck_at: float | None = None
    """When the clock alone may change the verdict (a threshold passes, a period starts)."""


def burst_verdict(
    job: Workload,
    queue: QueueSpec | None,
    rule: Bursting,
    now: float,
    spent_usd: float,
    forecast: Forecast | None,
    public_delay: float,
    gpu_hour_usd: float | None,
) -> BurstVerdict:
    """May ``job`` use public clusters now? ``spent_usd``: its queue's public spend this budget period;
    ``public_delay``: how soon a public node could run it; ``gpu_hour_usd``: the cheapest public price for
    its GPUs."""
    if not rule.enabled:
        return BurstVerdict(False, "this policy never bursts to public clusters")
    budget = queue.budget if queue is not None else None
    over_budget = budget is not None and spent_usd >= budget.usd - BUDGET_TOLERANCE_USD
    if budget is not None and over_budget and budget.hard:
        _, period_end = period_bounds(now, budget.period)
        note = (
            f"queue {job.queue} has spent its hard budget ({spent_usd:.2f} of {budget.usd:g} USD this "
            f"{budget.period})"
        )
        cost = burst_cost(job, forecast, gpu_hour_usd)
        if cost is None or cost > budget.usd:
            return BurstVerdict(False, note)  # no later period's budget could pay for it either
        return BurstVerdict(False, f"{note}; bursting resumes at t={period_end:g} s", period_end)
    deadline = _deadline_verdict(job, rule, now, forecast, public_delay)
    if deadline.allowed:
        return deadline
    if budget is not None and over_budget:
        return BurstVerdict(
            False,
            f"queue {job.queue} is over its flex budget ({spent_usd:.2f} of {budget.usd:g} USD): only jobs "
            "that would miss their deadline burst",
            deadline.recheck_at,
        )
    threshold = rule.after_seconds
    if threshold is None:
        threshold = queue.burst_after_seconds if queue is not None else None
    if threshold is None:
        return BurstVerdict(True)
    burst_at = job.submit + threshold
    if now >= burst_at:
        return BurstVerdict(True)
    if rule.wait_value and queue is not None and queue.wait_usd_per_hour is not None:
        worth = _wait_worth_verdict(job, queue.wait_usd_per_hour, now, forecast, gpu_hour_usd, public_delay)
        if worth is not None:
            return worth
    recheck = burst_at if deadline.recheck_at is None else min(burst_at, deadline.recheck_at)
    source = "the policy's threshold" if rule.after_seconds is not None else "its queue's burst_after_seconds"
    return BurstVerdict(False, f"may burst to public clusters at t={burst_at:g} s ({source})", recheck)


def burst_cost(job: Workload, forecast: Forecast | None, gpu_hour_usd: float | None) -> float | None:
    """USD ``job`` would cost on public GPUs at ``gpu_hour_usd`` for its forecast run time."""
    if gpu_hour_usd is None:
        return None
    runtime = forecast.runtime_of(job) if forecast is not None else job.duration
    return job.gpu_demand_milli / 1000 * runtime / 3600 * gpu_hour_usd


def _deadline_verdict(
    job: Workload, rule: Bursting, now: float, forecast: Forecast | None, public_delay: float
) -> BurstVerdict:
    """Rule (b): burst when private would miss the deadline and public would not; else recheck at the
    last moment a burst could still meet it."""
    if not rule.deadlines or job.deadline is None or forecast is None:
        return BurstVerdict(False)
    start = forecast.private_start.get(job.id)
    if start is None:
        return BurstVerdict(False)
    runtime = forecast.runtime_of(job)
    last_burst = job.deadline - runtime - public_delay
    if last_burst < now:
        return BurstVerdict(False)  # bursting would miss it as well: a miss either way costs nothing more
    if start + runtime > job.deadline:
        return BurstVerdict(
            True,
            f"forecast private start t={start:g} s would miss the deadline t={job.deadline:g} s",
        )
    return BurstVerdict(False, recheck_at=last_burst if last_burst > now else None)


def _wait_worth_verdict(
    job: Workload,
    usd_per_hour: float,
    now: float,
    forecast: Forecast | None,
    gpu_hour_usd: float | None,
    public_delay: float,
) -> BurstVerdict | None:
    """Rule (c): the wait a burst saves (the forecast private wait less the public start delay), priced
    at what the team says an hour of waiting is worth, exceeds the burst's cost. Many short jobs hit by a
    queue burst cheaply; a long job waits its turn unless its wait would be very long."""
    start = forecast.private_start.get(job.id) if forecast is not None else None
    if start is None or gpu_hour_usd is None:
        return None
    saved = start - now - public_delay
    if saved <= 0:
        return None
    cost = burst_cost(job, forecast, gpu_hour_usd)
    assert cost is not None
    worth = saved / 3600 * usd_per_hour
    if worth < cost:
        return None
    return BurstVerdict(
        True, f"bursting saves a forecast {saved:.0f} s of waiting, worth {worth:.2f} USD, for {cost:.2f} USD"
    )
