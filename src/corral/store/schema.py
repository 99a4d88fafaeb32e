"""Tables of the store (SQLAlchemy 2). Alembic migrations in ``corral/store/migrations`` create them.

A job keeps its spec as submitted (JSON) next to the columns the control plane queries by; placements are
rows of their own so a reconcile round can read what runs where without decoding specs. Times are Unix
seconds (floats): the scheduler's clock.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    tenant: Mapped[str] = mapped_column(String(64), default="default")
    queue: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """pending, running, finished, failed or cancelled."""
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    submit_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    """Client-chosen idempotency key: a retried submission returns the job it already created."""
    submit_digest: Mapped[str | None] = mapped_column(String(64))
    """SHA-256 of the spec the key was first used with: the same key with another spec is refused."""
    submitted_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    checkpointed_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    reason: Mapped[str | None] = mapped_column(Text)
    """Why it waits, failed or was cancelled, for ``corral why``."""
    forecast_start: Mapped[float | None] = mapped_column(Float)
    """While it waits: when the last forecast has it start on private clusters (None: no forecast)."""
    burst_cost_usd: Mapped[float | None] = mapped_column(Float)
    """While it waits: what running it on the cheapest public GPUs would cost, by its estimated run time."""

    __table_args__ = (Index("ix_jobs_status_queue", "status", "queue"), Index("ix_jobs_tenant", "tenant"))


class PlacementRow(Base):
    __tablename__ = "placements"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    pod: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(128), index=True)
    gpus: Mapped[list[int]] = mapped_column(JSON)
    gpu_milli: Mapped[int] = mapped_column(Integer)
    gpu_memory_gib: Mapped[float] = mapped_column(Float)
    cpu: Mapped[float] = mapped_column(Float)
    memory_gib: Mapped[float] = mapped_column(Float)
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    """Set when the pod's process ended (reported by the agent that ran it)."""
    port: Mapped[int | None] = mapped_column(Integer, default=None)
    """The port the pod was given where it runs (``JobSpec.listen_port``), reported when it started."""


class EventRow(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    t: Mapped[float] = mapped_column(Float)
    job_id: Mapped[str | None] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)


class NodeRow(Base):
    """What the control plane hears from a node's agent: heartbeats, and what the machine has."""

    __tablename__ = "nodes"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    last_heartbeat: Mapped[float] = mapped_column(Float)
    registration: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)
    """The agent's ``NodeRegistration`` (JSON); None for a node only heard from, never registered."""
    address: Mapped[str | None] = mapped_column(String(255), default=None)
    """Where the node's replicas are reached: its agent's ``--advertise-address``, else the address
    its agent last connected from; None for a node no agent speaks for."""


class TenantRow(Base):
    """A team or organisation: the unit that owns jobs and may be allowed into queues."""

    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)


class UserRow(Base):
    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.name"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    """admin, member, viewer or agent (see ``corral.store.accounts.ROLES``)."""
    node: Mapped[str | None] = mapped_column(String(128), default=None)
    """An agent's node: the only node its tokens may speak for (None: not bound yet, see
    ``AccountStore.bind_agent``); None for people."""
    created_at: Mapped[float] = mapped_column(Float)


class TokenRow(Base):
    """An API token. Only a SHA-256 digest of its secret is kept: a leaked database grants nothing."""

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    """The public part of the token, to find the row and to name the token when revoking it."""
    user: Mapped[str] = mapped_column(ForeignKey("users.name", ondelete="CASCADE"), index=True)
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float, default=None)
    """Unix seconds after which the token is refused (401 "token expired"); None: never."""


class QueueRow(Base):
    __tablename__ = "queues"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The queue's ``QueueConfig`` as JSON: quota, cohort, weight, tenants."""
    updated_at: Mapped[float] = mapped_column(Float)


class LogChunkRow(Base):
    """Output an agent shipped for one pod: its bytes ``[end - len(text), end)`` of one attempt."""

    __tablename__ = "log_chunks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(40))
    attempt: Mapped[int] = mapped_column(Integer)
    pod: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(BigInteger)
    """Absolute: past 2 GiB of output for a long job."""
    text: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_log_chunks_pod", "job_id", "pod", "attempt", "end", unique=True),)


class ChargeRow(Base):
    """One pod's hold on GPUs from its start until it stopped: the ledger cost is computed from.

    Kept after the job ends (placements are not), with the price it ran at, so a report over any past
    period is the sum of its rows."""

    __tablename__ = "charges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(40), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    pod: Mapped[int] = mapped_column(Integer)
    tenant: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(64))
    cluster: Mapped[str] = mapped_column(String(64))
    pool: Mapped[str] = mapped_column(String(64))
    gpus: Mapped[float] = mapped_column(Float)
    gpu_hour_cost: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float, default=None)


class PipelineRunRow(Base):
    """One run of a pipeline: its spec and resolved parameters as submitted, and how it stands."""

    __tablename__ = "pipeline_runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    tenant: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    """running, succeeded, failed or cancelled."""
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(Text)
    """Which step failed and why, or who cancelled it."""

    __table_args__ = (Index("ix_pipeline_runs_status", "status"), Index("ix_pipeline_runs_tenant", "tenant"))


class PipelineStepRow(Base):
    """One step instance of a run (``train[c=0.1]``): its job, its cache key and why it hit or missed."""

    __tablename__ = "pipeline_steps"

    run_id: Mapped[str] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    step: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    """waiting, submitted (its job runs), succeeded, failed, upstream_failed or cancelled."""
    job_id: Mapped[str | None] = mapped_column(String(40))
    cached: Mapped[bool] = mapped_column(default=False)
    cache_key: Mapped[str | None] = mapped_column(String(64), index=True)
    key_parts: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    reason: Mapped[str | None] = mapped_column(Text)
    """Why it failed or was stopped (None while it waits or runs, and once it succeeded)."""
    cache_reason: Mapped[str | None] = mapped_column(Text)
    """Why it hit or missed the cache, against which earlier run."""
    outputs: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    """Output name -> archive digest, once it succeeded (its own or, on a hit, the earlier run's)."""


class JobOutputRow(Base):
    """A declared output a job's pod 0 left when it exited 0, stored as an archive of the job's tenant."""

    __tablename__ = "job_outputs"

    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    digest: Mapped[str] = mapped_column(String(80))
    size: Mapped[int] = mapped_column(BigInteger)


class JobTrackingRow(Base):
    """A job's MLflow run and the job-scoped token its pods log with (``corral.mlops.tracking``).

    One row per job: every attempt logs into the same run. The token's secret is derived from the
    server's tracking key and never stored; only its SHA-256 digest is, like an API token's."""

    __tablename__ = "job_tracking"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    experiment_id: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    """The attempt the run's ``corral.attempt`` tag names and the token is valid for."""
    token_id: Mapped[str] = mapped_column(String(16), unique=True)
    token_digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    ended_status: Mapped[str | None] = mapped_column(String(16), default=None)
    """FINISHED, FAILED or KILLED once the run was ended for the job's end; None while it may log."""


class ServiceRow(Base):
    """A service (``spec/service.py``): its latest spec, and which revisions take traffic."""

    __tablename__ = "services"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    stable_revision: Mapped[int | None] = mapped_column(Integer, default=None)
    canary_revision: Mapped[int | None] = mapped_column(Integer, default=None)
    token_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    """SHA-256 of a public service's own token (None: callers need a token of its tenant)."""
    created_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_services_tenant_name", "tenant", "name", unique=True),)


class ServiceRevisionRow(Base):
    """One revision of a service: the spec its replicas run, and where its rollout stands."""

    __tablename__ = "service_revisions"

    service_id: Mapped[str] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    """stable, canary, retired (replaced by a newer one), rolled_back or superseded (a newer canary came)."""
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    model_version: Mapped[str | None] = mapped_column(String(128), default=None)
    """For ``models:/NAME@ALIAS``: the version the alias named when this revision was made."""
    model_path: Mapped[str | None] = mapped_column(Text, default=None)
    """... and where that version is: its replicas load it, even after the alias moved on."""
    created_at: Mapped[float] = mapped_column(Float)


class ServiceReplicaRow(Base):
    """A replica: the job that runs it (whose pod's placement has the port it listens on)."""

    __tablename__ = "service_replicas"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    service_id: Mapped[str] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    port: Mapped[int | None] = mapped_column(Integer, default=None)
    """Replicas made before ports were chosen where they run: the port the controller chose; else None."""
    created_at: Mapped[float] = mapped_column(Float)
    secret: Mapped[str | None] = mapped_column(String(64), default=None)
    """What the gateway sends the replica (``X-Corral-Replica-Token``) so it can tell the gateway from
    any other process that reaches its port; the replica's job has it in ``CORRAL_REPLICA_TOKEN``."""
