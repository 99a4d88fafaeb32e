"""Shared test setup: makes ``tests/builders.py`` importable as ``from builders import ...``."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import itertools  # noqa: E402
import os  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from corral.core.cluster import ObjectStoreSpec  # noqa: E402
from corral.store.database import open_store  # noqa: E402
from corral.store.jobs import JobStore  # noqa: E402
from corral.store.local_postgres import fresh_database, postgres_bindir, postgres_server  # noqa: E402

# CI (CI=true, as .ci/run is called) draws the same property-test examples every run, so whether a
# commit lands does not depend on the draw; developers' runs keep exploring new examples (and the
# example database replays what failed), which is where new counterexamples are found.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


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


S3_KEY_VARIABLES = ("CORRAL_TEST_S3_KEY", "CORRAL_TEST_S3_SECRET")
"""Where tests put the object store's credentials: named in the spec, as a cluster file would name them."""


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """An S3-compatible server (moto) on loopback for the whole session: its endpoint URL."""
    pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> ObjectStoreSpec:
    """A new, empty bucket of its own on the session's S3 server, with credentials in the environment."""
    import boto3

    for variable in S3_KEY_VARIABLES:
        monkeypatch.setenv(variable, "testing")
    spec = ObjectStoreSpec(
        bucket=f"corral-{uuid.uuid4().hex[:12]}",
        endpoint=s3_server,
        access_key_variable=S3_KEY_VARIABLES[0],
        secret_key_variable=S3_KEY_VARIABLES[1],
    )
    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name=spec.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=spec.bucket)
    client.close()
    return spec


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The suite leaves a heap of a few GB (replays, hypothesis, servers' clients): without this the
    interpreter's last garbage collection walked it for minutes after the summary was printed."""
    import gc

    gc.freeze()
