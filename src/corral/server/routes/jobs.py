"""Jobs: submit, list, get, why, events, logs, cancel.

Members submit into the queues their tenant may use and see and cancel their tenant's jobs; viewers only
see them; admins see and cancel everything. Scheduling happens in the reconcile loop, never in a request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from corral.api_models import Job, JobEventOut, JobStatus, Why
from corral.limits import IDEMPOTENCY_KEY_MAX, INT32_MAX, MAX_LOG_OFFSET, MAX_PODS, MAX_TAIL_LINES
from corral.logs import span, stream
from corral.scheduling.feasibility import feasibility
from corral.server.auth import CONFLICT, EVERYONE, REFUSALS, SUBMITTERS, allow, refuse, visible_job
from corral.server.params import JobId
from corral.server.services import ControlPlane, control_plane
from corral.spec.job import JobSpec
from corral.store.accounts import Principal
from corral.store.jobs import ENDED, IdempotencyConflict, JobAlreadyEnded, JobRecord

router = APIRouter(tags=["jobs"], responses=REFUSALS)
Plane = Annotated[ControlPlane, Depends(control_plane)]
Reader = Annotated[Principal, Depends(allow(*EVERYONE))]
Submitter = Annotated[Principal, Depends(allow(*SUBMITTERS))]


@router.post("/jobs", status_code=201, response_model=Job, responses=CONFLICT)
def submit(
    request: Request,
    spec: JobSpec,
    plane: Plane,
    principal: Submitter,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=IDEMPOTENCY_KEY_MAX)] = None,
) -> Job:
    """Store a job for the caller's tenant; with an ``Idempotency-Key`` header a retried request returns
    the same job, and the same key with a different spec is refused (409). Refused with the reason: a queue the tenant may not use (403), a queue that does not
    exist or a request no node or quota could ever hold (422)."""
    queue = plane.queue(spec.queue)
    if queue is None:
        usable = [q.name for q in plane.queues.list() if q.admits(principal.tenant)]
        refuse(
            request, 422, f"queue: no queue {spec.queue!r}; yours: {', '.join(usable) or 'none'}", principal
        )
    if not principal.is_admin and not queue.admits(principal.tenant):
        refuse(request, 403, f"tenant {principal.tenant} may not submit to queue {queue.name}", principal)
    if spec.code is not None and (plane.code is None or not plane.code.has(principal.tenant, spec.code)):
        refuse(
            request,
            422,
            f"code: tenant {principal.tenant} has not uploaded {spec.code} (PUT /api/v1/code/{{digest}}; "
            "the CLI uploads a spec's local workdir by itself)",
            principal,
        )
    unknown = [
        m.digest for m in spec.mounts if plane.code is None or not plane.code.has(principal.tenant, m.digest)
    ]
    if unknown:
        refuse(
            request, 422, f"mounts: tenant {principal.tenant} has no stored output {unknown[0]}", principal
        )
    if spec.code is not None and plane.code is not None:
        plane.code.use(principal.tenant, spec.code)  # the last of the tenant's uploads to make room
    workload = spec.to_workload("check", submit=0.0)
    verdict = feasibility(plane.empty_snapshot(), workload, workload.pod)
    if verdict.rejection is not None:
        refuse(request, 422, verdict.rejection[1], principal)
    try:
        job = as_job(plane.jobs.submit(spec, tenant=principal.tenant, submit_key=idempotency_key))
    except IdempotencyConflict as error:
        refuse(request, 409, str(error), principal)
    plane.changed()
    return job


@router.get("/jobs", response_model=list[Job])
def list_jobs(
    plane: Plane,
    principal: Reader,
    status: JobStatus | None = None,
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
    fields = {name: getattr(record, name) for name in Why.model_fields if name != "explained_at"}
    loop = plane.loop
    at = loop.last_round_at if loop is not None and record.status == "pending" else None
    return Why(**fields, explained_at=at)


@router.get("/jobs/{job_id}/events", response_model=list[JobEventOut])
def events(request: Request, job_id: JobId, plane: Plane, principal: Reader) -> list[JobEventOut]:
    """What happened to the job, oldest first (submitted, started, preempted, node_lost, finished...)."""
    visible_job(request, plane, principal, job_id)
    return [JobEventOut(t=e.t, kind=e.kind, reason=e.reason) for e in plane.jobs.events(job_id)]


LOG_HEADERS = {
    "X-Log-Start": "Offset of the first byte sent.",
    "X-Log-End": "Offset after the last byte sent: where to resume (the next request's `offset`).",
    "X-Log-Length": "Bytes the pod had written when the request was answered.",
    "X-Log-Truncated-Before": "Output before this offset was dropped (past the cap); 0: none was.",
}


@router.get(
    "/jobs/{job_id}/logs",
    response_model=None,
    responses={
        200: {
            "description": "The output, as text (with `follow`, streamed until the job ends).",
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "headers": {
                name: {"description": text, "schema": {"type": "integer"}}
                for name, text in LOG_HEADERS.items()
            },
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
        int,
        Query(
            ge=0, le=MAX_LOG_OFFSET, description="From this byte on (to resume where the last read ended)."
        ),
    ] = 0,
    limit: Annotated[
        int | None, Query(ge=1, le=MAX_LOG_OFFSET, description="At most this many bytes.")
    ] = None,
    tail: Annotated[
        int | None,
        Query(ge=0, le=MAX_TAIL_LINES, description="Only the last this many lines (instead of `offset`)."),
    ] = None,
    follow: Annotated[bool, Query(description="Keep sending new output until the job ends.")] = False,
    attempt: Annotated[
        int | None,
        Query(ge=1, le=INT32_MAX, description="This run's output (1: the first) instead of the latest's."),
    ] = None,
) -> Response:
    """A pod's output (stdout and stderr) from its latest run (or ``attempt``): from byte ``offset`` (or
    its last ``tail`` lines), at most ``limit`` bytes; the headers say which bytes were sent and where to
    resume. Only the last ``log_cap`` bytes (default 100 MiB) of a pod's output are kept. With ``follow``,
    new output is streamed as it is written, a resumed job's new attempt announced, until the job ends."""
    record = visible_job(request, plane, principal, job_id)
    if follow:
        chunks = follow_log(plane, job_id, pod, record, offset, tail)
        return StreamingResponse(chunks, media_type="text/plain; charset=utf-8")
    source = plane.open_log(job_id, pod, attempt)
    if source is None:
        which = f" in attempt {attempt}" if attempt is not None else ""
        refuse(request, 404, f"no output for pod {pod} of {job_id}{which} (not started here)", principal)
    part = span(source, offset, limit, tail)
    headers = {
        "X-Log-Start": str(part.start),
        "X-Log-End": str(part.stop),
        "X-Log-Length": str(part.length),
        "X-Log-Truncated-Before": str(part.kept_from),
    }
    return StreamingResponse(
        iterate_in_threadpool(stream(source, part.start, part.stop)),
        media_type="text/plain; charset=utf-8",
        headers=headers,
    )


async def follow_log(
    plane: ControlPlane, job_id: str, pod: int, record: JobRecord, offset: int, tail: int | None
) -> AsyncIterator[bytes]:
    """The pod's output as it grows, looked at every ``plane.follow_seconds``, until the job has ended
    and everything it wrote was sent; a new attempt (after a preemption or a lost node) starts its own
    log from 0, announced with a rule."""
    attempt = record.attempt
    while True:
        if record.attempt != attempt and record.status == "running":
            if attempt:  # an earlier attempt ran: this one resumed it
                yield f"--- attempt {record.attempt} (resumed) ---\n".encode()
                offset, tail = 0, None
            attempt = record.attempt
        source = await run_in_threadpool(plane.open_log, job_id, pod, attempt or None)
        sent = False
        if source is not None:
            part = span(source, offset, tail=tail)
            tail = None
            async for block in iterate_in_threadpool(stream(source, part.start, part.stop)):
                sent = True
                yield block
            offset = part.stop
        if not sent and record.status in ENDED:
            return
        await asyncio.sleep(plane.follow_seconds)
        record = await run_in_threadpool(plane.jobs.get, job_id)


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
