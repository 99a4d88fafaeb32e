"""What budgeted queues spend on public clusters, charge by charge, as the control plane's ledger keeps it.

A charge runs from a pod's start to its stop at the pool's price; a queue's spend in a budget period is
the part of its charges inside the period, so a job running across midnight is paid from both days.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.core.budgets import BudgetSpec, period_bounds


@dataclass
class _Charge:
    usd_per_second: float
    start: float
    end: float | None = None

    def within(self, start: float, end: float) -> float:
        stop = end if self.end is None else min(self.end, end)
        return max(stop - max(self.start, start), 0.0) * self.usd_per_second


class SpendLedger:
    """Public charges of the queues that have a budget; others are not recorded here."""

    def __init__(self, budgets: dict[str, BudgetSpec]) -> None:
        self._budgets = budgets
        self._charges: dict[str, list[_Charge]] = {queue: [] for queue in budgets}
        self._open: dict[str, tuple[str, _Charge]] = {}
        self._per_period: dict[str, dict[float, float]] = {queue: {} for queue in budgets}
        """Per budgeted queue, what its ended charges spent in each period (by the period's start)."""

    def __bool__(self) -> bool:
        return bool(self._budgets)

    @property
    def budgets(self) -> dict[str, BudgetSpec]:
        return self._budgets

    def open(self, job: str, queue: str, usd_per_second: float, t: float) -> None:
        if queue in self._budgets and usd_per_second > 0:
            charge = _Charge(usd_per_second, t)
            self._charges[queue].append(charge)
            self._open[job] = (queue, charge)

    def close(self, job: str, t: float) -> None:
        opened = self._open.pop(job, None)
        if opened is not None:
            queue, charge = opened
            charge.end = t
            self._book(queue, charge, t)

    def peak_period_spend(self, now: float) -> dict[str, float]:
        """Each budgeted queue's largest spend in any one of its budget periods, up to ``now``: what a
        budget is judged by, where the replay's total over several periods may well exceed it."""
        booked = {queue: dict(periods) for queue, periods in self._per_period.items()}
        for queue, charge in self._open.values():
            self._book(queue, charge, now, booked)
        return {queue: max(periods.values(), default=0.0) for queue, periods in booked.items()}

    def _book(
        self, queue: str, charge: _Charge, end: float, into: dict[str, dict[float, float]] | None = None
    ) -> None:
        """Add ``charge`` (up to ``end``) to each period it ran in."""
        periods = (self._per_period if into is None else into)[queue]
        period = self._budgets[queue].period
        t = charge.start
        while t < end:
            start, stop = period_bounds(t, period)
            periods[start] = periods.get(start, 0.0) + charge.within(start, min(stop, end))
            t = stop

    def spent(self, now: float) -> dict[str, float]:
        """Each budgeted queue's public spend in its current period, up to ``now``; charges that ended
        before the period are dropped, since no later question can reach them."""
        spent = {}
        for queue, budget in self._budgets.items():
            start, _ = period_bounds(now, budget.period)
            charges = self._charges[queue] = [
                c for c in self._charges[queue] if c.end is None or c.end > start
            ]
            spent[queue] = sum(c.within(start, now) for c in charges)
        return spent
