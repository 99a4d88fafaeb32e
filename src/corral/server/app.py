"""The REST API, ``/api/v1``: jobs and their artifacts, queues and cohorts, clusters and nodes, cost,
tenants, users and tokens.

Every route is a thin edge: check who calls (``auth``), validate, call a store, shape the answer. A request
that fails changes nothing and says why: a malformed spec names the field and the fix (422), an impossible
request names the limit (422), a missing token is a 401, a role or tenant that may not is a 403 (404 for
another tenant's job), a conflict a 409. Scheduling happens in the reconcile loop, never in a request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI
from fastapi.responses import PlainTextResponse, RedirectResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from corral.control.loop import ReconcileLoop
from corral.control.reconcile import Inventory
from corral.logs import DEFAULT_LOG_CAP, LogOpener
from corral.server import problems
from corral.server.auth import allow
from corral.server.routes import accounts, artifacts, costs, jobs, mlflow, models, nodes, pipelines, queues
from corral.server.routes import code as code_routes
from corral.server.routes import services as service_routes
from corral.server.services import ControlPlane
from corral.serving.models import ModelResolver
from corral.spec.queue import DEFAULT_QUEUE, QueueConfig
from corral.store.accounts import ROLES
from corral.store.code import CodeStore
from corral.store.jobs import JobStore
from corral.store.queues import QueueStore

if TYPE_CHECKING:
    from corral.mlops.service import MlopsService

API = "/api/v1"


def prepare_store(store: JobStore, inventory: Inventory) -> None:
    """A new store gets the inventory's queues, or one open ``default`` queue."""
    configured = [QueueConfig(**queue.model_dump()) for queue in inventory.queues or []]
    QueueStore(store.engine, store.clock).seed(configured or [DEFAULT_QUEUE])


def create_app(
    store: JobStore,
    inventory: Inventory,
    loop: ReconcileLoop | None = None,
    logs: LogOpener | None = None,
    runs: Path | None = None,
    local_nodes: Collection[str] = (),
    log_cap: int = DEFAULT_LOG_CAP,
    code: CodeStore | None = None,
    mlops: MlopsService | None = None,
    model_resolver: ModelResolver | None = None,
) -> FastAPI:
    """The API over ``store``; with a ``loop``, it runs while the app does and wakes on every change.
    ``runs`` is the local backend's folder of jobs' pods, where artifacts to copy are found;
    ``local_nodes`` the nodes that backend runs, which no agent may speak for; ``log_cap`` the bytes of
    each pod's output kept and served; ``code`` the uploaded working folders; ``mlops`` MLflow behind
    ``/mlflow`` and the model registry (None: not installed or not opened); ``model_resolver`` finds
    services' ``models:/NAME@ALIAS`` (default: ``mlops``'s registry; None of either: such services are
    refused).

    A new store gets the inventory's queues (or an open ``default`` queue) on the first start."""
    plane = ControlPlane(store, inventory, loop, logs, runs, frozenset(local_nodes), log_cap, code=code)
    prepare_store(store, inventory)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if loop is not None:
            loop.start()
        await service_routes.start(app)
        try:
            yield
        finally:
            await service_routes.stop(app)
            if loop is not None:
                loop.stop()

    # Swagger UI (/docs) and ReDoc (/redoc) from assets fastapi-offline ships, not a CDN: a lab's
    # server is often cut off from the internet.
    app = FastAPIOffline(
        title="corral", version="0.1.0", description="One control plane for AI workloads.", lifespan=lifespan
    )
    app.state.control_plane = plane
    for module in (jobs, artifacts, code_routes, queues, nodes, costs, accounts, pipelines, models):
        app.include_router(module.router, prefix=API)
    mlflow.mount(app, plane, mlops)
    service_routes.install(app, plane, API, model_resolver or mlops)

    problems.install(app)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        """A browser pointed at the server lands on the API's documentation (no web UI yet)."""
        return RedirectResponse("/docs")

    @app.get(f"{API}/health", tags=["health"])
    def health() -> dict[str, str]:
        """Up and answering; needs no token."""
        return {"status": "ok"}

    @app.get(
        "/metrics", response_class=PlainTextResponse, tags=["health"], dependencies=[Depends(allow(*ROLES))]
    )
    def prometheus() -> PlainTextResponse:
        """Prometheus metrics; any valid token (Prometheus: ``authorization: {credentials: <token>}``)."""
        return PlainTextResponse(generate_latest(plane.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
