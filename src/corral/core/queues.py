"""Queues: per-team GPU quota per flavor, optionally in a cohort that lends idle quota between members."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from corral.core.budgets import BudgetSpec
from corral.core.units import gpus_to_milli

MAX_QUOTA_GPUS = 1_000_000
"""The most GPUs a quota or a borrowing limit may name: beyond any fleet, and far enough from the float
range that milli-GPU sums stay finite integers (a quota of 1e308 GPUs overflowed to infinity)."""

GPUAmount = Annotated[float, Field(ge=0, le=MAX_QUOTA_GPUS, allow_inf_nan=False)]
"""GPUs of quota or of a borrowing limit: none below zero, none infinite (an unlimited queue is
``quota: null``, an unlimited borrower has no ``borrowing_limit`` for the flavor)."""


class QueueSpec(BaseModel):
    """A team's queue. Quota is nominal GPUs per flavor; a flavor not listed has zero nominal quota.

    ``quota: null`` (corral's extension of the scenario format) is a queue without quota, limited only by
    the GPUs that exist: what a single-team installation wants, and the control plane's ``default`` queue.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    name: str = Field(min_length=1)
    cohort: str | None = Field(
        default=None, description="Queues in one cohort lend unused quota to each other."
    )
    quota: dict[str, GPUAmount] | None = Field(
        default_factory=dict, description="Nominal GPUs per flavor; null: no quota (any idle GPU)."
    )
    borrowing_limit: dict[str, GPUAmount] | None = Field(
        default=None, description="Most GPUs per flavor this queue may borrow; absent = no limit."
    )
    weight: float = Field(default=1.0, gt=0, description="Fair-share weight.")
    burst_after_seconds: float | None = Field(
        default=None,
        ge=0,
        description="A job may use public (cloud) clusters only after waiting this long; null: at once.",
    )
    wait_usd_per_hour: float | None = Field(
        default=None,
        ge=0,
        description="What an hour of a job's waiting is worth: a job bursts at once when its forecast "
        "private wait, at this price, is worth more than bursting costs; null: rule not used.",
    )
    budget: BudgetSpec | None = Field(
        default=None, description="USD this queue may spend on public clusters per day or month."
    )

    @model_validator(mode="after")
    def _cohort_members_have_quota(self) -> QueueSpec:
        if self.quota is None and self.cohort is not None:
            raise ValueError(f"queue {self.name}: a queue without quota cannot lend or borrow in a cohort")
        return self

    @property
    def unlimited(self) -> bool:
        return self.quota is None

    def nominal_milli(self, flavor: str) -> int:
        return gpus_to_milli((self.quota or {}).get(flavor, 0.0))

    def borrow_limit_milli(self, flavor: str) -> int | None:
        """Most milli-GPUs this queue may borrow in ``flavor``; None = unlimited."""
        if self.borrowing_limit is None or flavor not in self.borrowing_limit:
            return None
        return gpus_to_milli(self.borrowing_limit[flavor])
