"""Preemption: who is stopped so a job can start, and who never is."""

from __future__ import annotations

from dataclasses import replace

import pytest
from builders import job, make_pool, make_queue, make_snapshot, run_job

from corral.scheduling import POLICIES, PendingReason, Preempt, schedule
from corral.scheduling.preemption import PreemptionCost, lost_work

DEFAULT = POLICIES["default"]
VICTIM_RULES = replace(DEFAULT, preemption_cost=PreemptionCost(min_runtime_seconds=0.0, payback=None))
"""The default's choice of victims without its cost gates (minimum run time, payback), which the tests
of those gates exercise apart."""


def one_node(gpus: int = 8, queues=None):
    """A single node ``p-0`` of ``gpus`` GPUs, flavor f, in private cluster c."""
    return make_snapshot(pools=[make_pool("p", "f", count=1, gpus=gpus)], queues=queues)


def victims(result) -> list[str]:
    return [p.job for p in result.preemptions]


# -- which job goes first ------------------------------------------------------------------------------


def test_lowest_priority_job_is_preempted_first() -> None:
    """Two 4-GPU jobs at priority 1 and 0 fill the node; a priority-5 4-GPU job stops the priority-0 one."""
    snapshot = one_node(queues=[make_queue("a", {"f": 16})])
    run_job(snapshot, job("p1", gpus=4, priority=1))
    run_job(snapshot, job("p0", gpus=4, priority=0))
    result = schedule(snapshot, [job("hi", gpus=4, priority=5)], VICTIM_RULES, now=10.0)
    assert victims(result) == ["p0"]
    assert [s.job for s in result.starts] == ["hi"]


@pytest.mark.parametrize(
    ("old", "new", "now", "expected"),
    [
        # old: checkpoints every 100 s, at 1050 s it loses 50 s; new: no checkpoint, started 900, loses 150 s.
        pytest.param({"checkpoint_seconds": 100.0}, {}, 1050.0, "old", id="checkpointed-old-job-loses-less"),
        # Neither checkpoints: old loses 1050 s, new only 150 s.
        pytest.param({}, {}, 1050.0, "new", id="no-checkpoints-newest-loses-less"),
        # old (every 200 s) loses the 40 s since its save at 1000; new (every 150 s) has run 140 s, has not
        # saved yet, and loses all 140 s.
        pytest.param(
            {"checkpoint_seconds": 200.0}, {"checkpoint_seconds": 150.0}, 1040.0, "old", id="both-checkpoint"
        ),
        # Equal loss (90 s each): the newest job goes.
        pytest.param({"checkpoint_seconds": 100.0}, {}, 990.0, "new", id="tie-newest-first"),
    ],
)
def test_among_equal_priority_the_job_losing_least_work_is_preempted(old, new, now, expected) -> None:
    """Equal priority: the victim is the one with least work since its last checkpoint (then the newest)."""
    snapshot = one_node(queues=[make_queue("a", {"f": 16})])
    run_job(snapshot, job("old", gpus=4, duration=10_000.0, **old), started_at=0.0)
    run_job(snapshot, job("new", gpus=4, duration=10_000.0, **new), started_at=900.0)
    result = schedule(snapshot, [job("hi", gpus=4, priority=1)], VICTIM_RULES, now=now)
    assert victims(result) == [expected]


@pytest.mark.parametrize(
    ("checkpoint", "progress_at_start", "started_at", "now", "lost"),
    [
        (None, 0.0, 0.0, 70.0, 70.0),
        (30.0, 0.0, 0.0, 70.0, 10.0),
        (30.0, 0.0, 0.0, 60.0, 0.0),
        (30.0, 60.0, 100.0, 110.0, 10.0),  # resumed from 60 s: at 70 s of progress, 10 s since the 60 s save
        (30.0, 60.0, 100.0, 135.0, 5.0),  # 95 s of progress, last save at 90 s
        (None, 60.0, 100.0, 110.0, 70.0),  # no checkpoints: everything is lost, earlier runs included
    ],
)
def test_lost_work_is_progress_since_the_last_checkpoint(
    checkpoint, progress_at_start, started_at, now, lost
) -> None:
    snapshot = one_node()
    allocation = run_job(
        snapshot,
        job("v", duration=1000.0, checkpoint_seconds=checkpoint),
        started_at=started_at,
        progress=progress_at_start,
    )
    assert lost_work(allocation, now) == pytest.approx(lost)


def test_higher_priority_job_takes_quota_back_from_its_own_queue() -> None:
    """Queue a (quota 4, no cohort) is full of a priority-0 job; a priority-3 job preempts it for quota."""
    snapshot = one_node(queues=[make_queue("a", {"f": 4})])
    run_job(snapshot, job("low", gpus=4, priority=0))
    result = schedule(snapshot, [job("hi", gpus=2, priority=3)], VICTIM_RULES, now=10.0)
    assert victims(result) == ["low"]
    assert [s.job for s in result.starts] == ["hi"]


def test_fewest_victims_after_minimisation() -> None:
    """Node: small (prio 0, 1 GPU), big (prio 1, 4 GPUs), keep (prio 10, 3 GPUs). A prio-9 job needs 4 GPUs.

    By priority, small goes first (1 free: not enough), then big (5 free: fits). Giving small back still
    leaves 4 free, so only big is stopped.
    """
    snapshot = one_node(queues=[make_queue("a", {"f": 16})])
    run_job(snapshot, job("small", gpus=1, priority=0))
    big = run_job(snapshot, job("big", gpus=4, priority=1))
    run_job(snapshot, job("keep", gpus=3, priority=10))

    result = schedule(snapshot, [job("hi", gpus=4, priority=9)], VICTIM_RULES, now=10.0)

    assert victims(result) == ["big"]
    [start] = result.starts
    assert start.job == "hi"
    assert sorted(start.placements[0].gpus) == sorted(g for p in big.placements for g in p.gpus)


def test_several_victims_when_one_is_not_enough() -> None:
    """Two priority-0 4-GPU jobs fill the node; an 8-GPU priority-1 job stops both; each Preempt names it."""
    snapshot = one_node(queues=[make_queue("a", {"f": 16})])
    run_job(snapshot, job("v1", gpus=4), started_at=0.0)
    run_job(snapshot, job("v2", gpus=4), started_at=5.0)
    result = schedule(snapshot, [job("hi", gpus=8, priority=1)], VICTIM_RULES, now=10.0)
    assert sorted(victims(result)) == ["v1", "v2"]
    assert {p.by for p in result.preemptions} == {"hi"}
    assert [s.job for s in result.starts] == ["hi"]


# -- who is never a victim -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("victim_priority", "preempted"),
    [
        pytest.param(4, True, id="lower"),
        pytest.param(5, False, id="equal"),
        pytest.param(7, False, id="higher"),
    ],
)
def test_only_lower_priority_jobs_of_the_same_queue_are_preempted(victim_priority, preempted) -> None:
    snapshot = one_node(queues=[make_queue("a", {"f": 16})])
    run_job(snapshot, job("running", gpus=8, priority=victim_priority))
    result = schedule(snapshot, [job("j", gpus=8, priority=5)], VICTIM_RULES, now=10.0)
    assert victims(result) == (["running"] if preempted else [])
    if preempted:
        assert result.preemptions[0] == Preempt("running", by="j", reason="preempted by j (priority 5 > 4)")
    else:
        assert result.pending["j"].reason is PendingReason.NO_FIT


def test_without_queues_any_lower_priority_job_is_a_victim() -> None:
    """No queues section: queue names do not protect anyone; priority alone decides."""
    snapshot = one_node(queues=None)
    run_job(snapshot, job("other-team", queue="b", gpus=8, priority=0))
    result = schedule(snapshot, [job("j", queue="a", gpus=8, priority=1)], VICTIM_RULES, now=10.0)
    assert victims(result) == ["other-team"]


def test_job_started_in_this_round_is_never_preempted_in_it() -> None:
    """Queue a's low job starts first (tie on share, name order); b's higher-priority job may not stop it."""
    snapshot = one_node(queues=None)
    result = schedule(
        snapshot,
        [job("low", queue="a", gpus=8, priority=0), job("hi", queue="b", gpus=8, priority=5)],
        DEFAULT,
        0.0,
    )
    assert [s.job for s in result.starts] == ["low"]
    assert victims(result) == []
    assert result.pending["hi"].reason is PendingReason.NO_FIT


def test_policy_without_preemption_never_preempts() -> None:
    """The fifo baseline waits instead of stopping a lower-priority job."""
    snapshot = one_node(queues=None)
    run_job(snapshot, job("low", gpus=8, priority=0))
    result = schedule(snapshot, [job("hi", gpus=8, priority=9)], POLICIES["fifo"], now=10.0)
    assert victims(result) == [] and result.starts == []


# -- reclaiming lent quota inside a cohort -------------------------------------------------------------


def cohort(gpus: int = 8, quota_a: float = 4, quota_b: float = 4, extra=()):
    return one_node(
        gpus=gpus,
        queues=[
            make_queue("a", {"f": quota_a}, cohort="c"),
            make_queue("b", {"f": quota_b}, cohort="c"),
            *extra,
        ],
    )


def test_queue_within_nominal_quota_reclaims_from_a_borrower_even_of_higher_priority() -> None:
    """b borrowed a's 4 GPUs (holds 8 at priority 10); a's priority-0 4-GPU job takes them back."""
    snapshot = cohort()
    run_job(snapshot, job("bj", queue="b", gpus=8, priority=10))

    result = schedule(snapshot, [job("aj", queue="a", gpus=4, priority=0)], VICTIM_RULES, now=10.0)

    assert result.preemptions == [
        Preempt("bj", by="aj", reason="preempted by aj: queue a reclaims quota lent to b")
    ]
    [start] = result.starts
    assert (start.job, start.cluster, start.flavor) == ("aj", "c", "f")
    assert len(start.placements[0].gpus) == 4


def test_reclaim_stops_only_as_many_borrowed_jobs_as_needed() -> None:
    """b holds two 4-GPU jobs (borrowing 4): once one is stopped b is back at nominal, so the other stays."""
    snapshot = cohort()
    run_job(snapshot, job("b-old", queue="b", gpus=4, priority=3), started_at=0.0)
    run_job(snapshot, job("b-new", queue="b", gpus=4, priority=3), started_at=5.0)
    result = schedule(snapshot, [job("aj", queue="a", gpus=4)], VICTIM_RULES, now=10.0)
    assert victims(result) == ["b-new"]  # equal priority, no checkpoints: the newest loses least
    assert [s.job for s in result.starts] == ["aj"]


def test_no_reclaim_from_a_queue_that_is_not_borrowing() -> None:
    """A 4-GPU node, a and b with 4 each: b at its nominal 4 is not borrowing: a's priority-10 job waits."""
    snapshot = cohort(gpus=4)
    run_job(snapshot, job("bj", queue="b", gpus=4, priority=0))
    result = schedule(snapshot, [job("aj", queue="a", gpus=4, priority=10)], VICTIM_RULES, now=10.0)
    assert victims(result) == []
    assert result.starts == []
    assert result.pending["aj"].reason is PendingReason.NO_FIT


@pytest.mark.parametrize(
    ("demand", "reclaims"),
    [
        pytest.param(2, True, id="within-nominal-2"),
        pytest.param(3, False, id="would-borrow-itself"),
    ],
)
def test_reclaim_only_for_a_job_within_the_preemptors_nominal_quota(demand, reclaims) -> None:
    """a 2, b 2, d 4 in one cohort; b borrows all idle quota (holds 8); a reclaims only up to its own 2."""
    snapshot = cohort(quota_a=2, quota_b=2, extra=[make_queue("d", {"f": 4}, cohort="c")])
    run_job(snapshot, job("bj", queue="b", gpus=8, priority=0))
    result = schedule(snapshot, [job("aj", queue="a", gpus=demand, priority=5)], VICTIM_RULES, now=10.0)
    assert victims(result) == (["bj"] if reclaims else [])
    if not reclaims:
        assert result.pending["aj"].reason is PendingReason.QUOTA


@pytest.mark.parametrize("a_cohort", [None, "c1"], ids=["a-in-no-cohort", "a-in-another-cohort"])
def test_no_victims_across_unrelated_queues(a_cohort) -> None:
    """b borrows inside its own cohort c2; a (no cohort or cohort c1) never preempts b at any priority."""
    snapshot = one_node(
        queues=[
            make_queue("a", {"f": 8}, cohort=a_cohort),
            make_queue("b", {"f": 4}, cohort="c2"),
            make_queue("d", {"f": 4}, cohort="c2"),
        ]
    )
    run_job(snapshot, job("bj", queue="b", gpus=8, priority=0))
    result = schedule(snapshot, [job("aj", queue="a", gpus=4, priority=100)], VICTIM_RULES, now=10.0)
    assert victims(result) == []
    assert result.pending["aj"].reason is PendingReason.NO_FIT


def test_cpu_only_job_never_reclaims_lent_gpu_quota() -> None:
    """Reclaim is for GPU a queue is owed; a job that asks no GPU has nothing to claim back."""
    queues = [make_queue("a", {"f": 4}, cohort="c"), make_queue("b", {"f": 4}, cohort="c")]
    snapshot = make_snapshot(pools=[make_pool("p", "f", count=1, gpus=8, cpu=8)], queues=queues)
    run_job(snapshot, job("b-big", queue="b", gpus=8, cpu=8, priority=100))
    result = schedule(snapshot, [job("a-cpu", queue="a", gpus=0, cpu=1)], VICTIM_RULES, now=10.0)
    assert result.preemptions == []
