"""Everything MLflow-related one server process holds, opened in the background at its start.

Opening MLflow takes seconds (importing it, and migrating its store on a new data dir), so the server
does not wait for it: it answers at once, ``/mlflow`` answers 503 "starting" until MLflow is open, and
pods handed out before then start without tracking, as when MLflow cannot be reached.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from corral.backends.pods import DesiredPod
from corral.mlops import available
from corral.mlops.registry import Registry
from corral.mlops.tenancy import Owners
from corral.mlops.tracking import JobTracking
from corral.serving.models import ResolvedModel as ServedModel

log = logging.getLogger(__name__)

WRITER_START_SECONDS = 120.0
"""How long opening MLflow waits for its writer process to open the store (importing MLflow takes
seconds on a busy machine)."""


@dataclass(frozen=True)
class Mlops:
    tracking: JobTracking
    registry: Registry
    owners: Owners
    wsgi_app: Any
    """MLflow's Flask app holding the gate's routes (``corral.mlops.gate.mlflow_app``)."""


class MlopsService:
    """MLflow for one server process: ``current`` once it is open, None while it opens or if it failed."""

    def __init__(
        self, engine: Engine, data_dir: Path, artifacts: str | None = None, runs_ahead: int = 0
    ) -> None:
        self.engine = engine
        self.data_dir = data_dir
        self.artifacts = artifacts
        self.runs_ahead = runs_ahead
        self.failed = False
        self._current: Mlops | None = None
        self._opened = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._open, name="corral-mlflow", daemon=True).start()

    @property
    def current(self) -> Mlops | None:
        return self._current

    def _open(self) -> None:
        try:
            self._current = open_mlops(self.engine, self.data_dir, self.artifacts, self.runs_ahead)
        except Exception:
            self.failed = True
            log.exception("MLflow could not be opened: jobs run without tracking, /mlflow answers 503")
        finally:
            self._opened.set()

    def attach(self, pods: Sequence[DesiredPod], server_url: str) -> list[DesiredPod]:
        """``JobTracking.attach`` once MLflow is open; until then the pods as they are."""
        mlops = self._current
        return mlops.tracking.attach(pods, server_url) if mlops is not None else list(pods)

    def resolve(self, tenant: str, reference: str) -> ServedModel:
        """Serving's ``ModelResolver``: ``models:/NAME@ALIAS`` of ``tenant`` as the version it names now,
        its artifacts packed into the tenant's archive store (``code:`` of the replica jobs), so a
        replica on any node, running as the tenant's pod user, starts in a copy of them: the server's
        own artifact folder is no pod's to read. ``LookupError`` with the reason otherwise."""
        from corral.mlops.registry import RegistryError
        from corral.store.code import CodeQuotaExceeded, CodeStore
        from corral.store.jobs import JobStore
        from corral.workdirs import WorkdirTooLarge, pack

        mlops = self._current
        if mlops is None:
            raise LookupError("the model registry is still starting (or failed to open): try again shortly")
        try:
            found = mlops.registry.resolve(tenant, reference)
        except RegistryError as error:
            raise LookupError(f"model registry: {error}") from None
        if found.path is None:
            raise LookupError(
                f"{reference}: its artifacts are in an object store, which serving cannot ship yet"
            )
        try:
            packed = pack(found.path)
            jobs = JobStore(self.engine)
            archives = CodeStore(self.data_dir / "code")
            archives.keep(tenant, packed.digest, packed.data, lambda: jobs.codes_in_use(tenant))
        except (OSError, WorkdirTooLarge, CodeQuotaExceeded) as error:
            raise LookupError(
                f"{reference} version {found.version} cannot be shipped to replicas: {error}"
            ) from None
        return ServedModel(version=str(found.version), path=packed.digest)

    def sweep(self) -> None:
        """After a round, off the loop's thread: make runs for the jobs next in line
        (``JobTracking.make_ahead``), then end the runs of jobs that ended. Both only send a command to
        the MLflow writer; making runs goes first, as starts wait for those."""
        mlops = self._current
        if mlops is not None:
            mlops.tracking.make_ahead()
            mlops.tracking.sweep()


def open_mlops(engine: Engine, data_dir: Path, artifacts: str | None = None, runs_ahead: int = 0) -> Mlops:
    """MLflow over the server's data dir and database (its stores migrated), with the gate's app;
    ``runs_ahead``: see ``JobTracking``."""
    from corral.mlops.gate import mlflow_app
    from corral.mlops.stores import mlflow_location, open_stores
    from corral.mlops.tokens import tracking_key
    from corral.mlops.writer_process import WriterProcess

    location = mlflow_location(data_dir, engine.url.render_as_string(hide_password=False), artifacts)
    stores = open_stores(location)  # migrated here, before the writer opens the same store
    writer = WriterProcess(location.backend_uri)
    if not writer.start(WRITER_START_SECONDS):  # /mlflow still opens; runs wait for a writer that starts
        log.error("the MLflow writer did not open MLflow's store: jobs start without tracking until one does")
    tracking = JobTracking(engine, writer, tracking_key(data_dir), runs_ahead=runs_ahead)
    return Mlops(tracking, Registry(stores, tracking), Owners(stores.tracking), mlflow_app())


def mlops_service(
    engine: Engine, data_dir: Path, artifacts: str | None = None, runs_ahead: int = 0
) -> MlopsService | None:
    """The server's MLflow, opening in the background; None without the ``mlops`` extra."""
    if not available():
        return None
    service = MlopsService(engine, data_dir, artifacts, runs_ahead)
    service.start()
    return service
