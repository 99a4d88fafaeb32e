"""Everything MLflow-related one server process holds, opened once at its start."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from corral.mlops import available
from corral.mlops.registry import Registry
from corral.mlops.stores import mlflow_location, open_stores
from corral.mlops.tenancy import Owners
from corral.mlops.tokens import tracking_key
from corral.mlops.tracking import JobTracking

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mlops:
    tracking: JobTracking
    registry: Registry
    owners: Owners


def open_mlops(engine: Engine, data_dir: Path, artifacts: str | None = None) -> Mlops | None:
    """MLflow over the server's data dir and database; None when MLflow is not installed or cannot be
    opened (logged): corral then runs its jobs without tracking."""
    if not available():
        return None
    try:
        location = mlflow_location(data_dir, engine.url.render_as_string(hide_password=False), artifacts)
        stores = open_stores(location)
    except Exception:
        log.exception("MLflow could not be opened: jobs run without tracking, /mlflow answers 503")
        return None
    tracking = JobTracking(engine, stores, tracking_key(data_dir))
    return Mlops(tracking, Registry(stores, tracking), Owners(stores.tracking))
