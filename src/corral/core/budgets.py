"""Budgets: what a queue may spend on public (cloud) clusters per day or month.

Owned GPUs are paid for already; a budget caps the money that leaves the organisation. Periods are UTC
calendar days and months on the clock's own timeline: Unix seconds in the control plane, scenario seconds
in the simulator (where t=0 is read as 1970-01-01T00:00Z), so both account alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

SECONDS_PER_DAY = 86_400.0


class BudgetPeriod(StrEnum):
    DAY = "day"
    MONTH = "month"


class Enforcement(StrEnum):
    HARD = "hard"
    """Never exceeded by burst work: a burst that would not fit is not started, and burst work still
    running when the money is spent is stopped (checkpointed and requeued to private clusters)."""
    FLEX = "flex"
    """May be exceeded: once spent, only jobs that would otherwise miss their deadline burst."""


class BudgetSpec(BaseModel):
    """USD a queue may spend on public clusters per period."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    usd: float = Field(ge=0, description="USD per period on public clusters.")
    period: BudgetPeriod = Field(default=BudgetPeriod.MONTH, description="day or month (UTC).")
    enforcement: Enforcement = Field(default=Enforcement.HARD, description="hard or flex.")

    @property
    def hard(self) -> bool:
        return self.enforcement is Enforcement.HARD


def period_bounds(t: float, period: BudgetPeriod) -> tuple[float, float]:
    """The [start, end) of the budget period that contains ``t``."""
    if period is BudgetPeriod.DAY:
        start = (t // SECONDS_PER_DAY) * SECONDS_PER_DAY
        return start, start + SECONDS_PER_DAY
    moment = datetime.fromtimestamp(t, UTC)
    first = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (
        first.replace(year=first.year + 1, month=1)
        if first.month == 12
        else first.replace(month=first.month + 1)
    )
    return first.timestamp(), following.timestamp()
