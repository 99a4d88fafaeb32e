"""Shared test setup: makes ``tests/builders.py`` importable as ``from builders import ...``."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import itertools  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from corral.store.database import open_store  # noqa: E402
from corral.store.jobs import JobStore  # noqa: E402
from corral.store.local_postgres import fresh_database, postgres_bindir, postgres_server  # noqa: E402


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    if postgres_bindir() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs on the embedded default and on the production database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'corral.db'}"
    return fresh_database(request.getfixturevalue("postgres"))


@pytest.fixture
def store(database_url: str) -> Iterator[JobStore]:
    """A job store on each database whose clock ticks one second per reading (0, 1, 2 ...), so times
    in a test are deterministic; modules that need another clock define their own ``store``."""
    ticks = itertools.count()
    store = JobStore(open_store(database_url), clock=lambda: float(next(ticks)))
    yield store
    store.engine.dispose()
