"""With PostgreSQL, a change another process commits to the event log wakes the reconcile loop by
notification: no poke from this process, no watch of the store, and an interval no test waits for, yet a
submission starts in the next round."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from builders import make_cluster, make_pool

from corral.control.loop import ReconcileLoop
from corral.control.reconcile import Inventory
from corral.scheduling import get_policy
from corral.spec.job import parse_job_spec
from corral.store.database import open_store
from corral.store.jobs import JobStore
from corral.store.local_postgres import fresh_database
from corral.store.notifications import EventListener, notifies

INVENTORY = Inventory(clusters=[make_cluster("lab", [make_pool("box", flavor="a100", count=1, gpus=1)])])
NO_TICK = 3600.0
LIMIT = 30.0
"""Only keeps a broken build from hanging the suite."""


@pytest.fixture
def url(postgres: str) -> str:
    return fresh_database(postgres)


@pytest.fixture
def other_process(url: str) -> Iterator[JobStore]:
    """A store on its own engine: what an API worker in another process writes through."""
    store = JobStore(open_store(url, migrate=False))
    yield store
    store.engine.dispose()


def spec(name: str) -> object:
    return parse_job_spec(f"name: {name}\ncommand: 'true'\nresources: {{gpus: 1, cpu: 0.1}}")


def test_a_commit_to_the_event_log_notifies_a_listener(url: str, other_process: JobStore) -> None:
    engine = open_store(url)
    heard = threading.Event()
    listener = EventListener(engine, heard.set)
    listener.start()
    try:
        assert notifies(engine) and listener.listening.wait(LIMIT)
        other_process.submit(spec("a"))
        assert heard.wait(LIMIT)
    finally:
        listener.stop()
        engine.dispose()


def test_a_submission_in_another_process_wakes_the_loop_by_notification(
    url: str, other_process: JobStore
) -> None:
    engine = open_store(url)
    loop = ReconcileLoop(engine, INVENTORY, get_policy("default"), interval=NO_TICK)
    listener = EventListener(engine, loop.poke)
    listener.start()
    loop.start()
    try:
        assert listener.listening.wait(LIMIT)
        job = other_process.submit(spec("a"))
        deadline = time.monotonic() + LIMIT
        while other_process.get(job.id).status != "running":
            assert time.monotonic() < deadline, "the loop was never woken"
            time.sleep(0.02)
        assert loop.rounds >= 1
    finally:
        loop.stop()
        listener.stop()
        engine.dispose()
