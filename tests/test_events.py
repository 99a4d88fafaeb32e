"""The event-driven control plane: a pod's exit wakes the loop, and one round both records the exit and
hands the freed GPUs to the next job (counted in rounds, with a tick too long to explain it); an agent's
long-poll for its node's pods answers when a round changes them."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import make_cluster, make_pool
from fastapi.testclient import TestClient
from httpx import Response

from corral.backends.local import LocalBackend
from corral.control.changes import Changes
from corral.control.loop import ReconcileLoop
from corral.control.reconcile import Inventory
from corral.scheduling import get_policy
from corral.server.app import API, create_app
from corral.spec.job import parse_job_spec
from corral.store.accounts import AccountStore
from corral.store.jobs import JobStore

ONE_GPU = Inventory(clusters=[make_cluster("lab", [make_pool("box", flavor="a100", count=1, gpus=1)])])
NO_TICK = 3600.0
"""An interval no test waits for: every round these tests see was started by a poke."""


def spec(name: str, command: str) -> object:
    return parse_job_spec(f"name: {name}\ncommand: '{command}'\nresources: {{gpus: 1, cpu: 0.1}}")


def wait_until(condition: object, limit: float = 30.0) -> None:
    """Until ``condition()`` holds; the limit only keeps a broken build from hanging the suite."""
    deadline = time.monotonic() + limit
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


def test_a_pod_exit_wakes_the_loop_and_one_round_finishes_it_and_starts_the_next_job(
    store: JobStore, tmp_path: Path
) -> None:
    first, second = store.submit(spec("first", "true")), store.submit(spec("second", "sleep 60"))
    backend = LocalBackend(store, tmp_path)
    loop = ReconcileLoop(
        store.engine,
        ONE_GPU,
        get_policy("default"),
        interval=NO_TICK,
        after_round=backend.sync,
        before_round=backend.record_exits,
    )
    backend.runner.on_exit = loop.poke
    loop.start()
    try:
        loop.poke()  # the submissions' poke: round 1 starts the first job, which exits at once
        wait_until(lambda: loop.rounds >= 2 and store.get(second.id).status == "running")
        # Round 2, started by the exit alone, recorded it and gave its GPU to the second job.
        assert loop.rounds == 2
        assert store.get(first.id).status == "finished"
        ended = next(e.t for e in store.events(first.id) if e.kind == "finished")
        started = next(e.t for e in store.events(second.id) if e.kind == "started")
        assert started >= ended
    finally:
        loop.stop()
        store.cancel(second.id)
        backend.sync()  # stops the sleeping pod


@pytest.fixture
def api(store: JobStore) -> Iterator[tuple[TestClient, ReconcileLoop]]:
    """The API with a reconcile loop that only pokes start (no backend: pods are only assigned)."""
    loop = ReconcileLoop(store.engine, ONE_GPU, get_policy("default"), interval=NO_TICK)
    token = AccountStore(store.engine).bootstrap()
    with TestClient(create_app(store, ONE_GPU, loop), headers={"Authorization": f"Bearer {token}"}) as client:
        yield client, loop


def node_name(client: TestClient) -> str:
    return client.get(f"{API}/nodes").json()[0]["name"]


def test_a_long_poll_for_a_nodes_pods_answers_when_a_round_assigns_one(
    api: tuple[TestClient, ReconcileLoop],
) -> None:
    client, loop = api
    node = node_name(client)
    first = client.get(f"{API}/nodes/{node}/pods")
    assert first.json() == []
    answers: list[Response] = []
    answered = threading.Event()

    def long_poll() -> None:
        headers = {"If-None-Match": first.headers["ETag"]}
        answers.append(client.get(f"{API}/nodes/{node}/pods", params={"wait": 60}, headers=headers))
        answered.set()

    poller = threading.Thread(target=long_poll)
    poller.start()
    wait_until(lambda: loop.decided._waiters)  # the poll is parked until a round decides
    assert not answered.is_set()
    job = client.post(f"{API}/jobs", json={"name": "a", "command": "true", "resources": {"gpus": 1}}).json()
    # Answered because the round that started the job changed the node's pods, long before its 60 s wait.
    assert answered.wait(timeout=30)
    poller.join()
    [answer] = answers
    assert [pod["job_id"] for pod in answer.json()] == [job["id"]]
    assert answer.headers["ETag"] != first.headers["ETag"]


def test_a_long_poll_with_nothing_changed_answers_the_same_pods_after_its_wait(
    api: tuple[TestClient, ReconcileLoop],
) -> None:
    client, _ = api
    node = node_name(client)
    tag = client.get(f"{API}/nodes/{node}/pods").headers["ETag"]
    again = client.get(f"{API}/nodes/{node}/pods", params={"wait": 0.1}, headers={"If-None-Match": tag})
    assert again.status_code == 200 and again.json() == [] and again.headers["ETag"] == tag


def test_a_change_wakes_a_waiter_and_one_already_past_returns_at_once() -> None:
    changes = Changes()

    async def scenario() -> None:
        waiter = asyncio.create_task(changes.wait(0, timeout=60))
        await asyncio.sleep(0)  # parked
        threading.Thread(target=changes.bump).start()  # from another thread, as the loop does
        await waiter
        await changes.wait(0, timeout=60)  # version 1 is past 0: no wait

    asyncio.run(asyncio.wait_for(scenario(), timeout=30))
    assert changes.version == 1 and not changes._waiters
