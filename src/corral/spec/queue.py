"""A queue as an admin writes it: the scheduler's quota (``QueueSpec``) plus who may submit to it."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from corral.core.queues import QueueSpec


class QueueConfig(QueueSpec):
    """Who may use a queue is the control plane's business, not the scheduler's: ``tenants`` stays here and
    the scheduler gets the plain ``QueueSpec`` (``spec()``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenants: list[str] | None = Field(
        default=None, description="Tenants whose members may submit here; null: every tenant."
    )

    def admits(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants

    def spec(self) -> QueueSpec:
        return QueueSpec(**self.model_dump(exclude={"tenants"}))


DEFAULT_QUEUE = QueueConfig(name="default", quota=None)
"""What a new control plane without configured queues gets: open to every tenant, no quota."""
