"""The service spec: a long-running server that corral scales with its traffic, to and from zero.

    type: service
    name: embed
    model: /models/minilm            # or command: python -m http.server $PORT
    resources: {gpus: 0.25, cpu: 1, memory: 2GiB}
    replicas: {min: 0, max: 4}
    autoscaling: {target_concurrency: 4}   # Knative's defaults for the rest
    readiness: {path: /health, timeout: 60s}
    canary: 10                       # a changed spec first gets 10 % of the traffic

Every replica is a corral job in the service's queue, so the one scheduler places it, packs it on shared
GPUs and preempts lower-priority batch work for it. What only serving needs (windows, readiness, traffic
split) stays here, with the service controller.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from corral.limits import INT32_MAX, NAME_MAX
from corral.spec.job import JobSpec, Resources, parse_seconds
from corral.spec.validation import read_text, validate_yaml

Seconds = Annotated[float, BeforeValidator(parse_seconds)]
MAX_REPLICAS = 64
"""Most replicas one service may ask for: each is a job and a port on its node."""
SCALE_TO_ZERO_GRACE = 30.0
"""Knative's scale-to-zero grace: a service idle for its stable window and this long goes to zero."""
REGISTRY_SCHEME = "models:/"


class Replicas(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min: int = Field(default=0, ge=0, le=MAX_REPLICAS, description="0: scale to zero when idle.")
    max: int = Field(default=1, ge=1, le=MAX_REPLICAS)

    @model_validator(mode="after")
    def _ordered(self) -> Replicas:
        if self.min > self.max:
            raise ValueError(f"replicas.min {self.min} is above replicas.max {self.max}")
        return self


class Autoscaling(BaseModel):
    """Knative's KPA: replicas = concurrency / target over the stable window, or over the panic window
    when a burst there needs ``panic_threshold`` times the replicas that are ready."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_concurrency: float = Field(
        default=10.0, gt=0, le=10_000, description="Requests in flight a replica takes."
    )
    stable_window: Seconds = Field(default=60.0, description="Averaging window (Knative: 60s).")
    panic_window: Seconds = Field(default=6.0, description="Short window that reacts to bursts (6s).")
    panic_threshold: float = Field(default=2.0, ge=1.0, le=100.0, description="Panic at this times ready.")
    scale_to_zero_after: Seconds | None = Field(
        default=None, description="Idle this long before zero replicas (default: stable window + 30s)."
    )

    @model_validator(mode="after")
    def _panic_inside_stable(self) -> Autoscaling:
        if self.panic_window > self.stable_window:
            raise ValueError(
                f"panic_window {self.panic_window:g}s is longer than stable_window {self.stable_window:g}s"
            )
        return self

    @property
    def idle_before_zero(self) -> float:
        """Seconds without traffic before the service may have no replica."""
        if self.scale_to_zero_after is not None:
            return self.scale_to_zero_after
        return self.stable_window + SCALE_TO_ZERO_GRACE


class Readiness(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(default="/", pattern=r"^/[^\s\x00]*$", max_length=1024, description="Probed with GET.")
    timeout: Seconds = Field(
        default=120.0, description="A replica not ready this long after it started fails."
    )


class ServiceSpec(BaseModel):
    """One service as a user writes it; ``replica_job`` makes each replica's job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["service"] = "service"
    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$", description="Lowercase name, in URLs.")
    queue: str = Field(default="default", min_length=1, max_length=NAME_MAX)
    command: str | list[str] | None = Field(default=None, description="A server listening on $PORT.")
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="An ONNX file or folder, an MLflow model folder, or models:/NAME@ALIAS (the registry).",
    )
    tokenizer: str | None = Field(
        default=None, min_length=1, max_length=4096, description="tokenizer.json: ONNX sentence embeddings."
    )
    env: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    replicas: Replicas = Field(default_factory=Replicas)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    readiness: Readiness = Field(default_factory=Readiness)
    priority: int = Field(default=100, ge=-INT32_MAX, le=INT32_MAX, description="Above batch work's 0.")
    canary: float = Field(
        default=0, ge=0, le=100, description="Percent of traffic a new revision gets first."
    )
    promote_after: Seconds | None = Field(
        default=None, description="Promote a healthy canary after this long (default: by command only)."
    )
    hold_timeout: Seconds = Field(
        default=120.0, description="How long a request waits for a ready replica (scale from zero), then 503."
    )
    public: bool = Field(default=False, description="Callable with the service's own token.")
    workdir: str | None = Field(default=None, description="Where replicas start (a folder on the node).")

    @model_validator(mode="after")
    def _one_thing_to_run(self) -> ServiceSpec:
        if (self.command is None) == (self.model is None):
            raise ValueError(
                "give either command (a server on $PORT) or model (a path or models:/NAME@ALIAS)"
            )
        if self.tokenizer is not None and self.model is None:
            raise ValueError("tokenizer goes with model (ONNX sentence embeddings); remove it or add model")
        if {"PORT", "CORRAL_PORT"} & self.env.keys():
            raise ValueError("env PORT is chosen for each replica on the node it runs on; remove it")
        if self.resources.gpus.count > 1:
            raise ValueError("a replica gets at most one GPU (or a share, e.g. 0.5): add replicas instead")
        try:  # what a job could not be started with (command, env, workdir limits) is refused here
            self.replica_job(1, self.command if self.command is not None else ["python3"])
        except ValidationError as error:
            raise ValueError(
                "; ".join(e["msg"].removeprefix("Value error, ") for e in error.errors())
            ) from None
        return self

    @field_validator("model")
    @classmethod
    def _registry_reference(cls, value: str | None) -> str | None:
        if value is not None and value.startswith(REGISTRY_SCHEME):
            name, at, alias = value.removeprefix(REGISTRY_SCHEME).partition("@")
            if not name or not at or not alias:
                raise ValueError(f"model {value!r}: write models:/NAME@ALIAS, e.g. models:/embed@prod")
        return value

    @property
    def from_registry(self) -> bool:
        return self.model is not None and self.model.startswith(REGISTRY_SCHEME)

    def digest(self) -> str:
        """What makes a new revision: everything a replica runs with. Scaling and rollout settings change
        the running revision in place."""
        runs = self.model_dump(
            mode="json", include={"command", "model", "tokenizer", "env", "resources", "readiness", "workdir"}
        )
        return hashlib.sha256(json.dumps(runs, sort_keys=True).encode()).hexdigest()

    def replica_job(self, revision: int, command: str | list[str]) -> JobSpec:
        """A replica of ``revision``: a job of the service's queue and priority that runs until stopped
        (no time limit of a day: replicas are long-running) and gets its port where it runs
        (``listen_port``: the node's backend chooses it, tells it in ``PORT`` and reports it)."""
        return JobSpec(
            name=f"{self.name}-r{revision}-{secrets.token_hex(3)}",
            queue=self.queue,
            command=command,
            workdir=self.workdir,
            env=dict(self.env),
            resources=self.resources,
            priority=self.priority,
            time_limit=REPLICA_TIME_LIMIT,
            stop_grace_period=REPLICA_STOP_GRACE,
            listen_port=True,
        )


REPLICA_TIME_LIMIT = 365 * 86400.0
"""Replicas run until scaled down; a year bounds one that nobody scaled down."""
REPLICA_STOP_GRACE = 10.0
"""A replica is stopped only once drained, so it needs little time to exit."""


def parse_service_spec(text: str, source: str = "<service spec>") -> ServiceSpec:
    return validate_yaml(text, ServiceSpec, source=source, expected="a mapping with type: service and name")


def load_service_spec(path: str | Path) -> ServiceSpec:
    return parse_service_spec(read_text(Path(path)), source=str(path))
