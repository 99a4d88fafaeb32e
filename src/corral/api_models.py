"""What the API returns, shared by the server and the Python client (which must not import the server)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

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
