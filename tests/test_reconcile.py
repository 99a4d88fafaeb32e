"""The reconcile round: stored jobs go through the scheduler and its decisions come back to the store,
all in one transaction; repeating a round changes nothing; a failed round changes nothing."""

from __future__ import annotations

import pytest
from builders import make_cluster, make_pool
from sqlalchemy import text
from sqlalchemy.orm import Session

from corral.control.active import ActiveJobs
from corral.control.reconcile import Inventory, RoundConflict, reconcile
from corral.scheduling import get_policy
from corral.spec.job import parse_job_spec
from corral.store.jobs import JobStore

INVENTORY = Inventory(clusters=[make_cluster("lab", [make_pool("dgx", flavor="a100", count=1, gpus=8)])])
POLICY = get_policy("default")


def spec(name: str, gpus: int, **extra: object) -> object:
    lines = [f"name: {name}", "command: python train.py", f"resources: {{gpus: {gpus}, cpu: 1}}"]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    return parse_job_spec("\n".join(lines))


def test_a_round_starts_what_fits_and_records_why_the_rest_waits(store: JobStore) -> None:
    a, b, c = (store.submit(spec(name, 4)) for name in ("a", "b", "c"))
    result = reconcile(store.engine, INVENTORY, POLICY, now=10.0)
    assert {s.job for s in result.starts} == {a.id, b.id}
    assert store.get(a.id).status == store.get(b.id).status == "running"
    assert sorted(
        gpu for _, _, gpus in store.placements(a.id) + store.placements(b.id) for gpu in gpus
    ) == list(range(8))
    waiting = store.get(c.id)
    assert waiting.status == "pending" and "insufficient GPUs" in (waiting.reason or "")


def test_repeating_a_round_starts_nothing_twice(store: JobStore) -> None:
    job = store.submit(spec("a", 4))
    reconcile(store.engine, INVENTORY, POLICY, now=10.0)
    placed = store.placements(job.id)
    assert not reconcile(store.engine, INVENTORY, POLICY, now=20.0).starts
    assert store.placements(job.id) == placed


def test_a_finished_job_frees_its_gpus_for_the_next_round(store: JobStore) -> None:
    a, b = store.submit(spec("a", 8)), store.submit(spec("b", 8))
    reconcile(store.engine, INVENTORY, POLICY, now=0.0)
    assert store.get(b.id).status == "pending"
    store.finish(a.id, succeeded=True)
    assert [s.job for s in reconcile(store.engine, INVENTORY, POLICY, now=100.0).starts] == [b.id]
    assert store.get(a.id).status == "finished" and store.placements(a.id) == []


def test_a_preempted_job_goes_back_to_pending_with_its_checkpointed_progress(store: JobStore) -> None:
    low = store.submit(spec("low", 8, checkpoint="{dir: /ckpt, interval: 60}"))
    reconcile(store.engine, INVENTORY, POLICY, now=0.0)
    high = store.submit(spec("high", 8, priority=10))
    result = reconcile(store.engine, INVENTORY, POLICY, now=450.0)
    assert [p.job for p in result.preemptions] == [low.id] and [s.job for s in result.starts] == [high.id]
    requeued = store.get(low.id)
    assert requeued.status == "pending" and "preempted by" in (requeued.reason or "")
    assert store.placements(low.id) == [] and store.get(high.id).status == "running"
    with store.engine.connect() as connection:
        query = text("SELECT checkpointed_seconds FROM jobs WHERE id = :id")
        saved = connection.execute(query, {"id": low.id}).scalar()
    assert saved == 420.0  # 450 s of work, checkpoints every 60 s


def test_a_job_no_node_can_ever_hold_is_failed_with_the_reason(store: JobStore) -> None:
    job = store.submit(spec("huge", 16))
    reconcile(store.engine, INVENTORY, POLICY, now=0.0)
    failed = store.get(job.id)
    assert failed.status == "failed" and failed.reason


def test_a_round_that_fails_changes_nothing(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    job = store.submit(spec("a", 4))

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("server killed mid-round")

    monkeypatch.setattr("corral.control.reconcile._record", crash)
    with pytest.raises(RuntimeError):
        reconcile(store.engine, INVENTORY, POLICY, now=0.0)
    assert store.get(job.id).status == "pending" and store.placements(job.id) == []
    monkeypatch.undo()
    assert [s.job for s in reconcile(store.engine, INVENTORY, POLICY, now=1.0).starts] == [job.id]


def test_a_cancel_between_a_rounds_read_and_its_starts_rolls_every_start_back(store: JobStore) -> None:
    a, b = store.submit(spec("a", 4)), store.submit(spec("b", 4))
    jobs = ActiveJobs()
    read = jobs.refresh

    def read_then_cancel(session: Session, now: float) -> None:
        read(session, now)
        store.cancel(b.id)

    jobs.refresh = read_then_cancel  # type: ignore[method-assign]
    with pytest.raises(RoundConflict):
        reconcile(store.engine, INVENTORY, POLICY, now=10.0, jobs=jobs)
    assert store.get(a.id).status == "pending" and store.placements(a.id) == []
    assert store.get(b.id).status == "cancelled" and store.placements(b.id) == []
    del jobs.refresh
    assert [s.job for s in reconcile(store.engine, INVENTORY, POLICY, now=11.0, jobs=jobs).starts] == [a.id]
    assert store.get(a.id).status == "running" and store.get(a.id).attempt == 1


def test_a_node_that_stops_heartbeating_is_down_and_its_work_resumes_elsewhere(store: JobStore) -> None:
    """Two 8-GPU nodes; heartbeat timeout 10 s. The job's node goes silent: at the next round the job is
    requeued with its checkpointed progress and starts on the node that still answers, in that round."""
    from corral.store.nodes import NodeStore

    clock = [0.0]
    nodes = NodeStore(store.engine, clock=lambda: clock[0])
    inventory = Inventory(
        clusters=[make_cluster("lab", [make_pool("n", flavor="a100", count=2, gpus=8)])],
        heartbeat_timeout=10.0,
    )
    nodes.heartbeat("n-0")
    nodes.heartbeat("n-1")
    job = store.submit(spec("train", 8, checkpoint="{dir: /ckpt, interval: 60}"))
    reconcile(store.engine, inventory, POLICY, now=0.0)
    [(_, first_node, _)] = store.placements(job.id)
    other = "n-1" if first_node == "n-0" else "n-0"
    clock[0] = 100.0
    nodes.heartbeat(other)
    result = reconcile(store.engine, inventory, POLICY, now=100.0)
    assert [s.job for s in result.starts] == [job.id]
    assert [node for _, node, _ in store.placements(job.id)] == [other]
    with store.engine.connect() as connection:
        saved = connection.execute(
            text("SELECT checkpointed_seconds FROM jobs WHERE id = :id"), {"id": job.id}
        )
        kinds = connection.execute(
            text("SELECT kind FROM events WHERE job_id = :id ORDER BY id"), {"id": job.id}
        )
        assert saved.scalar() == 60.0
        assert [k for (k,) in kinds] == ["submitted", "started", "node_lost", "started"]


def test_a_restarted_server_gives_its_agents_one_timeout_to_check_in(store: JobStore) -> None:
    """The server was down from t=101 to t=200: no agent could heartbeat. Its first rounds must not take
    that silence for lost nodes (and requeue work the agents still run, or finished meanwhile): a node
    heard before the start is down only one timeout after it; one never heard from is down at once."""
    from dataclasses import replace

    from corral.store.nodes import NodeStore

    clock = [100.0]
    nodes = NodeStore(store.engine, clock=lambda: clock[0])
    before = Inventory(
        clusters=[make_cluster("lab", [make_pool("n", flavor="a100", count=2, gpus=8)])],
        heartbeat_timeout=10.0,
    )
    nodes.heartbeat("n-0")
    job = store.submit(spec("train", 8))
    reconcile(store.engine, before, POLICY, now=100.0)
    assert [node for _, node, _ in store.placements(job.id)] == ["n-0"]
    restarted = replace(before, heard_since=200.0)
    second = store.submit(spec("second", 8))
    reconcile(store.engine, restarted, POLICY, now=205.0)
    assert (store.get(job.id).status, store.get(job.id).attempt) == ("running", 1)
    assert store.get(second.id).status == "pending"  # n-1 was never heard from: down, no work
    clock[0] = 209.0
    nodes.heartbeat("n-0")  # its agent checked in: it goes on
    reconcile(store.engine, restarted, POLICY, now=215.0)
    assert (store.get(job.id).status, store.get(job.id).attempt) == ("running", 1)
    reconcile(store.engine, restarted, POLICY, now=220.0)  # silent 11 s since it checked in: lost
    assert "node_lost" in [e.kind for e in store.events(job.id)]


def test_nodes_never_heard_from_take_no_work(store: JobStore) -> None:
    inventory = Inventory(clusters=INVENTORY.clusters, heartbeat_timeout=10.0)
    job = store.submit(spec("a", 1))
    assert not reconcile(store.engine, inventory, POLICY, now=50.0).starts
    assert "down" in (store.get(job.id).reason or "")


def test_a_job_past_its_time_limit_fails_and_frees_its_gpus(store: JobStore) -> None:
    job = store.submit(spec("short", 8, time_limit="60"))
    reconcile(store.engine, INVENTORY, POLICY, now=0.0)
    waiting = store.submit(spec("next", 8))
    reconcile(store.engine, INVENTORY, POLICY, now=59.0)
    assert store.get(job.id).status == "running"
    result = reconcile(store.engine, INVENTORY, POLICY, now=61.0)
    assert store.get(job.id).status == "failed" and "time limit (60 s)" in (store.get(job.id).reason or "")
    assert [s.job for s in result.starts] == [waiting.id]


def test_jobs_carried_between_rounds_are_those_still_pending_or_running(store: JobStore) -> None:
    jobs = ActiveJobs()
    a, b = store.submit(spec("a", 8)), store.submit(spec("b", 8))
    reconcile(store.engine, INVENTORY, POLICY, now=0.0, jobs=jobs)
    assert set(jobs.jobs) == {a.id, b.id}
    store.finish(a.id, succeeded=True)
    assert [s.job for s in reconcile(store.engine, INVENTORY, POLICY, now=100.0, jobs=jobs).starts] == [b.id]
    assert set(jobs.jobs) == {b.id}
