"""Running the control plane: the API (one process, or several workers) and the reconcile loop.

With one process the API, the loop and the local backend share it, and a submission wakes the loop at
once. With ``workers > 1`` the API runs in that many uvicorn worker processes, so requests use more than
one core, and this process runs the one reconcile loop: it sees new work by watching the store's event
log (a cheap query every 0.2 s) and, on PostgreSQL, is woken at once by the notification each commit to
the event log sends (``corral.store.notifications``). Workers rebuild their view of the control plane
from ``ServerSettings`` passed in the environment; Prometheus metrics are shared through files in
``<data dir>/metrics`` (prometheus_client's multiprocess mode).

prometheus_client picks that mode when first imported, so the modules that import it (the loop, the
metrics, the app) are imported only after ``serve`` has decided.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from pydantic import BaseModel

from corral.backends.local import LocalBackend
from corral.backends.pod_users import DEFAULT_POD_USER, PodUsers, prepare_pod_user
from corral.cleartext import is_loopback
from corral.control.reconcile import Inventory
from corral.core.cluster import ClusterSpec
from corral.core.nodes import build_initial_nodes
from corral.core.queues import QueueSpec
from corral.errors import CorralError
from corral.logs import DEFAULT_LOG_CAP, LogOpener, pod_log_files
from corral.paths import write_token
from corral.pipelines.controller import PipelineController
from corral.scheduling import get_policy
from corral.server.background import BackgroundStep
from corral.store.accounts import AccountStore
from corral.store.code import CodeStore
from corral.store.database import open_store
from corral.store.jobs import JobStore
from corral.store.notifications import EventListener, notifies
from corral.store.pipelines import PipelineStore

if TYPE_CHECKING:
    from fastapi import FastAPI

    from corral.control.loop import ReconcileLoop
    from corral.mlops.service import MlopsService

log = logging.getLogger(__name__)

SETTINGS_VARIABLE = "CORRAL_SERVER_SETTINGS"
METRICS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


class ServerSettings(BaseModel):
    """Everything a server process needs to build its control plane, as JSON for worker processes."""

    clusters: list[ClusterSpec]
    queues: list[QueueSpec] | None = None
    heartbeat_timeout: float | None = None
    data_dir: Path
    database_url: str
    local: bool = True
    policy: str = "default"
    interval: float = 2.0
    host: str = "127.0.0.1"
    port: int = 8765
    workers: int = 1
    log_cap: int = DEFAULT_LOG_CAP
    """Bytes of each pod's output kept and served; older output is dropped."""
    pod_user: str = DEFAULT_POD_USER
    """Who the local backend's pods run as where no ``corral-<tenant>`` user exists (docs/security.md)."""
    mlflow_artifacts: str | None = None
    """Where MLflow keeps artifacts (an ``s3://`` URI); default ``<data dir>/mlartifacts`` (docs/mlops.md)."""


def serve(settings: ServerSettings, announce: Callable[[str], None] = print) -> None:
    """Run until interrupted; ``announce`` gets the lines worth telling whoever started it."""
    get_policy(settings.policy)  # an unknown policy fails here, before anything starts
    if settings.workers > 1:
        _share_metrics(settings.data_dir)
    from corral.server.app import create_app, prepare_store

    store, inventory, backend, mlops = _open(settings)
    token = AccountStore(store.engine).bootstrap()
    if token is not None:
        announce(f"first admin token written to {write_token(settings.data_dir, token)}")
    if settings.local:
        announce(prepare_pod_user(settings.pod_user))
    url = store.engine.url.render_as_string()
    announce(f"corral API on http://{settings.host}:{settings.port}/api/v1 (store: {url})")
    if not is_loopback(settings.host):
        announce(
            f"WARNING: listening on {settings.host} over plain HTTP: tokens cross the network readably; "
            "put a TLS proxy in front (and give clients https://), or listen on 127.0.0.1"
        )
    if mlops is not None:
        announce(
            f"MLflow tracking on http://{settings.host}:{settings.port}/mlflow once open (docs/mlops.md)"
        )
    loop = _loop(settings, store, inventory, backend, mlops)
    if settings.workers == 1:
        pod_files = _pod_files(backend, settings.log_cap)
        code = code_store(settings.data_dir)
        app = create_app(store, inventory, loop, *pod_files, settings.log_cap, code, mlops=mlops)
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
        return
    prepare_store(store, inventory)
    os.environ[SETTINGS_VARIABLE] = settings.model_dump_json()
    listener = EventListener(store.engine, loop.poke) if notifies(store.engine) else None
    if listener is not None:
        listener.start()
    loop.start()
    try:
        uvicorn.run(
            "corral.server.serve:worker_app",
            factory=True,
            workers=settings.workers,
            host=settings.host,
            port=settings.port,
            log_level="warning",
        )
    finally:
        loop.stop()
        if listener is not None:
            listener.stop()


def worker_app() -> FastAPI:
    """The API of one worker process (``serve`` with ``workers > 1``), without a loop of its own."""
    from corral.server.app import create_app

    settings = ServerSettings.model_validate_json(os.environ[SETTINGS_VARIABLE])
    store, inventory, backend, mlops = _open(settings, migrate=False)
    pod_files = _pod_files(backend, settings.log_cap)
    code = code_store(settings.data_dir)
    app = create_app(store, inventory, None, *pod_files, settings.log_cap, code, mlops=mlops)
    app.state.serving.api_worker = True  # the main process runs the loop but serves no HTTP
    return app


def code_store(data_dir: Path) -> CodeStore:
    """Uploaded working folders live in the data dir, beside the database: every worker sees them."""
    return CodeStore(data_dir / "code")


def _pod_files(
    backend: LocalBackend | None, log_cap: int
) -> tuple[LogOpener | None, Path | None, frozenset[str]]:
    """What the API takes from the local backend: its pods' output, the folder of their files, and the
    nodes it runs (which no agent may speak for)."""
    if backend is None:
        return None, None, frozenset()
    return pod_log_files(backend.runner.runs, log_cap), backend.runner.runs, frozenset(backend.nodes or ())


def _open(
    settings: ServerSettings, migrate: bool = True
) -> tuple[JobStore, Inventory, LocalBackend | None, MlopsService | None]:
    """The store, the inventory, the local backend for the clusters it runs (none with --no-local), and
    MLflow (None without the mlops extra)."""
    from corral.mlops.service import mlops_service
    from corral.mlops.tracking import RUNS_AHEAD

    store = JobStore(open_store(settings.database_url, migrate=migrate))
    # Runs made ahead only where every pod gets them: Ray's and Kubernetes' pods get no variables.
    every_pod_tracked = all(cluster.backend.kind == "local" for cluster in settings.clusters)
    runs_ahead = RUNS_AHEAD if every_pod_tracked else 0
    mlops = mlops_service(store.engine, settings.data_dir, settings.mlflow_artifacts, runs_ahead)
    # Nodes were silent while no server ran: their silence counts from this start (Inventory.heard_since).
    inventory = Inventory(settings.clusters, settings.queues, settings.heartbeat_timeout, time.time())
    local_clusters = [c for c in settings.clusters if c.backend.kind == "local"]
    local_nodes = {node.name for node in build_initial_nodes(local_clusters)}
    identities = PodUsers(settings.pod_user)
    tracking = None
    if mlops is not None:
        server = f"http://{loopback(settings.host)}:{settings.port}"
        tracking = partial(mlops.attach, server_url=server)
    code = code_store(settings.data_dir)
    backend = (
        LocalBackend(
            store,
            settings.data_dir,
            local_nodes,
            identities,
            code,
            tracking,
            background_starts=True,
            log_cap=settings.log_cap,
        )
        if settings.local
        else None
    )
    return store, inventory, backend, mlops


def loopback(host: str) -> str:
    """How pods on the server's own machine reach it: its host, or loopback when it listens on all."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _backends(
    settings: ServerSettings, store: JobStore, local: LocalBackend | None, on_exit: Callable[[], None]
) -> list[Callable[[], None]]:
    """What runs pods after each round: the local backend, one Ray backend for the Ray cluster and one
    Kubernetes backend per Kubernetes cluster; a pod's exit calls ``on_exit``."""
    syncs: list[Callable[[], None]] = [local.sync] if local is not None else []
    ray_clusters = [cluster for cluster in settings.clusters if cluster.backend.kind == "ray"]
    if len(ray_clusters) > 1:
        names = ", ".join(cluster.name for cluster in ray_clusters)
        raise CorralError(f"clusters {names} are all Ray clusters; one server process drives one Ray cluster")
    if ray_clusters:
        from corral.backends.ray import RayBackend  # needs the ray extra

        syncs.append(RayBackend(ray_clusters[0], store, on_exit, code_store(settings.data_dir)).sync)
    kube_clusters = [cluster for cluster in settings.clusters if cluster.backend.kind == "kubernetes"]
    if kube_clusters:
        from corral.backends.kube.backend import KubernetesBackend  # needs the kubernetes extra

        syncs += [KubernetesBackend(cluster, store, on_exit).sync for cluster in kube_clusters]
    return syncs


def _loop(
    settings: ServerSettings,
    store: JobStore,
    inventory: Inventory,
    backend: LocalBackend | None,
    mlops: MlopsService | None = None,
) -> ReconcileLoop:
    from corral.control.loop import ReconcileLoop
    from corral.control.metrics import ControlPlaneMetrics
    from corral.sim.engine import replay_first_starts  # what forecasts replay the queue with

    def poke() -> None:  # the backends are made before the loop they wake
        loop.poke()

    if backend is not None:
        backend.runner.on_exit = poke
    exits = [backend.record_exits] if backend is not None else []
    # After the exits are recorded: a step whose needs just ended is submitted for this very round.
    pipelines = PipelineController(
        PipelineStore(store.engine, store.clock), store, code_store(settings.data_dir)
    )
    sweep = BackgroundStep(mlops.sweep, "corral-mlflow-sweep") if mlops is not None else None
    loop = ReconcileLoop(
        store.engine,
        inventory,
        get_policy(settings.policy),
        settings.interval,
        _each(_backends(settings, store, backend, poke) + ([sweep.poke] if sweep else [])),
        ControlPlaneMetrics(store.engine, inventory.clusters),
        watch=store.last_event if settings.workers > 1 else None,
        before_round=_each([*exits, pipelines.advance]),
        replay=replay_first_starts,
    )
    return loop


def _each(syncs: list[Callable[[], None]]) -> Callable[[], None] | None:
    """One callback that runs every backend's step (a sync, recording exits); one failing does not stop
    the others."""
    if not syncs:
        return None

    def run() -> None:
        for sync in syncs:
            try:
                sync()
            except Exception:
                log.exception("backend sync failed; retrying at the next round")

    return run


def _share_metrics(data_dir: Path) -> None:
    folder = data_dir / "metrics"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ[METRICS_VARIABLE] = str(folder)
