"""Opening the store: SQLite in the data directory by default, any SQLAlchemy URL (PostgreSQL) by setting.

``CORRAL_DATABASE_URL`` picks the database; without it the store is ``<data dir>/corral.db`` in WAL mode,
so readers never block the writer. Opening runs the Alembic migrations up to the newest revision: a store
is always at the schema of the code that opened it.
"""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection

DATABASE_URL_VARIABLE = "CORRAL_DATABASE_URL"
MIGRATIONS = Path(__file__).parent / "migrations"


def database_url(data_dir: Path) -> str:
    return os.environ.get(DATABASE_URL_VARIABLE) or f"sqlite:///{data_dir / 'corral.db'}"


def open_store(url: str, *, migrate: bool = True) -> Engine:
    """An engine for ``url`` with the schema migrated to the newest revision (``migrate=False``: trust
    that another process did, as API workers do)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    if migrate:
        with engine.begin() as connection:
            upgrade(connection)
    return engine


def upgrade(connection: Connection, revision: str = "head") -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
