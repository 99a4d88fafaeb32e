"""Queues: per-team GPU quota per flavor, optionally in a cohort that lends idle quota between members."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from corral.core.units import gpus_to_milli


class QueueSpec(BaseModel):
    """A team's queue. Quota is nominal GPUs per flavor; a flavor not listed has zero nominal quota."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str = Field(min_length=1)
    cohort: str | None = Field(
        default=None, description="Queues in one cohort lend unused quota to each other."
    )
    quota: dict[str, float] = Field(default_factory=dict, description="Nominal GPUs per flavor.")
    borrowing_limit: dict[str, float] | None = Field(
        default=None, description="Most GPUs per flavor this queue may borrow; absent = no limit."
    )
    weight: float = Field(default=1.0, gt=0, description="Fair-share weight.")

    def nominal_milli(self, flavor: str) -> int:
        return gpus_to_milli(self.quota.get(flavor, 0.0))

    def borrow_limit_milli(self, flavor: str) -> int | None:
        """Most milli-GPUs this queue may borrow in ``flavor``; None = unlimited."""
        if self.borrowing_limit is None or flavor not in self.borrowing_limit:
            return None
        return gpus_to_milli(self.borrowing_limit[flavor])
