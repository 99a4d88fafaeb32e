"""What the API says about a pipeline run (``GET /pipelines/{id}``, ``corral pipeline status --json``)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class PipelineStepState(BaseModel):
    name: str = Field(description="The step instance: `train` or, from a matrix, `train[c=0.1]`.")
    status: str = Field(
        description="waiting (its needs have not all succeeded), pending or running (its job's), "
        "succeeded, failed, upstream_failed (a step it needs failed) or cancelled."
    )
    cached: bool = Field(description="A cache hit: no job ran; its outputs are an earlier run's.")
    job_id: str | None = Field(default=None, description="Its job (an earlier run's, for a cache hit).")
    reason: str | None = Field(
        default=None,
        description="Why it waits (its job's `corral why`), why it failed, or else why it hit or missed "
        "the cache.",
    )
    cache: str | None = Field(default=None, description="Why it hit or missed the cache.")
    outputs: dict[str, str] = Field(default_factory=dict, description="Output name -> archive digest.")


class PipelineRun(BaseModel):
    id: str
    name: str
    tenant: str
    status: str = Field(description="running, succeeded, failed or cancelled.")
    reason: str | None = Field(default=None, description="Which step failed and why, or who cancelled it.")
    params: dict[str, str]
    created_at: float
    ended_at: float | None = None
    steps: list[PipelineStepState]
