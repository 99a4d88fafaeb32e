"""Elastic pools: new nodes are asked for only when needed and allowed, and idle ones are given back."""

from __future__ import annotations

from builders import job, make_cluster, make_pool, make_queue, make_snapshot

from corral.scenario.invariants import check_events
from corral.scenario.models import ClusterFile, Event
from corral.scheduling import Allocation, PendingReason, get_policy, schedule
from corral.sim.engine import Simulator

DEFAULT = get_policy("default")


def _clusters(cloud_max: int = 2, provision: float = 300.0):
    onprem = make_cluster("onprem", [make_pool("dgx", "a100", count=1)], private=True)
    cloud_pool = make_pool("cloud", "a100-cloud", count=0, max_count=cloud_max, tier="gold", cost=3.0)
    cloud_pool = cloud_pool.model_copy(update={"provision_seconds": provision})
    return [onprem, make_cluster("cloud", [cloud_pool], private=False)]


def test_job_that_fits_nowhere_now_asks_for_just_enough_cloud_nodes() -> None:
    snapshot = make_snapshot(clusters=_clusters())
    running = schedule(snapshot, [job("big", gpus=8)], DEFAULT, now=0.0)
    (start,) = running.starts
    snapshot.allocate(Allocation(job("big", gpus=8), start.cluster, start.flavor, start.placements, 0.0))
    snapshot.commit()
    result = schedule(snapshot, [job("gang", gpus=8, pods=2)], DEFAULT, now=10.0)
    assert [(s.pool, s.nodes, s.job) for s in result.scale_ups] == [("cloud", 2, "gang")]
    assert result.pending["gang"].reason is PendingReason.PROVISIONING
    assert "pool cloud" in result.pending["gang"].message


def test_sensitive_job_never_asks_for_cloud_nodes() -> None:
    snapshot = make_snapshot(clusters=_clusters())
    result = schedule(snapshot, [job("a", gpus=8), job("s", gpus=8, sensitive=True)], DEFAULT, now=0.0)
    assert [s.job for s in result.starts] == ["a"]
    assert result.scale_ups == []
    assert result.pending["s"].reason is PendingReason.NO_FIT


def test_no_scale_up_beyond_max_count_or_quota() -> None:
    snapshot = make_snapshot(clusters=_clusters(cloud_max=1))
    result = schedule(snapshot, [job("a", gpus=8), job("gang", gpus=8, pods=2)], DEFAULT, now=0.0)
    assert result.scale_ups == []
    queues = [make_queue("a", quota={"a100": 8, "a100-cloud": 0})]
    snapshot = make_snapshot(clusters=_clusters(), queues=queues)
    result = schedule(snapshot, [job("a", gpus=8), job("b", gpus=8)], DEFAULT, now=0.0)
    assert result.scale_ups == []


def test_two_jobs_in_one_round_do_not_count_on_the_same_new_node() -> None:
    snapshot = make_snapshot(clusters=_clusters(cloud_max=2))
    jobs = [
        job("a", gpus=8),
        job("b", gpus=8, submit=1),
        job("c", gpus=8, submit=2),
        job("d", gpus=8, submit=3),
    ]
    result = schedule(snapshot, jobs, DEFAULT, now=0.0)
    assert [(s.pool, s.nodes, s.job) for s in result.scale_ups] == [("cloud", 1, "b"), ("cloud", 1, "c")]
    assert result.pending["d"].reason is PendingReason.NO_FIT


def test_replay_provisions_runs_and_gives_back_cloud_nodes() -> None:
    cluster = ClusterFile(clusters=_clusters(cloud_max=2, provision=300.0))
    jobs = [job("a", gpus=8, duration=1000.0), job("b", gpus=8, submit=5.0, duration=100.0)]
    events: list[Event] = []
    summary = Simulator(cluster, jobs, DEFAULT, sink=events.append).run().summary
    started = {e.job: e for e in events if e.event == "started"}
    assert started["b"].t == 305.0 and started["b"].cluster == "cloud"
    added = [e for e in events if e.event == "node_added"]
    removed = [e for e in events if e.event == "node_removed"]
    assert [(e.t, e.node) for e in added] == [(305.0, "cloud-0")]
    assert [(e.t, e.node) for e in removed] == [(405.0 + DEFAULT.scale_down_idle_seconds, "cloud-0")]
    assert summary.cost_usd == 8 * 100.0 / 3600 * 3.0
    assert summary.cost_per_queue == {"a": summary.cost_usd}
    assert check_events(cluster, jobs, events) is None


def test_scale_up_does_not_promise_the_same_quota_twice() -> None:
    queues = [make_queue("a", quota={"a100": 8, "a100-cloud": 8})]
    snapshot = make_snapshot(clusters=_clusters(cloud_max=2), queues=queues)
    pending = [job("own", gpus=8), job("j1", gpus=8, submit=1), job("j2", gpus=8, submit=2)]
    result = schedule(snapshot, pending, DEFAULT, now=0.0)
    assert [(s.pool, s.job) for s in result.scale_ups] == [("cloud", "j1")]
