"""The simulator applies decisions the way the control plane will: these are the cases that once went wrong."""

from __future__ import annotations

import pytest
from builders import job, make_cluster, make_pool, make_queue

from corral.errors import CorralError
from corral.scenario.invariants import check_events
from corral.scenario.models import ClusterFile, Event, Summary
from corral.scheduling import get_policy
from corral.sim.engine import Simulator
from corral.sim.report import REJECTED_SHOWN

DEFAULT = get_policy("default")


def _replay(cluster: ClusterFile, jobs, cluster_events=()):  # type: ignore[no-untyped-def]
    events: list[Event] = []
    result = Simulator(cluster, jobs, DEFAULT, cluster_events=cluster_events, sink=events.append).run()
    assert check_events(cluster, jobs, events) is None
    return result, events


def _starts(events: list[Event]) -> list[tuple[float, str, str]]:
    return [(e.t, e.job, e.placements[0].node) for e in events if e.event == "started" and e.placements]


def test_preempted_job_restarts_elsewhere_at_the_same_instant() -> None:
    cluster = ClusterFile(
        clusters=[
            make_cluster("own", [make_pool("dgx", "a100", gpus=8)], private=True),
            make_cluster("cloud", [make_pool("vm", "a100c", gpus=8)], private=False),
        ]
    )
    jobs = [
        job("low", gpus=8, duration=1000.0),
        job("high", gpus=8, priority=5, submit=400.0, duration=5000.0, sensitive=True),
    ]
    _, events = _replay(cluster, jobs)
    assert _starts(events) == [(0.0, "low", "dgx-0"), (400.0, "high", "dgx-0"), (400.0, "low", "vm-0")]


def test_shares_with_gpu_memory_leave_the_gpu_idle_for_a_whole_gpu_job() -> None:
    cluster = ClusterFile(clusters=[make_cluster("c", [make_pool("n", "f", gpus=1)])])
    jobs = [
        job("a", milli=100, gpu_mem=0.1, duration=10.0),
        job("b", milli=100, gpu_mem=0.2, duration=5.0),
        job("whole", gpus=1, submit=20.0),
    ]
    result, _ = _replay(cluster, jobs)
    assert result.summary.finished == 3


def test_idle_elastic_node_is_given_back_whatever_the_float_rounding() -> None:
    cloud = make_pool("cloud", "a100", count=0, max_count=1, cost=1.0)
    cluster = ClusterFile(clusters=[make_cluster("c", [cloud], private=False)])
    _, events = _replay(cluster, [job("j", gpus=1, duration=3968.611547991774)])
    assert [e.event for e in events if e.node] == ["node_added", "node_removed"]


def test_makespan_ends_with_the_last_job_not_the_last_node_event() -> None:
    cloud = make_pool("cloud", "a100", count=0, max_count=1)
    cluster = ClusterFile(clusters=[make_cluster("c", [cloud], private=False)])
    result, events = _replay(cluster, [job("j", gpus=1, duration=100.0)])
    assert events[-1].event == "node_removed"
    assert result.summary.makespan == 100.0
    assert result.summary.gpu_allocation == 1 / 8  # one GPU of the 8-GPU node, over the whole makespan


def test_injected_node_added_cannot_collide_with_a_provisioning_node() -> None:
    cloud = make_pool("cloud", "a100", count=0, max_count=2).model_copy(update={"provision_seconds": 100.0})
    cluster = ClusterFile(clusters=[make_cluster("c", [cloud], private=False)])
    with pytest.raises(CorralError, match="already exists or is being provisioned"):
        _replay(cluster, [job("j", gpus=1)], [Event(t=50.0, event="node_added", node="cloud-0")])


@pytest.mark.parametrize("name", ["dgx-01", "nope-1", "dgx"])
def test_node_names_must_be_exactly_pool_dash_index(name: str) -> None:
    cluster = ClusterFile(clusters=[make_cluster("c", [make_pool("dgx", "a100", count=1, max_count=3)])])
    with pytest.raises(CorralError, match="node names are"):
        Simulator(cluster, [], DEFAULT, cluster_events=[Event(t=1.0, event="node_added", node=name)]).run()


def test_a_preemption_loses_the_work_since_the_victims_last_checkpoint_on_every_gpu_it_held() -> None:
    cluster = ClusterFile(clusters=[make_cluster("own", [make_pool("dgx", "a100", gpus=8)])])
    jobs = [
        job("saves", gpus=4, duration=5000.0, checkpoint_seconds=300.0),
        job("never-saves", gpus=4, duration=5000.0),
        job("urgent", gpus=8, priority=5, submit=1000.0, duration=100.0),
    ]
    result, _ = _replay(cluster, jobs)
    assert result.summary.preemptions == 2
    # 100 s since the checkpoint at 900 s on 4 GPUs, and all 1000 s on 4 GPUs.
    assert result.summary.lost_gpu_hours == pytest.approx((100 * 4 + 1000 * 4) / 3600)
    assert result.summary.zero_length_runs == 0


def test_summary_counts_rejections_by_reason_and_spells_out_the_first() -> None:
    cluster = ClusterFile(
        clusters=[make_cluster("c", [make_pool("n", "f", gpus=8)])],
        queues=[make_queue("a", quota={"f": 8})],
    )
    jobs = [job("ok", gpus=8)]
    jobs += [job(f"wide{i}", gpus=8, pods=2, submit=float(i)) for i in range(6)]  # two nodes' worth
    jobs += [job("lost", queue="nowhere", submit=10.0)]
    summary = _replay(cluster, jobs)[0].summary
    assert summary.rejected == 7
    assert summary.rejected_by_reason == {"never_fits": 6, "unknown_queue": 1}
    assert [r.job for r in summary.rejected_jobs] == [f"wide{i}" for i in range(REJECTED_SHOWN)]
    first = summary.rejected_jobs[0]
    assert (first.t, first.reason) == (0.0, "never_fits")
    assert "2 pods" in first.message
    assert Summary.model_validate_json(summary.model_dump_json()) == summary


@pytest.mark.parametrize(("limit", "idled"), [(2.0, 2.0), (None, 0.0)])
def test_summary_says_when_a_borrowing_limit_not_demand_left_gpus_idle(limit, idled) -> None:
    """One 8-GPU node; qa's quota is 2 plus at most ``limit`` borrowed, qb (quota 6) asks for nothing.
    qa submits three 2-GPU jobs of an hour: with the limit one waits an hour beside 4 idle GPUs (its 2 GPUs
    for an hour are what the limit idled); without it all three run at once."""
    cluster = ClusterFile(
        clusters=[make_cluster("c", [make_pool("n", "f", gpus=8)])],
        queues=[
            make_queue("qa", {"f": 2}, cohort="lab", borrowing_limit=None if limit is None else {"f": limit}),
            make_queue("qb", {"f": 6}, cohort="lab"),
        ],
    )
    jobs = [job(f"a{i}", queue="qa", gpus=2, duration=3600.0) for i in range(3)]
    summary = _replay(cluster, jobs)[0].summary
    assert summary.finished == 3
    assert summary.gpu_hours_idled_by_limits == pytest.approx(idled)
    assert summary.queues["qa"].gpu_hours_idled_by_limit == pytest.approx(idled)


def test_a_job_kept_out_by_a_reservation_starts_when_the_reservation_moves_without_any_release() -> None:
    """r holds 6 of 8 GPUs with no time limit, so it is expected to run as long again as it has run: the
    8-GPU job's reservation moves later as time passes. s (2 GPUs, time limit 4000 s) would overrun it
    at first; by t=5000 the reservation is at 10,000 and s fits before it. Nothing is released then, only
    x arrives (on another node): s must get its look in that round, not when r ends at 50,000."""
    cluster = ClusterFile(
        clusters=[
            make_cluster("c", [make_pool("n", "f", gpus=8, count=1)]),
            make_cluster("o", [make_pool("m", "g", gpus=1, count=1)]),
        ]
    )
    jobs = [
        job("r", gpus=6, duration=50_000.0),
        job("wide", gpus=8, submit=1.0, duration=100.0),
        job("s", gpus=2, submit=2.0, duration=100.0, time_limit=4000.0),
        job("x", gpus=1, model="g", submit=5000.0, duration=10.0),
    ]
    _, events = _replay(cluster, jobs)
    assert {e.job: e.t for e in events if e.event == "started"}["s"] == 5000.0
