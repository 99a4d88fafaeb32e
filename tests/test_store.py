"""The store: migrations create the schema, submitted jobs survive a reopen, concurrent submissions are
stored exactly once, cancel is final; on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from corral.spec.job import parse_job_spec
from corral.store.database import open_store
from corral.store.jobs import JobAlreadyEnded, JobNotFound, JobStore

SPEC = parse_job_spec("name: train\nqueue: nlp\ncommand: python train.py\nresources: {gpus: A100:2}\n")


@pytest.fixture
def url(database_url: str) -> str:
    return database_url


def test_opening_migrates_to_the_newest_schema(url: str) -> None:
    engine = open_store(url)
    assert {"jobs", "placements", "events", "alembic_version"} <= set(inspect(engine).get_table_names())
    engine.dispose()
    open_store(url).dispose()  # opening again is a no-op migration


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    engine = open_store(f"sqlite:///{tmp_path / 'corral.db'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def test_a_submitted_job_is_there_after_reopening_the_store(url: str) -> None:
    first = open_store(url)
    job = JobStore(first, clock=lambda: 100.0).submit(SPEC, tenant="lab")
    first.dispose()
    reopened = open_store(url)
    again = JobStore(reopened).get(job.id)
    reopened.dispose()
    assert (again.status, again.queue, again.tenant, again.submitted_at) == ("pending", "nlp", "lab", 100.0)
    assert again.spec["resources"]["gpus"] == {"count": 2, "milli": 1000, "models": ["A100"]}


def test_concurrent_clients_store_each_submission_exactly_once(url: str) -> None:
    """20 clients x 25 submissions, each sent twice with the same key (a retry): 500 jobs, no duplicate."""
    store = JobStore(open_store(url))
    errors: list[BaseException] = []

    def client(number: int) -> None:
        try:
            for index in range(25):
                key = f"client-{number}-{index}"
                first = store.submit(SPEC, submit_key=key)
                assert store.submit(SPEC, submit_key=key).id == first.id
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert len(store.list(limit=10_000)) == 500
    store.engine.dispose()


def test_list_filters_and_cancel_is_final(url: str) -> None:
    times = iter(range(100))
    store = JobStore(open_store(url), clock=lambda: float(next(times)))
    first = store.submit(SPEC)
    second = store.submit(SPEC.model_copy(update={"queue": "cv"}), tenant="vision")
    assert [j.id for j in store.list()] == [second.id, first.id]
    assert [j.id for j in store.list(queue="cv")] == [second.id]
    assert [j.id for j in store.list(tenant="default")] == [first.id]
    cancelled = store.cancel(first.id)
    assert (cancelled.status, cancelled.reason) == ("cancelled", "cancelled by user")
    with pytest.raises(JobAlreadyEnded, match="already ended"):
        store.cancel(first.id)
    with pytest.raises(JobNotFound):
        store.get("j-missing")
    store.engine.dispose()


def test_migration_0009_keeps_old_rows_and_goes_both_ways(url: str) -> None:
    """A store made before agents were bound and keys had digests: its agent is unbound (and binds on
    first use), its keyed job is still found by its key, and its token never expires."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    from corral.store.accounts import AccountStore
    from corral.store.database import MIGRATIONS, upgrade

    engine = create_engine(url)
    with engine.begin() as connection:
        upgrade(connection, "0008")
        connection.execute(text("INSERT INTO tenants (name, created_at) VALUES ('default', 0)"))
        connection.execute(
            text("INSERT INTO users (name, tenant, role, created_at) VALUES ('old', 'default', 'agent', 0)")
        )
    engine.dispose()
    store = JobStore(open_store(url))
    accounts = AccountStore(store.engine)
    assert [(user.name, user.node) for user in accounts.users()] == [("old", None)]
    assert accounts.bind_agent("old", "m-0") == "m-0"
    first = store.submit(SPEC, submit_key="k")
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE jobs SET submit_digest = NULL"))  # as a job stored before 0009
    assert store.submit(SPEC.model_copy(update={"command": "other"}), submit_key="k").id == first.id
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0008")
        assert "node" not in {column["name"] for column in inspect(connection).get_columns("users")}
    store.engine.dispose()
