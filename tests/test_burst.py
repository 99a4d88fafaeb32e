"""Bursting waits for the queue's threshold: a job uses public clusters only after waiting
``burst_after_seconds``; until then it waits for private room, and says when it may burst. The simulator,
and the control plane's reconcile loop, wake at that moment even if nothing else happens (issue 6, first
slice)."""

from __future__ import annotations

import time
from pathlib import Path

from builders import job, make_cluster, make_pool

from corral.control.loop import ReconcileLoop
from corral.control.reconcile import Inventory
from corral.core.nodes import build_initial_nodes
from corral.core.queues import QueueSpec
from corral.scenario.invariants import check_events
from corral.scenario.models import ClusterFile, Event
from corral.scheduling import Allocation, get_policy, schedule
from corral.scheduling.snapshot import Snapshot
from corral.sim.engine import Simulator
from corral.spec.job import JobSpec
from corral.spec.queue import QueueConfig
from corral.store.database import open_store
from corral.store.jobs import JobStore
from corral.store.queues import QueueStore

DEFAULT = get_policy("default")
CLUSTERS = [
    make_cluster("lab", [make_pool("dgx", flavor="a100", count=1, gpus=8)], private=True),
    make_cluster(
        "cloud", [make_pool("cloud", flavor="a100-cloud", count=1, gpus=8, cost=3.0)], private=False
    ),
]
QUEUE = QueueSpec(name="a", quota={"a100": 8, "a100-cloud": 8}, burst_after_seconds=600)


def _busy_lab() -> Snapshot:
    snapshot = Snapshot(CLUSTERS, build_initial_nodes(CLUSTERS), [QUEUE])
    result = schedule(snapshot, [job("first", gpus=8, duration=10_000)], DEFAULT, now=0.0)
    [start] = result.starts
    snapshot.allocate(
        Allocation(job("first", gpus=8, duration=10_000), start.cluster, start.flavor, start.placements, 0.0)
    )
    return snapshot


def test_a_job_waits_for_private_room_until_its_queue_s_threshold_then_bursts() -> None:
    snapshot = _busy_lab()
    waiting = job("second", gpus=8)
    early = schedule(snapshot, [waiting], DEFAULT, now=100.0)
    assert not early.starts and early.wake_at == 600.0
    assert "may burst to public clusters at t=600 s" in early.pending["second"].message
    late = schedule(snapshot, [waiting], DEFAULT, now=600.0)
    assert [(s.job, s.cluster) for s in late.starts] == [("second", "cloud")] and late.wake_at is None


def test_sensitive_work_never_bursts_sets_no_wake_and_says_why_it_leaves_public_gpus_idle() -> None:
    snapshot = _busy_lab()
    secret = job("secret", gpus=8).model_copy(update={"sensitive": True})
    result = schedule(snapshot, [secret], DEFAULT, now=10_000.0)
    assert not result.starts and result.wake_at is None
    message = result.pending["secret"].message
    assert message.startswith(
        "job is sensitive, so it runs only on private clusters (not on cloud); lab/a100:"
    )


def test_the_simulator_bursts_exactly_when_the_threshold_passes() -> None:
    cluster = ClusterFile(clusters=CLUSTERS, queues=[QUEUE])
    jobs = [job("first", gpus=8, duration=10_000.0), job("second", gpus=8, submit=5.0, duration=100.0)]
    events: list[Event] = []
    summary = Simulator(cluster, jobs, DEFAULT, sink=events.append).run().summary
    started = {e.job: e for e in events if e.event == "started"}
    assert (started["second"].t, started["second"].cluster) == (605.0, "cloud")
    assert summary.cost_usd == 8 * 100.0 / 3600 * 3.0
    assert check_events(cluster, jobs, events) is None


def test_the_reconcile_loop_runs_a_round_when_the_threshold_passes(tmp_path: Path) -> None:
    """Rounds come every 60 s here and nothing pokes the loop after the first round, so only that round's
    ``wake_at`` can start the second job within the 20 s this test waits."""
    store = JobStore(open_store(f"sqlite:///{tmp_path / 'corral.db'}"))
    QueueStore(store.engine).put(QueueConfig(name="a", quota=None, burst_after_seconds=0.5))
    first, second = (
        store.submit(JobSpec(name=name, queue="a", command="train", resources={"gpus": 8}))
        for name in ("first", "second")
    )
    loop = ReconcileLoop(store.engine, Inventory(CLUSTERS), DEFAULT, interval=60.0)
    loop.start()
    try:
        loop.poke()
        deadline = time.monotonic() + 20.0
        while store.get(second.id).status != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        loop.stop()
    assert [node for _, node, _ in store.placements(first.id)] == ["dgx-0"]
    assert [node for _, node, _ in store.placements(second.id)] == ["cloud-0"]
    [started] = [event.t for event in store.events(second.id) if event.kind == "started"]
    assert started >= second.submitted_at + 0.5
    store.engine.dispose()
