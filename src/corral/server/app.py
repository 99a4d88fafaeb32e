"""The REST API, ``/api/v1``: submit, list, get, cancel and "why pending" for jobs, over the store.

Every route is a thin edge: validate (the job spec's pydantic model, plus "could this ever run here?"),
call the store, shape the answer. A request that fails changes nothing and says why: a malformed spec
names the field and the fix (422), an impossible request names the limit (422), an unknown job is a 404,
cancelling an ended job a 409. Scheduling happens in the reconcile loop, never in a request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from corral.api_models import Job, NodeState, PodExit, Why
from corral.backends.local import desired_pods
from corral.backends.pods import DesiredPod
from corral.control.loop import ReconcileLoop
from corral.control.metrics import ControlPlaneMetrics
from corral.control.reconcile import Inventory
from corral.core.nodes import Node, build_initial_nodes
from corral.scheduling import Snapshot
from corral.scheduling.feasibility import feasibility
from corral.spec.job import JobSpec
from corral.spec.validation import describe, format_loc
from corral.store.jobs import JobAlreadyEnded, JobNotFound, JobRecord, JobStore
from corral.store.nodes import NodeStore

API = "/api/v1"


LogReader = Callable[[str, int], str | None]
"""(job id, pod) -> the pod's output, from whichever backend ran it."""


def create_app(
    store: JobStore,
    inventory: Inventory,
    loop: ReconcileLoop | None = None,
    logs: LogReader | None = None,
) -> FastAPI:
    """The API over ``store``; with a ``loop``, it runs while the app does and wakes on every change."""
    metrics = (
        loop.metrics if loop is not None and loop.metrics is not None else ControlPlaneMetrics(store.engine)
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if loop is not None:
            loop.start()
        try:
            yield
        finally:
            if loop is not None:
                loop.stop()

    def changed() -> None:
        if loop is not None:
            loop.poke()

    app = FastAPI(
        title="corral", version="0.1.0", description="One control plane for AI workloads.", lifespan=lifespan
    )
    empty = Snapshot(inventory.clusters, build_initial_nodes(list(inventory.clusters)), inventory.queues)
    inventory_nodes = dict(empty.nodes)
    nodes = NodeStore(store.engine, store.clock)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": format_loc(tuple(e["loc"][1:] if e["loc"][:1] == ("body",) else e["loc"])),
                "message": describe(e),
            }
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return JSONResponse(status_code=422, content={"detail": detail, "errors": errors})

    @app.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(f"{API}/jobs/{{job_id}}/logs", response_class=PlainTextResponse)
    def job_logs(job_id: str, pod: Annotated[int, Query(ge=0)] = 0) -> PlainTextResponse:
        """A pod's output (stdout and stderr) from its latest run."""
        _found(store, job_id)
        text = logs(job_id, pod) if logs is not None else None
        if text is None:
            raise HTTPException(
                status_code=404, detail=f"no output for pod {pod} of {job_id} (not started here)"
            )
        return PlainTextResponse(text)

    @app.post(f"{API}/nodes/{{name}}/heartbeat", response_model=NodeState)
    def heartbeat(name: str) -> NodeState:
        """An agent says its node is alive; nodes silent for longer than the heartbeat timeout are down
        and their work is requeued."""
        if name not in inventory_nodes:
            raise HTTPException(status_code=404, detail=f"no node {name!r} in this control plane's inventory")
        nodes.heartbeat(name)
        return _node_state(inventory_nodes[name], nodes.last_heard())

    @app.get(f"{API}/nodes/{{name}}/pods", response_model=list[DesiredPod])
    def node_pods(name: str) -> list[DesiredPod]:
        """The pods the node's agent should be running now; anything else it runs, it stops."""
        if name not in inventory_nodes:
            raise HTTPException(status_code=404, detail=f"no node {name!r} in this control plane's inventory")
        return desired_pods(store, node=name)

    @app.post(f"{API}/jobs/{{job_id}}/pods/{{pod}}/exit", response_model=Job)
    def pod_exit(job_id: str, pod: int, report: PodExit) -> Job:
        """An agent reports a pod's exit code; the job ends when all its pods have."""
        try:
            job = _job(store.record_exit(job_id, report.attempt, pod, report.code))
        except JobNotFound as error:
            raise HTTPException(status_code=404, detail=str(error)) from None
        changed()
        return job

    @app.get(f"{API}/nodes", response_model=list[NodeState])
    def list_nodes() -> list[NodeState]:
        heard = nodes.last_heard()
        return [_node_state(node, heard) for node in inventory_nodes.values()]

    @app.get(f"{API}/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(f"{API}/jobs", status_code=201, response_model=Job)
    def submit(spec: JobSpec, idempotency_key: Annotated[str | None, Header(max_length=128)] = None) -> Job:
        """Store a job; with an ``Idempotency-Key`` header a retried request returns the same job."""
        workload = spec.to_workload("check", submit=0.0)
        verdict = feasibility(empty, workload, workload.pod)
        if verdict.rejection is not None:
            raise HTTPException(status_code=422, detail=verdict.rejection[1])
        job = _job(store.submit(spec, submit_key=idempotency_key))
        changed()
        return job

    @app.get(f"{API}/jobs", response_model=list[Job])
    def list_jobs(
        status: str | None = None,
        queue: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[Job]:
        return [_job(r) for r in store.list(status=status, queue=queue, limit=limit)]

    @app.get(f"{API}/jobs/{{job_id}}", response_model=Job)
    def get_job(job_id: str) -> Job:
        return _job(_found(store, job_id))

    @app.get(f"{API}/jobs/{{job_id}}/why", response_model=Why)
    def why(job_id: str) -> Why:
        """Why a job waits (or why it failed): the scheduler's explanation from the last round."""
        record = _found(store, job_id)
        return Why(id=record.id, status=record.status, reason=record.reason)

    @app.post(f"{API}/jobs/{{job_id}}/cancel", response_model=Job)
    def cancel(job_id: str) -> Job:
        try:
            job = _job(store.cancel(job_id))
            changed()
            return job
        except JobNotFound as error:
            raise HTTPException(status_code=404, detail=str(error)) from None
        except JobAlreadyEnded as error:
            raise HTTPException(status_code=409, detail=str(error)) from None

    return app


def _node_state(node: Node, heard: dict[str, float]) -> NodeState:
    return NodeState(
        name=node.name,
        cluster=node.cluster,
        pool=node.pool,
        gpus=len(node.gpus),
        gpu_model=node.gpu_model,
        last_heartbeat=heard.get(node.name),
    )


def _job(record: JobRecord) -> Job:
    return Job(**{name: getattr(record, name) for name in Job.model_fields})


def _found(store: JobStore, job_id: str) -> JobRecord:
    try:
        return store.get(job_id)
    except JobNotFound as error:
        raise HTTPException(status_code=404, detail=str(error)) from None
