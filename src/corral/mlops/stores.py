"""Where MLflow keeps runs, models and artifacts for one corral server, and the store objects over them.

MLflow's backend store is embedded: a SQLite file beside corral's own (``<data dir>/mlflow.db``), or,
when corral's store is PostgreSQL, schema ``mlflow`` of the same database (MLflow runs its own Alembic
migrations, whose version table must not meet corral's). Artifacts go to ``<data dir>/mlartifacts``, or
to an ``s3://`` URI when configured; clients reach them through the server's proxied
``mlflow-artifacts`` routes only.

MLflow's request handlers read their stores from process-wide settings (its server is one store per
process), so ``open_stores`` sets them once for this server process; every caller then shares the same
store objects.

MLflow leaves SQLite in its default rollback-journal mode with a full sync per commit: making a job's run
(two transactions) then waited about 20 ms on the disk, and every run written in a burst queued behind
that one file lock. ``open_stores`` gives MLflow's SQLite connections the pragmas corral's own store has
(WAL, ``synchronous=NORMAL``): a commit no longer syncs, readers never block the writer, and a killed
server loses nothing it committed (only a power cut may lose the last commits, as for corral's store).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from mlflow.store.model_registry.abstract_store import AbstractStore as RegistryStore
    from mlflow.store.tracking.abstract_store import AbstractStore as TrackingStore

MLFLOW_SCHEMA = "mlflow"
SERVED_ARTIFACTS_ROOT = "mlflow-artifacts:/"
"""Runs' artifact URIs point at the server's proxied artifact routes, resolved against the tracking URI."""


@dataclass(frozen=True)
class MlflowLocation:
    backend_uri: str
    artifacts: str
    """Where the artifacts are: a local folder or an ``s3://`` URI."""

    @property
    def local_artifacts(self) -> Path | None:
        return None if "://" in self.artifacts else Path(self.artifacts)


def mlflow_location(data_dir: Path, database_url: str, artifacts: str | None = None) -> MlflowLocation:
    """MLflow's backend store and artifact destination for a server on ``database_url``."""
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        _create_schema(database_url)
        options = f"-csearch_path={MLFLOW_SCHEMA}"
        backend = url.update_query_dict({"options": options}).render_as_string(hide_password=False)
    else:
        backend = f"sqlite:///{(data_dir / 'mlflow.db').resolve()}"
    return MlflowLocation(backend, artifacts or str((data_dir / "mlartifacts").resolve()))


def _create_schema(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {MLFLOW_SCHEMA}"))
    finally:
        engine.dispose()


@dataclass(frozen=True)
class MlflowStores:
    location: MlflowLocation
    tracking: TrackingStore
    registry: RegistryStore


def open_stores(location: MlflowLocation) -> MlflowStores:
    """MLflow's tracking and registry stores (migrated on first use), also configured as the stores of
    MLflow's request handlers in this process."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.server import handlers
    from mlflow.server.constants import (
        ARTIFACTS_DESTINATION_ENV_VAR,
        BACKEND_STORE_URI_ENV_VAR,
        SERVE_ARTIFACTS_ENV_VAR,
    )

    os.environ[BACKEND_STORE_URI_ENV_VAR] = location.backend_uri
    os.environ[ARTIFACTS_DESTINATION_ENV_VAR] = location.artifacts
    os.environ[SERVE_ARTIFACTS_ENV_VAR] = "true"
    if location.local_artifacts is not None:
        location.local_artifacts.mkdir(parents=True, exist_ok=True)
    handlers.initialize_backend_stores(location.backend_uri, location.backend_uri, SERVED_ARTIFACTS_ROOT)
    # The same objects the handlers use (MLflow's server keeps them in module globals).
    tracking: Any = handlers._get_tracking_store()
    registry: Any = handlers._get_model_registry_store()
    if location.backend_uri.startswith("sqlite"):
        for engine in {id(store.engine): store.engine for store in (tracking, registry)}.values():
            use_wal(engine)
    return MlflowStores(location, tracking, registry)


def use_wal(engine: Engine) -> None:
    """MLflow's SQLite ``engine`` in WAL mode with unsynced commits, from its next connection on (the
    pooled ones, opened by MLflow's migrations, are closed)."""
    event.listen(engine, "connect", _sqlite_pragmas)
    engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
