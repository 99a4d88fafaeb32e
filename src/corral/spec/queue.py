"""A queue as an admin writes it: the scheduler's quota (``QueueSpec``) plus who may submit to it."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from corral.core.queues import QueueSpec
from corral.limits import MAX_SECONDS, MAX_WEIGHT, NAME_MAX, Name

GpusPerFlavor = dict[Name, Annotated[float, Field(ge=0, le=MAX_WEIGHT)]]


class QueueConfig(QueueSpec):
    """Who may use a queue is the control plane's business, not the scheduler's: ``tenants`` stays here and
    the scheduler gets the plain ``QueueSpec`` (``spec()``).

    It is also what the API stores, so its names fit the store's columns and its numbers are finite and
    bounded (the scheduler's ``QueueSpec`` is as loose as the scenario files it reads)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: Name
    cohort: Name | None = Field(
        default=None, description="Queues in one cohort lend unused quota to each other."
    )
    quota: GpusPerFlavor | None = Field(
        default_factory=dict, description="Nominal GPUs per flavor; null: no quota (any idle GPU)."
    )
    borrowing_limit: GpusPerFlavor | None = Field(
        default=None, description="Most GPUs per flavor this queue may borrow; absent = no limit."
    )
    weight: float = Field(default=1.0, gt=0, le=MAX_WEIGHT, description="Fair-share weight.")
    burst_after_seconds: float | None = Field(
        default=None,
        ge=0,
        le=MAX_SECONDS,
        description="A job may use public (cloud) clusters only after waiting this long; null: at once.",
    )
    tenants: list[Annotated[str, Field(min_length=1, max_length=NAME_MAX)]] | None = Field(
        default=None,
        max_length=10_000,
        description="Tenants whose members may submit here; null: every tenant.",
    )

    @model_validator(mode="after")
    def _budget_is_finite(self) -> QueueConfig:
        if self.budget is not None and not math.isfinite(self.budget.usd):
            raise ValueError("budget.usd must be a finite number")
        return self

    def admits(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants

    def spec(self) -> QueueSpec:
        return QueueSpec(**self.model_dump(exclude={"tenants"}))


DEFAULT_QUEUE = QueueConfig(name="default", quota=None)
"""What a new control plane without configured queues gets: open to every tenant, no quota."""
