"""Jobs: submit, list, get, why, events, logs, cancel.

Members submit into the queues their tenant may use and see and cancel their tenant's jobs; viewers only
see them; admins see and cancel everything. Scheduling happens in the reconcile loop, never in a request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse

from corral.api_models import Job, JobEventOut, Why
from corral.limits import IDEMPOTENCY_KEY_MAX, MAX_LOG_OFFSET, MAX_PODS
from corral.scheduling.feasibility import feasibility
from corral.server.auth import CONFLICT, EVERYONE, REFUSALS, SUBMITTERS, allow, refuse, visible_job
from corral.server.params import JobId
from corral.server.services import ControlPlane, control_plane
from corral.spec.job import JobSpec
from corral.store.accounts import Principal
from corral.store.jobs import JobAlreadyEnded, JobRecord

router = APIRouter(tags=["jobs"], responses=REFUSALS)
Plane = Annotated[ControlPlane, Depends(control_plane)]
Reader = Annotated[Principal, Depends(allow(*EVERYONE))]
Submitter = Annotated[Principal, Depends(allow(*SUBMITTERS))]


@router.post("/jobs", status_code=201, response_model=Job)
def submit(
    request: Request,
    spec: JobSpec,
    plane: Plane,
    principal: Submitter,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=IDEMPOTENCY_KEY_MAX)] = None,
) -> Job:
    """Store a job for the caller's tenant; with an ``Idempotency-Key`` header a retried request returns
    the same job. Refused with the reason: a queue the tenant may not use (403), a queue that does not
    exist or a request no node or quota could ever hold (422)."""
    queue = plane.queue(spec.queue)
    if queue is None:
        usable = [q.name for q in plane.queues.list() if q.admits(principal.tenant)]
        refuse(
            request, 422, f"queue: no queue {spec.queue!r}; yours: {', '.join(usable) or 'none'}", principal
        )
    if not principal.is_admin and not queue.admits(principal.tenant):
        refuse(request, 403, f"tenant {principal.tenant} may not submit to queue {queue.name}", principal)
    workload = spec.to_workload("check", submit=0.0)
    verdict = feasibility(plane.empty_snapshot(), workload, workload.pod)
    if verdict.rejection is not None:
        refuse(request, 422, verdict.rejection[1], principal)
    job = as_job(plane.jobs.submit(spec, tenant=principal.tenant, submit_key=idempotency_key))
    plane.changed()
    return job


@router.get("/jobs", response_model=list[Job])
def list_jobs(
    plane: Plane,
    principal: Reader,
    status: str | None = None,
    queue: str | None = None,
    tenant: Annotated[str | None, Query(description="Admins only; others always see their own.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[Job]:
    """Jobs newest first: the caller's tenant's, or for an admin every tenant's (or ``tenant``'s)."""
    scope = tenant if principal.is_admin else principal.tenant
    return [as_job(r) for r in plane.jobs.list(status=status, queue=queue, tenant=scope, limit=limit)]


@router.get("/jobs/{job_id}", response_model=Job)
def get_job(request: Request, job_id: JobId, plane: Plane, principal: Reader) -> Job:
    return as_job(visible_job(request, plane, principal, job_id))


@router.get("/jobs/{job_id}/why", response_model=Why)
def why(request: Request, job_id: JobId, plane: Plane, principal: Reader) -> Why:
    """Why a job waits (or why it failed): the scheduler's explanation from the last round."""
    record = visible_job(request, plane, principal, job_id)
    return Why(**{name: getattr(record, name) for name in Why.model_fields})


@router.get("/jobs/{job_id}/events", response_model=list[JobEventOut])
def events(request: Request, job_id: JobId, plane: Plane, principal: Reader) -> list[JobEventOut]:
    """What happened to the job, oldest first (submitted, started, preempted, node_lost, finished...)."""
    visible_job(request, plane, principal, job_id)
    return [JobEventOut(t=e.t, kind=e.kind, reason=e.reason) for e in plane.jobs.events(job_id)]


@router.get(
    "/jobs/{job_id}/logs",
    response_model=None,
    responses={
        200: {
            "description": "The output, as text.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def logs(
    request: Request,
    job_id: JobId,
    plane: Plane,
    principal: Reader,
    pod: Annotated[int, Query(ge=0, lt=MAX_PODS)] = 0,
    offset: Annotated[
        int, Query(ge=0, le=MAX_LOG_OFFSET, description="Skip this many bytes (to follow a log).")
    ] = 0,
) -> PlainTextResponse:
    """A pod's output (stdout and stderr) from its latest run, from byte ``offset`` on."""
    visible_job(request, plane, principal, job_id)
    text = plane.read_log(job_id, pod)
    if text is None:
        raise HTTPException(status_code=404, detail=f"no output for pod {pod} of {job_id} (not started here)")
    return PlainTextResponse(text.encode()[offset:].decode(errors="replace"))


@router.post("/jobs/{job_id}/cancel", response_model=Job, responses=CONFLICT)
def cancel(request: Request, job_id: JobId, plane: Plane, principal: Submitter) -> Job:
    visible_job(request, plane, principal, job_id)
    try:
        job = as_job(plane.jobs.cancel(job_id))
    except JobAlreadyEnded as error:
        raise HTTPException(status_code=409, detail=str(error)) from None
    plane.changed()
    return job


def as_job(record: JobRecord) -> Job:
    return Job(**{name: getattr(record, name) for name in Job.model_fields})
