"""Pydantic models of the scenario files, exactly as ``../shared/spec/scenario-format.md`` fixes them.

Readers ignore fields they do not know (the format allows extra fields); corral's extensions are listed in
``docs/scenario-extensions.md``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from corral.core.cluster import ClusterSpec
from corral.core.queues import QueueSpec

JobEventKind = Literal["submitted", "started", "preempted", "finished", "failed", "rejected"]
NodeEventKind = Literal["node_added", "node_removed", "node_down", "node_up"]
JOB_EVENTS: frozenset[str] = frozenset(JobEventKind.__args__)  # type: ignore[attr-defined]
NODE_EVENTS: frozenset[str] = frozenset(NodeEventKind.__args__)  # type: ignore[attr-defined]
RESERVED_EVENT = "reserved"
"""corral's extension (docs/scenario-extensions.md): capacity held for a waiting job until ``until``."""


class ClusterFile(BaseModel):
    """The cluster file: clusters with their pools, and optionally queues with quotas."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    clusters: list[ClusterSpec] = Field(min_length=1)
    queues: list[QueueSpec] | None = Field(
        default=None, description="Without it, every workload's queue gets unlimited quota."
    )

    @model_validator(mode="after")
    def _check_unique_names(self) -> ClusterFile:
        _require_unique("cluster", [c.name for c in self.clusters])
        _require_unique("pool", [p.name for c in self.clusters for p in c.pools])
        _require_unique("queue", [q.name for q in self.queues or []])
        return self


def _require_unique(kind: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{kind} name {name!r} is used twice; {kind} names must be unique in the file")
        seen.add(name)


class PodPlacement(BaseModel):
    """Where one pod of a started job runs, and what it holds there."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    pod: int = Field(ge=0)
    node: str
    gpus: list[int] = Field(default_factory=list)
    gpu_milli: int = Field(default=0, ge=0, le=1000)
    gpu_memory_gib: float = Field(default=0.0, ge=0)
    cpu: float = Field(default=0.0, ge=0)
    memory_gib: float = Field(default=0.0, ge=0)


class Event(BaseModel):
    """One line of the event log: a job event (with ``job``) or a cluster event (with ``node``)."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    t: float
    event: str
    job: str | None = None
    node: str | None = None
    cluster: str | None = None
    placements: list[PodPlacement] | None = None
    reason: str | None = None
    until: float | None = None
    """Only on ``reserved`` events: when the reservation lapses."""

    @model_validator(mode="after")
    def _check_subject(self) -> Event:
        if (self.event in JOB_EVENTS or self.event == RESERVED_EVENT) and not self.job:
            raise ValueError(f"a {self.event!r} event needs 'job'")
        if self.event in NODE_EVENTS and not self.node:
            raise ValueError(f"a {self.event!r} event needs 'node'")
        if self.event == "started" and not self.placements:
            raise ValueError("a 'started' event needs 'placements'")
        if self.event == RESERVED_EVENT and (not self.placements or self.until is None):
            raise ValueError("a 'reserved' event needs 'placements' and 'until'")
        return self

    def to_json_dict(self) -> dict[str, object]:
        """The event as the log writes it: without the fields it does not use."""
        return self.model_dump(mode="json", exclude_none=True)


class QueueSummary(BaseModel):
    """One queue's share of a replay."""

    jobs: int
    finished: int
    waiting: int
    wait_p50: float
    wait_p95: float
    gpu_hours: float
    preemptions: int
    gpu_hours_idled_by_limit: float = 0.0
    """GPU-hours left idle while this queue's jobs that would fit them waited only on its borrowing
    limit (its cohort had the quota to lend)."""
    cost_usd: float
    budget_usd: float | None = None
    """The queue's budget per period on public clusters, if it has one."""
    budget_period: str | None = None
    """``day`` or ``month``."""
    peak_period_cost_usd: float | None = None
    """The most it spent on public clusters in any one budget period: the figure its budget caps (the
    replay's ``cost_usd`` may span several periods)."""


class RejectedJob(BaseModel):
    """One rejected job, as the summary shows it: enough to go and fix the job or the cluster file."""

    job: str
    t: float
    reason: str
    """Machine-readable cause (``corral.scheduling.decisions.PendingReason``), e.g. ``never_fits``."""
    message: str


class Summary(BaseModel):
    """What a replay achieved; the fields the format requires, plus corral's own (``policy`` and more)."""

    model_config = ConfigDict(extra="allow")

    policy: str
    jobs: int
    finished: int
    rejected: int
    waiting: int = 0
    preemptions: int = 0
    lost_gpu_hours: float = 0.0
    zero_length_runs: int = 0
    gpu_hours_idled_by_limits: float = 0.0
    """GPU-hours left idle only because borrowing limits refused jobs that would fit: when this is not
    zero, a limit, not demand, idled GPUs (see ``queues`` for which)."""
    gpu_hours_used: float
    gpu_allocation: float
    makespan: float
    wait_p50: float
    wait_p95: float
    jct_mean: float
    jct_p95: float
    cost_usd: float
    cost_per_queue: dict[str, float] = Field(default_factory=dict)
    deadline_misses: int
    scheduler_seconds: float
    scheduling_rounds: int = 0
    forecast_seconds: float = 0.0
    """Time spent forecasting private starts for burst decisions; not part of ``scheduler_seconds``."""
    forecasts: int = 0
    rejected_by_reason: dict[str, int] = Field(default_factory=dict)
    """Rejected jobs counted by reason code."""
    rejected_jobs: list[RejectedJob] = Field(default_factory=list)
    """The first rejections (at most ``corral.sim.report.REJECTED_SHOWN``), earliest first."""
    queues: dict[str, QueueSummary] = Field(default_factory=dict)
