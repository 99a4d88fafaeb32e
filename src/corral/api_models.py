"""What the API returns, shared by the server and the Python client (which must not import the server)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from corral.federation.artifacts import ArtifactKind
from corral.limits import (
    GPU_MODEL_MAX,
    INT32_MAX,
    MAX_CPU,
    MAX_EXIT_CODE,
    MAX_GPUS_PER_POD,
    MAX_LOG_CHUNK_CHARS,
    MAX_LOG_OFFSET,
    MAX_MEMORY_GIB,
    MAX_PATH_CHARS,
    NAME_MAX,
    NAME_PATTERN,
    NODE_NAME_MAX,
    Name,
)

JOB_STATUSES = ("pending", "running", "finished", "failed", "cancelled")


class FieldError(BaseModel):
    field: str
    """Where in the request, e.g. ``resources.gpus`` or ``query.pod``."""
    message: str


class Problem(BaseModel):
    """Every refusal, as RFC 9457 problem details: what is wrong and, where there is one, the fix."""

    type: str = "about:blank"
    title: str
    """The status's phrase, e.g. ``Unprocessable Content``."""
    status: int
    detail: str
    """One line for people: every field error joined, or the reason."""
    errors: list[FieldError] | None = None
    """For a 422 from validation: each field that is wrong."""


JobStatus = Literal["pending", "running", "finished", "failed", "cancelled"]


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
    attempt: int
    """How many times it started: more than 1 after a preemption or a lost node (it resumed)."""
    spec: dict[str, Any]
    nodes: list[str] = []
    """The node each pod is placed on, in pod order, while it runs."""


class CodeUpload(BaseModel):
    """An uploaded working folder of the caller's tenant (``PUT /code/{digest}``)."""

    digest: str
    size: int
    """Bytes of the archive."""
    stored: bool = False
    """True when this request stored it; False when the tenant had it already (nothing was written)."""


class Why(BaseModel):
    id: str
    status: str
    reason: str | None
    forecast_start: float | None = None
    """While it waits: Unix seconds when the last forecast has it start on private clusters."""
    burst_cost_usd: float | None = None
    """While it waits: what running it on the cheapest public GPUs would cost (estimated run time)."""
    explained_at: float | None = None
    """While it waits: Unix seconds of the round whose final state ``reason`` describes (every round
    explains every waiting job, and the stored reason changes only when its text does); null when this
    server process runs no reconcile loop (another API worker does) or no round has run yet."""


class NodeState(BaseModel):
    name: str
    cluster: str
    pool: str
    flavor: str
    cpu: float
    memory_gib: float
    gpus: int
    gpu_model: str | None
    gpus_allocated: float
    """GPUs held by running pods (a share counts as its fraction)."""
    unhealthy_gpus: list[int]
    """Drained: nothing is placed on them."""
    registered: bool
    """Whether an agent registered this machine (otherwise it comes from the cluster file only)."""
    last_heartbeat: float | None
    """Unix seconds; None when its agent was never heard from."""
    gpus_outside: int = 0
    """GPUs held by what corral did not start (another scheduler's Pods) or closed to it (a cordon)."""
    heartbeat_timeout: float | None = None
    """Seconds of silence after which the node is down and its work requeued (None: never). Its agent
    stops its pods once it has not reached the server for this long."""
    address: str | None = None
    """Where the node's service replicas are reached: its agent's advertised address, else the one it
    last connected from; None for the server's own nodes (loopback) and nodes no agent speaks for."""


class LogChunk(BaseModel):
    """Output an agent ships: ``text`` starts at byte ``offset`` of the pod's output in ``attempt``."""

    attempt: int = Field(ge=1, le=INT32_MAX)
    offset: int = Field(ge=0, le=MAX_LOG_OFFSET)
    text: str = Field(max_length=MAX_LOG_CHUNK_CHARS)


class LogLength(BaseModel):
    length: int
    """Bytes of the pod's output the server holds: where the agent's next chunk must start."""


class PodStart(BaseModel):
    """An agent's report that a pod started, with the port it was given there (``JobSpec.listen_port``)."""

    attempt: int = Field(ge=1, le=INT32_MAX)
    port: int = Field(ge=1, le=65535)


class PodExit(BaseModel):
    """An agent's report that a pod's process ended."""

    attempt: int = Field(ge=1, le=INT32_MAX)
    code: int = Field(
        ge=-MAX_EXIT_CODE, le=MAX_EXIT_CODE, description="Minus a signal's number if killed by it."
    )


class JobEventOut(BaseModel):
    t: float
    """Unix seconds."""
    kind: str
    """submitted, started, preempted, node_lost, rejected, finished, failed or cancelled."""
    reason: str | None


class ArtifactPush(BaseModel):
    """A request to copy one of a job's files or directories to a cluster's object store."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        min_length=1,
        max_length=MAX_PATH_CHARS,
        description="On the server's machine, inside the job's working directory or checkpoint directory; "
        "a relative path is taken from the working directory.",
    )
    kind: ArtifactKind = Field(
        description="What it is: only models and checkpoints may go to public clusters."
    )
    cluster: Name = Field(description="A cluster of the cluster file with an object_store.")


class Artifact(BaseModel):
    """A copied artifact."""

    job_id: str
    name: str
    """Its path inside the job's folder; the object key is ``<tenant>/<job id>/<name>``."""
    kind: ArtifactKind
    cluster: str
    url: str
    """``s3://<bucket>/<tenant>/<job id>/<name>``: the object, or the prefix of a directory's objects."""
    keys: list[str]
    size: int
    """Bytes copied."""


class QueueState(BaseModel):
    name: str
    cohort: str | None
    quota: dict[str, float] | None
    """Nominal GPUs per flavor; None: no quota."""
    borrowing_limit: dict[str, float] | None
    weight: float
    burst_after_seconds: float | None
    """Jobs may use public clusters only after waiting this long; None: at once."""
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
    node: str | None = None
    """An agent's node, the only one it may speak for."""
    expires_at: float | None = None
    """When this token stops working (Unix seconds); None: never."""


class NewTenant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=NAME_MAX, pattern=r"^[a-z0-9][a-z0-9-]*$")


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=NAME_MAX, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
    tenant: str = Field(min_length=1, max_length=NAME_MAX)
    role: Role = "member"
    node: str | None = Field(
        default=None,
        min_length=1,
        max_length=NODE_NAME_MAX,
        pattern=NAME_PATTERN,
        description="Agents: the one node its tokens may speak for (register, heartbeat, pods, reports).",
    )
    expires_in: float | None = Field(
        default=None, gt=0, description="Seconds until the first token expires; default: never."
    )


class UserInfo(BaseModel):
    name: str
    tenant: str
    role: Role
    node: str | None = None
    """An agent's node (None: not bound yet; bound to the first node it speaks for)."""


class NewToken(BaseModel):
    user: str
    token: str
    """Shown once: only its hash is stored."""


class TokenInfo(BaseModel):
    id: str
    user: str
    created_at: float
    expires_at: float | None = None
    """Unix seconds; None: never expires."""


HELD_BY_MAX = 256
"""Longest description of what holds a GPU outside corral."""


class GpuReport(BaseModel):
    """One GPU as an agent finds it (NVML) or declares it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    index: int = Field(ge=0, lt=MAX_GPUS_PER_POD, description="The index CUDA_VISIBLE_DEVICES uses.")
    model: str = Field(min_length=1, max_length=GPU_MODEL_MAX)
    memory_gib: float = Field(gt=0, le=MAX_MEMORY_GIB)
    healthy: bool = Field(default=True, description="False: drained; jobs on it are requeued.")
    nvlink_group: int | None = Field(
        default=None, ge=-INT32_MAX, le=INT32_MAX, description="GPUs with one group number share NVLink."
    )
    held_by: str | None = Field(
        default=None,
        max_length=HELD_BY_MAX,
        description="What outside corral holds it (another scheduler's Pod, a cordon): nothing is placed on it.",
    )


class NodeRegistration(BaseModel):
    """What an agent says its machine has. A node the cluster file already declares keeps its declared
    shape and takes only the GPUs' health from here."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    cluster: Name = "agents"
    pool: Name | None = Field(default=None, description="Default: the node's GPU model, or `cpu`.")
    flavor: Name | None = Field(default=None, description="Quota flavor; default: the pool's name.")
    private: bool = Field(default=True, description="Owned hardware (may run sensitive work).")
    cpu: float = Field(gt=0, le=MAX_CPU)
    memory_gib: float = Field(gt=0, le=MAX_MEMORY_GIB)
    gpus: list[GpuReport] = Field(default_factory=list, max_length=MAX_GPUS_PER_POD)

    @model_validator(mode="after")
    def _indexes(self) -> NodeRegistration:
        if [g.index for g in self.gpus] != list(range(len(self.gpus))):
            raise ValueError("gpus: list GPUs in index order 0, 1, 2 ... without gaps")
        if len({g.model for g in self.gpus}) > 1:
            raise ValueError("gpus: one GPU model per node (corral schedules a node as one flavor)")
        return self

    @property
    def pool_name(self) -> str:
        if self.pool:
            return self.pool
        return _slug(self.gpus[0].model) if self.gpus else "cpu"

    @property
    def flavor_name(self) -> str:
        return self.flavor or self.pool_name


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split()) or "gpu"


class Spend(BaseModel):
    key: str
    """The tenant, queue or cluster."""
    usd: float
    gpu_hours: float
