"""What the API returns, shared by the server and the Python client (which must not import the server)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JOB_STATUSES = ("pending", "running", "finished", "failed", "cancelled")


class Job(BaseModel):
    id: str
    name: str
    tenant: str
    queue: str
    status: str
    """pending, running, finished, failed or cancelled."""
    submitted_at: float
    started_at: float | None
    ended_at: float | None
    reason: str | None
    """Why it waits, failed or was cancelled."""
    spec: dict[str, Any]


class Why(BaseModel):
    id: str
    status: str
    reason: str | None


class NodeState(BaseModel):
    name: str
    cluster: str
    pool: str
    gpus: int
    gpu_model: str | None
    last_heartbeat: float | None
    """Unix seconds; None when its agent was never heard from."""


class PodExit(BaseModel):
    """An agent's report that a pod's process ended."""

    attempt: int
    code: int


class JobEventOut(BaseModel):
    t: float
    """Unix seconds."""
    kind: str
    """submitted, started, preempted, node_lost, rejected, finished, failed or cancelled."""
    reason: str | None


class QueueState(BaseModel):
    name: str
    cohort: str | None
    quota: dict[str, float] | None
    """Nominal GPUs per flavor; None: no quota."""
    borrowing_limit: dict[str, float] | None
    weight: float
    tenants: list[str] | None
    """Tenants whose members may submit; None: every tenant."""
    pending: int
    running: int
    yours: bool
    """Whether the caller's tenant may submit here."""


class Cohort(BaseModel):
    name: str
    queues: list[str]
    quota: dict[str, float]
    """Summed nominal GPUs per flavor of the member queues."""


Role = Literal["admin", "member", "viewer", "agent"]


class Me(BaseModel):
    user: str
    tenant: str
    role: Role
    token_id: str


class NewTenant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
    tenant: str
    role: Role = "member"


class UserInfo(BaseModel):
    name: str
    tenant: str
    role: Role


class NewToken(BaseModel):
    user: str
    token: str
    """Shown once: only its hash is stored."""


class TokenInfo(BaseModel):
    id: str
    user: str
    created_at: float
