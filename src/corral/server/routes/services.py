"""Services: apply, list, status, promote, remove (``/api/v1/services``), and the gateway that serves
them (``/services/<tenant>/<name>/...``).

Members apply services into the queues their tenant may use; a service's replicas are jobs of its
tenant. The gateway admits a token of the service's tenant (member or admin; an admin of any tenant), or
for a ``public: true`` service its own token; another tenant's caller gets the 404 a missing service
gets. The caller's Authorization header is never forwarded to a replica.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from corral.scheduling.feasibility import feasibility
from corral.server.auth import CONFLICT, EVERYONE, REFUSALS, SUBMITTERS, allow, refuse
from corral.server.services import ControlPlane, control_plane
from corral.serving.controller import ServiceController, replica_url
from corral.serving.gateway import Gateway, forwarded_for
from corral.serving.models import ModelResolver
from corral.spec.service import ServiceSpec
from corral.store.accounts import Principal
from corral.store.services import TOKEN_PREFIX, ServiceNotFound, ServiceRecord, ServiceStore

router = APIRouter(tags=["services"], responses=REFUSALS)
gateway_router = APIRouter(tags=["services"])
Plane = Annotated[ControlPlane, Depends(control_plane)]
Reader = Annotated[Principal, Depends(allow(*EVERYONE))]
Submitter = Annotated[Principal, Depends(allow(*SUBMITTERS))]
LOOKUP_SECONDS = 1.0
"""How long the gateway reuses a service's row between reads of the store."""


@dataclass
class Serving:
    """The services' store, the gateway and (in the process that runs the reconcile loop) the
    controller; one per app, ``app.state.serving``."""

    store: ServiceStore
    gateway: Gateway
    controller: ServiceController | None
    resolver: ModelResolver | None
    api_worker: bool = False
    """One of the API worker processes of ``corral server --workers N``: no controller is anywhere near,
    so services are refused (``ONE_PROCESS``)."""
    _lookups: dict[tuple[str, str], tuple[ServiceRecord | None, float]] = field(default_factory=dict)

    def cached(self, tenant: str, name: str) -> ServiceRecord | None:
        """The service as last read, if that was less than ``LOOKUP_SECONDS`` ago (no store read)."""
        cached = self._lookups.get((tenant, name))
        return cached[0] if cached is not None and cached[1] > time.monotonic() else None

    def lookup(self, tenant: str, name: str) -> ServiceRecord | None:
        now = time.monotonic()
        cached = self._lookups.get((tenant, name))
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            record: ServiceRecord | None = self.store.get(tenant, name)
        except ServiceNotFound:
            record = None
        if len(self._lookups) > 10_000:
            self._lookups.clear()
        self._lookups[(tenant, name)] = (record, now + LOOKUP_SECONDS)
        return record

    def forget(self, tenant: str, name: str) -> None:
        self._lookups.pop((tenant, name), None)


def install(app: FastAPI, plane: ControlPlane, prefix: str, resolver: ModelResolver | None = None) -> Serving:
    """Add the routes and make the serving state; with a reconcile loop in this process, a controller
    that the app's lifespan starts (``start``/``stop``)."""
    store = ServiceStore(plane.jobs.engine, plane.jobs.clock)
    gateway = Gateway(plane.metrics.registry)
    controller = None
    if plane.loop is not None:
        controller = ServiceController(store, plane.jobs, gateway, plane.changed, resolver)
        gateway.on_hold, gateway.on_failure = controller.wake, controller.replica_failed
    serving = Serving(store, gateway, controller, resolver)
    app.state.serving = serving
    app.include_router(router, prefix=prefix)
    app.include_router(gateway_router)
    return serving


async def start(app: FastAPI) -> None:
    serving: Serving = app.state.serving
    if serving.controller is not None:
        serving.controller.start()


async def stop(app: FastAPI) -> None:
    serving: Serving = app.state.serving
    if serving.controller is not None:
        await serving.controller.stop()
    await serving.gateway.close()


ONE_PROCESS = (
    "services run on a one-process server (corral server without --workers): the gateway and the "
    "controller that starts replicas share its event loop (docs/serving.md)"
)


def serving_of(request: Request) -> Serving:
    return request.app.state.serving  # type: ignore[no-any-return]


Services = Annotated[Serving, Depends(serving_of)]


class RevisionOut(BaseModel):
    number: int
    state: str
    reason: str | None
    created_at: float


class ReplicaOut(BaseModel):
    job_id: str
    revision: int
    status: str
    """The job's: pending (waiting for capacity), running, ...; see ``ready``."""
    ready: bool
    node: str | None = None
    """Where its job is placed; None while it waits for capacity."""
    url: str | None = None
    """Where the gateway reaches it (its node's address and its port), once placed."""


class ServiceOut(BaseModel):
    name: str
    tenant: str
    url: str
    revision: int
    """The newest revision (the canary while there is one)."""
    stable: int | None
    canary: int | None
    public: bool
    token: str | None = None
    """A public service's own token: shown once, when it is made."""
    desired: int | None = None
    replicas: list[ReplicaOut] = []
    revisions: list[RevisionOut] = []


def _out(request: Request, serving: Serving, record: ServiceRecord, token: str | None = None) -> ServiceOut:
    base = str(request.base_url).rstrip("/")
    controller = serving.controller
    state = controller.states.get(record.id) if controller is not None else None
    replicas = [
        ReplicaOut(
            job_id=r.job_id,
            revision=r.revision,
            status=r.status,
            ready=state is not None and r.job_id in state.ready and r.job_id not in state.draining,
            node=r.node,
            url=replica_url(r) if r.node is not None and r.port is not None else None,
        )
        for r in serving.store.replicas()
        if r.service_id == record.id
    ]
    return ServiceOut(
        name=record.name,
        tenant=record.tenant,
        url=f"{base}/services/{record.tenant}/{record.name}/",
        revision=record.latest,
        stable=record.stable,
        canary=record.canary,
        public=record.public,
        token=token,
        desired=state.desired if state is not None else None,
        replicas=replicas,
        revisions=[
            RevisionOut(number=r.number, state=r.state, reason=r.reason, created_at=r.created_at)
            for r in record.revisions
        ],
    )


@router.post("/services", response_model=ServiceOut, responses=CONFLICT)
def apply(
    request: Request, spec: ServiceSpec, plane: Plane, serving: Services, principal: Submitter
) -> ServiceOut:
    """Create the service or change it (a new revision when its replicas would run differently).
    Refused with the reason: a queue the tenant may not use (403); a queue that does not exist, a
    replica no node could hold, or ``models:/`` without a model registry (422); a server whose API runs
    in several worker processes (409: its gateway and controller need one process)."""
    if serving.api_worker:
        refuse(request, 409, ONE_PROCESS, principal)
    queue = plane.queue(spec.queue)
    if queue is None:
        refuse(request, 422, f"queue: no queue {spec.queue!r}", principal)
    if not principal.is_admin and not queue.admits(principal.tenant):
        refuse(request, 403, f"tenant {principal.tenant} may not submit to queue {queue.name}", principal)
    if spec.from_registry and serving.resolver is None:
        refuse(
            request,
            422,
            f"model: {spec.model} needs a model registry, which this server has none of; give a path",
            principal,
        )
    model = None
    if spec.from_registry and serving.resolver is not None:
        try:
            resolved = serving.resolver.resolve(principal.tenant, spec.model or "")
        except LookupError as error:
            refuse(request, 422, f"model: {error}", principal)
        model = (resolved.version, resolved.path)
    workload = spec.replica_job(1, ["check"]).to_workload("check", submit=0.0)
    verdict = feasibility(plane.empty_snapshot(), workload, workload.pod)
    if verdict.rejection is not None:
        refuse(request, 422, f"a replica could never run: {verdict.rejection[1]}", principal)
    applied = serving.store.apply(principal.tenant, spec, model)
    serving.forget(principal.tenant, spec.name)
    if serving.controller is not None:
        serving.controller.wake()
    return _out(request, serving, applied.service, applied.token)


@router.get("/services", response_model=list[ServiceOut])
def list_services(
    request: Request,
    serving: Services,
    principal: Reader,
    tenant: Annotated[str | None, Query(description="Admins only; others always see their own.")] = None,
) -> list[ServiceOut]:
    scope = tenant if principal.is_admin else principal.tenant
    return [_out(request, serving, record) for record in serving.store.list(scope)]


def _visible(
    request: Request, serving: Serving, principal: Principal, name: str, tenant: str | None
) -> ServiceRecord:
    scope = tenant if principal.is_admin and tenant else principal.tenant
    try:
        return serving.store.get(scope, name)
    except ServiceNotFound as error:
        refuse(request, 404, str(error), principal)


@router.get("/services/{name}", response_model=ServiceOut)
def get_service(
    request: Request, name: str, serving: Services, principal: Reader, tenant: str | None = None
) -> ServiceOut:
    return _out(request, serving, _visible(request, serving, principal, name, tenant))


@router.post("/services/{name}/promote", response_model=ServiceOut, responses=CONFLICT)
async def promote(
    request: Request, name: str, serving: Services, principal: Submitter, tenant: str | None = None
) -> ServiceOut:
    """Give the canary all the traffic now (409 without a canary): the answer comes once the gateway
    sends it every request."""
    record = await run_in_threadpool(_visible, request, serving, principal, name, tenant)
    number = await run_in_threadpool(serving.store.promote, record.id, f"promoted by {principal.user}")
    if number is None:
        refuse(request, 409, f"service {name} has no canary to promote", principal)
    serving.gateway.promote((record.tenant, record.name), number)
    if serving.controller is not None:
        serving.controller.wake()
    return await run_in_threadpool(
        _out, request, serving, await run_in_threadpool(serving.store.get_by_id, record.id)
    )


@router.delete("/services/{name}", status_code=204)
def remove(
    request: Request,
    name: str,
    plane: Plane,
    serving: Services,
    principal: Submitter,
    tenant: str | None = None,
) -> Response:
    """Forget the service and stop its replicas; held requests get a 503."""
    record = _visible(request, serving, principal, name, tenant)
    for job_id in serving.store.delete(record.id):
        try:
            plane.jobs.cancel(job_id, f"service {name} removed")
        except Exception:  # noqa: BLE001 - ended meanwhile: nothing left to stop
            pass
    serving.forget(record.tenant, name)
    if serving.controller is not None:
        serving.controller.wake()  # held requests get their 503 now
    plane.changed()
    return Response(status_code=204)


METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
GATEWAY_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
"""What tenant and service names are made of: a path outside it names no service, and is answered as
one that does not exist without reading the store (PostgreSQL refuses a NUL, for one)."""


@gateway_router.api_route("/services/{tenant}/{name}/{path:path}", methods=METHODS, include_in_schema=False)
async def gateway(request: Request, tenant: str, name: str, path: str) -> Response:
    """A service's traffic (see the module docstring); 503 with Retry-After when no replica got ready in
    the service's ``hold_timeout``, never a 4xx for a service that is only starting."""
    serving = serving_of(request)
    plane = control_plane(request)
    token = _bearer(request)
    if token is None:
        refuse(
            request, 401, "no token: send the service's tenant's API token, or a public service's own token"
        )
    record = serving.cached(tenant, name)
    if record is None and GATEWAY_NAME.fullmatch(tenant) and GATEWAY_NAME.fullmatch(name):
        record = await run_in_threadpool(serving.lookup, tenant, name)
    principal = None
    if not token.startswith(TOKEN_PREFIX):
        principal = await run_in_threadpool(plane.authenticate, token)
    if (
        principal is not None
        and principal.expires_at is not None
        and principal.expires_at <= plane.jobs.clock()
    ):
        refuse(request, 401, "token expired: make a new one (corral tokens new)", principal)
    if principal is not None:
        allowed = principal.is_admin or (principal.tenant == tenant and principal.role == "member")
        if record is None or (not allowed and principal.tenant != tenant):
            refuse(request, 404, f"no service {tenant}/{name}", principal)
        if not allowed:
            refuse(
                request,
                403,
                f"{principal.user} is {principal.role}; calling a service needs member or admin",
                principal,
            )
    elif record is None or not record.token_matches(token):
        refuse(request, 401, f"token not recognised for service {tenant}/{name}")
    assert record is not None
    if serving.api_worker:
        raise HTTPException(status_code=503, detail=ONE_PROCESS)  # nothing here would ever start a replica
    body = await request.body()
    answer = await serving.gateway.forward(
        (tenant, name),
        request.method,
        "/" + path,
        request.url.query.encode("latin-1"),
        request.headers.items(),
        body,
        record.spec.hold_timeout,
        forwarded_for(
            request.client.host if request.client else None, request.url.scheme, request.headers.get("host")
        ),
    )
    response = Response(content=answer.body, status_code=answer.status)
    for header, value in answer.headers:
        response.headers.append(header, value)
    return response


def _bearer(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None
