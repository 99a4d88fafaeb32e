"""Workloads: what a user asks to run, as the scheduler sees it.

A workload is a set of identical pods that start together (a gang) and run for ``duration`` seconds of
useful work. The field names are those of the scenario format (``../shared/spec/scenario-format.md``) so a
workload line maps one to one; the control plane's richer job spec compiles down to this.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from corral.core.units import MILLI_PER_GPU


class Workload(BaseModel):
    """One job: ``pods`` replicas, each needing ``gpus_per_pod`` GPUs (or a share of one), CPU and memory.

    Every number is finite: JSON readers accept ``Infinity`` and ``NaN``, and a job that runs forever or
    arrives never would reach the replay's sums (a makespan of NaN) instead of a clear error."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    id: str = Field(min_length=1, description="Unique job id.")
    queue: str = Field(default="default", min_length=1, description="Queue the job is submitted to.")
    submit: float = Field(default=0.0, ge=0, description="Submission time, seconds.")
    duration: float = Field(gt=0, description="Run time once all pods have started, seconds.")
    pods: int = Field(default=1, ge=1, description="Number of identical pods.")
    min_pods: int | None = Field(default=None, ge=1, description="Gang minimum; defaults to `pods`.")
    gpus_per_pod: int = Field(default=0, ge=0, le=64, description="Whole GPUs per pod (1 for a share).")
    gpu_milli: int = Field(
        default=MILLI_PER_GPU,
        ge=0,
        le=MILLI_PER_GPU,
        description="Per-GPU share in milli-GPU; <1000 is fractional.",
    )
    gpu_memory_gib: float = Field(
        default=0.0, ge=0, description="GPU memory the share needs; 0 = not stated."
    )
    cpu: float = Field(default=0.0, ge=0, description="CPU cores per pod.")
    memory_gib: float = Field(default=0.0, ge=0, description="Main memory per pod, GiB.")
    gpu_model: str | None = Field(
        default=None,
        description="Restrict to nodes with this GPU model; corral also accepts 'A|B' for any of several.",
    )
    priority: int = Field(default=0, description="Higher runs first and may preempt lower in its queue.")
    sensitive: bool = Field(default=False, description="Sensitive data: private clusters only.")
    burstable: bool = Field(default=True, description="May run on non-private (cloud) clusters.")
    deadline: float | None = Field(default=None, description="Absolute time the job should finish by (soft).")
    checkpoint_seconds: float | None = Field(
        default=None, gt=0, description="Progress is saved this often; a preempted job resumes from it."
    )
    time_limit: float | None = Field(
        default=None,
        gt=0,
        description="The run time the user declared as an upper bound (corral's extension); forecasts "
        "scale it by what similar jobs really used.",
    )

    @model_validator(mode="after")
    def _check_shape(self) -> Workload:
        if self.min_pods is not None and self.min_pods > self.pods:
            raise ValueError(f"min_pods ({self.min_pods}) must not exceed pods ({self.pods})")
        if self.gpus_per_pod == 0 and self.gpu_milli not in (0, MILLI_PER_GPU):
            raise ValueError("gpu_milli is set but gpus_per_pod is 0: set gpus_per_pod to 1 for a GPU share")
        if 0 < self.gpu_milli < MILLI_PER_GPU and self.gpus_per_pod != 1:
            raise ValueError(
                f"a fractional share (gpu_milli={self.gpu_milli}) needs gpus_per_pod: 1, "
                f"not {self.gpus_per_pod}"
            )
        if self.gpus_per_pod > 0 and self.gpu_milli == 0:
            raise ValueError("gpus_per_pod > 0 needs gpu_milli > 0 (1000 for whole GPUs)")
        return self

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Workload:
        """A copy; with ``update``, one that works out its pod, kind and GPU demand afresh (pydantic
        copies what the original had cached, which would describe the original's fields)."""
        copy = super().model_copy(update=update, deep=deep)
        if update:
            for name in _CACHED:
                copy.__dict__.pop(name, None)
        return copy

    @property
    def allowed_models(self) -> frozenset[str] | None:
        """GPU models the job accepts, or None for any."""
        if not self.gpu_model:
            return None
        return frozenset(m.strip() for m in self.gpu_model.split("|") if m.strip())

    @cached_property
    def pod(self) -> PodRequest:
        """What each pod needs from a node; computed once, since every scheduling round asks."""
        gpus = self.gpus_per_pod
        milli = self.gpu_milli if gpus else 0
        return PodRequest(
            cpu=self.cpu,
            memory_gib=self.memory_gib,
            gpus=gpus,
            gpu_milli=milli,
            gpu_memory_gib=self.gpu_memory_gib if gpus else 0.0,
            models=self.allowed_models,
        )

    @cached_property
    def kind(self) -> str:
        """Every field but the id and submit time, spelled out: alike jobs get the same answers from the
        scheduler, which so decides a deep queue of them once a round. A string, computed once, because
        every round looks it up for every waiting job and a string keeps its hash (a tuple of the
        fields is hashed again each time)."""
        return repr(tuple(getattr(self, name) for name in _KIND_FIELDS))

    @cached_property
    def gpu_demand_milli(self) -> int:
        """Milli-GPUs the whole job holds while running: what it counts against quota."""
        return self.pods * self.gpus_per_pod * (self.gpu_milli if self.gpus_per_pod else 0)

    @property
    def must_stay_private(self) -> bool:
        return self.sensitive or not self.burstable


_KIND_FIELDS = tuple(name for name in Workload.model_fields if name not in ("id", "submit"))
_CACHED = ("pod", "kind", "gpu_demand_milli")
"""``Workload``'s cached properties."""


@dataclass(frozen=True, slots=True)
class PodRequest:
    """What one pod needs from one node; the unit placement works in.

    ``gpus`` whole GPUs when ``gpu_milli`` is 1000, else one GPU shared at ``gpu_milli``.
    """

    cpu: float
    memory_gib: float
    gpus: int
    gpu_milli: int
    gpu_memory_gib: float
    models: frozenset[str] | None

    @property
    def fractional(self) -> bool:
        return 0 < self.gpu_milli < MILLI_PER_GPU

    @property
    def gpu_total_milli(self) -> int:
        return self.gpus * self.gpu_milli


def checkpointed_progress(workload: Workload, progress: float) -> float:
    """Work a job keeps when stopped after ``progress`` seconds of useful work: its last checkpoint."""
    step = workload.checkpoint_seconds
    if step is None:
        return 0.0
    # Not ``progress // step``: float floor division gives 1.0 // 0.1 == 9.0. The tolerance keeps a
    # checkpoint that 0.3 / 0.1 == 2.9999999999999996 would otherwise lose.
    saved = math.floor(progress / step + 1e-9) * step
    return min(saved, workload.duration)
