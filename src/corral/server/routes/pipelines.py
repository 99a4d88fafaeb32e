"""Pipelines: start a run, list runs, a run's steps (cache hits and why each missed), cancel a run; and
the routes agents call to store a step's outputs and fetch the outputs a pod mounts.

Members start runs in their tenant and see only their tenant's (another tenant's run is a 404, as a job
is). A run is checked whole before anything is stored: every step's queue, code and resources as a job
submission would be, so a run that starts never fails for a reason its spec shows. The reconcile loop's
``PipelineController`` does the rest.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field, ValidationError

from corral.api_models import Problem
from corral.limits import INT32_MAX
from corral.pipelines.controller import cancel_run
from corral.pipelines.plan import ParamError, StepInstance, expand, resolve_params, step_job
from corral.pipelines.status import PipelineRun, PipelineStepState
from corral.scheduling.feasibility import feasibility
from corral.server.auth import AGENTS, EVERYONE, REFUSALS, SUBMITTERS, allow, refuse, speak_for
from corral.server.params import JobId, PodIndex
from corral.server.services import ControlPlane, control_plane
from corral.spec.job import CODE_DIGEST, OUTPUT_NAME
from corral.spec.pipeline import PipelineSpec
from corral.spec.validation import describe, format_loc
from corral.store.accounts import Principal
from corral.store.code import CodeQuotaExceeded, CodeStore
from corral.store.jobs import JobNotFound, StaleAttempt
from corral.store.pipelines import PipelineNotFound, PipelineStore, RunRecord
from corral.workdirs import digest_of

router = APIRouter(tags=["pipelines"], responses=REFUSALS)
Plane = Annotated[ControlPlane, Depends(control_plane)]
Reader = Annotated[Principal, Depends(allow(*EVERYONE))]
Submitter = Annotated[Principal, Depends(allow(*SUBMITTERS))]
Agent = Annotated[Principal, Depends(allow(*AGENTS))]
RunId = Annotated[str, Path(pattern=r"^p-[0-9a-f]{1,32}$", description="A pipeline run's id.")]
STALE = {409: {"model": Problem, "description": "The report is about an attempt that is over."}}


class PipelineSubmission(BaseModel):
    spec: PipelineSpec
    params: dict[str, str] = Field(default_factory=dict, description="Overrides of the spec's params.")


@router.post("/pipelines", status_code=201, response_model=PipelineRun)
def start(request: Request, body: PipelineSubmission, plane: Plane, principal: Submitter) -> PipelineRun:
    """Start a run of the pipeline for the caller's tenant. Refused whole (422, 403) when a parameter
    is not declared, or any step's job could not be submitted: its queue, code or resources."""
    spec = body.spec
    try:
        params = resolve_params(spec, body.params)
    except ParamError as error:
        refuse(request, 422, str(error), principal)
    instances = expand(spec)
    for instance in instances:
        _check_step(request, plane, principal, spec, instance, params)
    store = _store(plane)
    spec_json = spec.model_dump(mode="json", by_alias=True)
    run = store.create(spec.name, principal.tenant, spec_json, params, [(i.name, i.step) for i in instances])
    plane.changed()
    return run_state(plane, run)


@router.get("/pipelines", response_model=list[PipelineRun])
def list_runs(
    plane: Plane, principal: Reader, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[PipelineRun]:
    """Runs newest first: the caller's tenant's (an admin's: every tenant's)."""
    scope = None if principal.is_admin else principal.tenant
    return [run_state(plane, run) for run in _store(plane).list(tenant=scope, limit=limit)]


@router.get("/pipelines/{run_id}", response_model=PipelineRun)
def get_run(request: Request, run_id: RunId, plane: Plane, principal: Reader) -> PipelineRun:
    """The run and each step instance: status, cache hit or not and why, its job, why it waits or failed."""
    return run_state(plane, _visible(request, plane, principal, run_id))


@router.post("/pipelines/{run_id}/cancel", response_model=PipelineRun, responses=REFUSALS)
def cancel(request: Request, run_id: RunId, plane: Plane, principal: Submitter) -> PipelineRun:
    """Cancel the run's running steps' jobs and start no other step (409 if the run already ended)."""
    run = _visible(request, plane, principal, run_id)
    if not cancel_run(_store(plane), plane.jobs, run.id, f"pipeline run cancelled by {principal.user}"):
        refuse(
            request, 409, f"pipeline run {run_id} already ended ({run.status}); nothing to cancel", principal
        )
    plane.changed()
    return run_state(plane, _store(plane).get(run_id))


@router.put(
    "/jobs/{job_id}/pods/{pod}/outputs/{name}",
    status_code=204,
    tags=["jobs"],
    responses=STALE,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def put_output(
    request: Request,
    job_id: JobId,
    pod: PodIndex,
    name: Annotated[str, Path(pattern=OUTPUT_NAME)],
    plane: Plane,
    principal: Agent,
    attempt: Annotated[int, Query(ge=1, le=INT32_MAX, description="The attempt the pod ran.")],
) -> None:
    """A declared output of pod 0, packed by the agent of its node once it exited 0 (403 for other
    agents, 409 for an attempt that is over), kept as the job's tenant's archive."""
    _reporter(request, plane, principal, job_id, attempt, pod)
    record = plane.jobs.get(job_id)
    if pod != 0:
        refuse(request, 422, "outputs are pod 0's: the other pods of a gang declare none", principal)
    if name not in record.spec.get("outputs", {}):
        refuse(request, 404, f"job {job_id} declares no output {name!r}", principal)
    data = await request.body()
    digest = digest_of(data)
    try:
        _archives(request, plane, principal).keep(
            record.tenant, digest, data, lambda: plane.jobs.codes_in_use(record.tenant)
        )
    except CodeQuotaExceeded as error:
        refuse(request, 413, str(error), principal)
    _store(plane).record_output(job_id, name, digest, len(data))


@router.get(
    "/jobs/{job_id}/pods/{pod}/mounts/{digest}",
    response_class=FileResponse,
    tags=["jobs"],
    responses={200: {"content": {"application/gzip": {}}, "description": "The stored output."}} | STALE,
)
def pod_mount(
    request: Request,
    job_id: JobId,
    pod: PodIndex,
    digest: Annotated[str, Path(pattern=CODE_DIGEST)],
    plane: Plane,
    principal: Agent,
    attempt: Annotated[int, Query(ge=1, le=INT32_MAX, description="The attempt the pod runs.")],
) -> FileResponse:
    """A stored output the job's spec mounts, for the agent of the node its pod runs on (403 for other
    agents): only what the job names, and only from the job's own tenant's archives."""
    _reporter(request, plane, principal, job_id, attempt, pod)
    record = plane.jobs.get(job_id)
    if digest not in {mount["digest"] for mount in record.spec.get("mounts", [])}:
        refuse(request, 404, f"job {job_id} mounts no {digest}", principal)
    path = _archives(request, plane, principal).path(record.tenant, digest)
    if not path.is_file():
        refuse(request, 404, f"{digest} is not stored on this server", principal)
    return FileResponse(path, media_type="application/gzip")


def run_state(plane: ControlPlane, run: RunRecord) -> PipelineRun:
    """The run as the API shows it: a submitted step is as its job is (pending with the job's ``why``)."""
    needs = {instance.name: instance.needs for instance in expand(PipelineSpec.model_validate(run.spec))}
    records = _store(plane).steps(run.id)
    done = {step.name for step in records if step.status == "succeeded"}
    steps = []
    for step in records:
        status, reason = step.status, step.reason
        if step.status == "waiting":
            waiting_for = [need for need in needs.get(step.name, ()) if need not in done]
            reason = f"waiting for {', '.join(waiting_for)}" if waiting_for else "ready: starts this round"
        elif step.status == "submitted":
            try:
                job = plane.jobs.get(step.job_id or "")
            except JobNotFound:
                job = None
            status = job.status if job is not None and job.status == "pending" else "running"
            reason = (
                job.reason if job is not None and status == "pending" and job.reason else step.cache_reason
            )
        elif step.status == "succeeded":
            reason = step.cache_reason
        steps.append(
            PipelineStepState(
                name=step.name,
                status=status,
                cached=step.cached,
                job_id=step.job_id,
                reason=reason,
                cache=step.cache_reason,
                outputs=step.outputs or {},
            )
        )
    return PipelineRun(
        id=run.id,
        name=run.name,
        tenant=run.tenant,
        status=run.status,
        reason=run.reason,
        params=run.params,
        created_at=run.created_at,
        ended_at=run.ended_at,
        steps=steps,
    )


def _check_step(
    request: Request,
    plane: ControlPlane,
    principal: Principal,
    spec: PipelineSpec,
    instance: StepInstance,
    params: dict[str, str],
) -> None:
    """Refuse the run if this step's job would be refused at submit: as ``POST /jobs`` checks."""
    name = instance.name
    try:
        job = step_job(spec, instance, params, "p-check", [])
    except ValidationError as error:
        first = error.errors()[0]
        refuse(request, 422, f"steps.{name}.{format_loc(tuple(first['loc']))}: {describe(first)}", principal)
    queue = plane.queue(job.queue)
    if queue is None:
        refuse(request, 422, f"steps.{name}.queue: no queue {job.queue!r}", principal)
    if not principal.is_admin and not queue.admits(principal.tenant):
        refuse(
            request,
            403,
            f"steps.{name}: tenant {principal.tenant} may not submit to queue {queue.name}",
            principal,
        )
    if job.code is not None and (plane.code is None or not plane.code.has(principal.tenant, job.code)):
        refuse(
            request,
            422,
            f"steps.{name}.code: tenant {principal.tenant} has not uploaded {job.code}",
            principal,
        )
    workload = job.to_workload("check", submit=0.0)
    verdict = feasibility(plane.empty_snapshot(), workload, workload.pod)
    if verdict.rejection is not None:
        refuse(request, 422, f"steps.{name}: {verdict.rejection[1]}", principal)


def _visible(request: Request, plane: ControlPlane, principal: Principal, run_id: str) -> RunRecord:
    """The run, if the caller may see it: admins every tenant's, others their own (404 otherwise)."""
    try:
        run = _store(plane).get(run_id)
    except PipelineNotFound as error:
        refuse(request, 404, str(error), principal)
    if not principal.is_admin and run.tenant != principal.tenant:
        refuse(request, 404, f"no pipeline run {run_id!r}", principal)
    return run


def _reporter(
    request: Request, plane: ControlPlane, principal: Principal, job_id: str, attempt: int, pod: int
) -> None:
    """Only the agent of the pod's node (or an admin), and only about the job's current attempt."""
    try:
        node = plane.jobs.pod_node(job_id, attempt, pod)
    except JobNotFound as error:
        refuse(request, 404, str(error), principal)
    except StaleAttempt as error:
        refuse(request, 409, str(error), principal)
    speak_for(request, plane, principal, node)


def _archives(request: Request, plane: ControlPlane, principal: Principal) -> CodeStore:
    if plane.code is None:
        refuse(request, 404, "this server keeps no archives (it was started without a data dir)", principal)
    return plane.code


def _store(plane: ControlPlane) -> PipelineStore:
    return PipelineStore(plane.jobs.engine, plane.jobs.clock)
