"""Quota admission: nominal quota, borrowing idle quota in a cohort, borrowing limits, fractional GPUs."""

from __future__ import annotations

import pytest
from builders import job, make_pool, make_queue, make_snapshot, run_job

from corral.scheduling.quota import is_borrowing, max_admissible_milli, quota_shortfall
from corral.scheduling.snapshot import Snapshot


def cohort_snapshot(a_limit: float | None = None, a_quota: float = 4, b_quota: float = 4) -> Snapshot:
    """Queues a and b in cohort c, nominal 4 + 4 GPUs of flavor f; two 8-GPU nodes (room never limits)."""
    return make_snapshot(
        pools=[make_pool("p", "f", count=2)],
        queues=[
            make_queue(
                "a",
                {"f": a_quota},
                cohort="c",
                borrowing_limit={"f": a_limit} if a_limit is not None else None,
            ),
            make_queue("b", {"f": b_quota}, cohort="c"),
        ],
    )


def hold(snapshot: Snapshot, queue: str, gpus: int, name: str | None = None) -> None:
    """Queue ``queue`` runs a job of ``gpus`` whole GPUs (one pod per GPU, anywhere)."""
    run_job(snapshot, job(name or f"{queue}-{gpus}-{len(snapshot.running)}", queue=queue, gpus=1, pods=gpus))


# -- without a cohort: nominal quota is the limit ------------------------------------------------------


@pytest.mark.parametrize(
    ("used", "demand", "fits"),
    [
        (0, 4, True),
        (0, 5, False),
        (3, 1, True),
        (3, 2, False),
        (4, 1, False),
    ],
)
def test_queue_without_cohort_gets_exactly_its_nominal_quota(used, demand, fits) -> None:
    """Quota 4 GPUs, no cohort: used + demand <= 4 is admitted, anything more is not."""
    snapshot = make_snapshot(pools=[make_pool("p", "f", count=2)], queues=[make_queue("a", {"f": 4})])
    if used:
        hold(snapshot, "a", used)
    shortfall = quota_shortfall(snapshot, "a", "f", demand * 1000)
    assert (shortfall is None) == fits
    if not fits:
        assert (
            shortfall
            == f"queue a: f quota 4 GPUs, {used} in use, job needs {demand} (no cohort to borrow from)"
        )


def test_flavor_without_quota_admits_no_gpus_but_cpu_only_jobs_pass() -> None:
    """A flavor the queue does not list has zero quota; a job asking no GPU is never held back by quota."""
    snapshot = make_snapshot(queues=[make_queue("a", {"other": 4})])
    assert quota_shortfall(snapshot, "a", "f", 1000) is not None
    assert quota_shortfall(snapshot, "a", "f", 0) is None


def test_no_queues_means_unlimited_quota() -> None:
    """Without a queues section every queue is admitted whatever it asks."""
    snapshot = make_snapshot(queues=None)
    assert quota_shortfall(snapshot, "anything", "f", 10**9) is None
    assert max_admissible_milli(snapshot, "anything", "f") is None
    assert not is_borrowing(snapshot, "anything", "f")


# -- cohorts: borrowing what the other members leave idle ----------------------------------------------


@pytest.mark.parametrize(
    ("b_used", "a_demand", "fits"),
    [
        pytest.param(0, 8, True, id="borrow-all-of-idle-b"),
        pytest.param(0, 9, False, id="more-than-the-cohort-has"),
        pytest.param(3, 5, True, id="borrow-b-idle-1"),
        pytest.param(3, 6, False, id="b-idle-is-only-1"),
        pytest.param(4, 4, True, id="own-quota-while-b-at-nominal"),
        pytest.param(4, 5, False, id="nothing-idle-to-borrow"),
    ],
)
def test_cohort_member_borrows_up_to_the_idle_quota_of_the_others(b_used, a_demand, fits) -> None:
    """a and b have 4 GPUs each: a may hold 4 + whatever b leaves idle, never more."""
    snapshot = cohort_snapshot()
    if b_used:
        hold(snapshot, "b", b_used)
    shortfall = quota_shortfall(snapshot, "a", "f", a_demand * 1000)
    assert (shortfall is None) == fits


def test_cohort_shortfall_message_names_the_idle_quota() -> None:
    """The pending explanation says how much the cohort could lend: 'cohort c has 5 of 8 GPUs idle'."""
    snapshot = cohort_snapshot()
    hold(snapshot, "b", 3)
    assert quota_shortfall(snapshot, "a", "f", 6000) == (
        "queue a: f quota 4 GPUs, 0 in use, job needs 6; cohort c has 5 of 8 GPUs idle to lend"
    )


@pytest.mark.parametrize(
    ("limit", "demand", "fits"),
    [
        (1, 5, True),
        (1, 6, False),
        (0, 4, True),
        (0, 5, False),
        (10, 8, True),  # a limit above what the cohort has does not add quota
        (10, 9, False),
    ],
)
def test_borrowing_limit_caps_what_a_queue_may_borrow(limit, demand, fits) -> None:
    """a has 4 GPUs and may borrow at most ``limit`` more, even when b leaves all of its 4 idle."""
    snapshot = cohort_snapshot(a_limit=limit)
    shortfall = quota_shortfall(snapshot, "a", "f", demand * 1000)
    assert (shortfall is None) == fits
    if not fits and demand <= 4 + limit:
        assert "idle to lend" in shortfall
    elif not fits:
        assert shortfall == f"queue a: f quota 4 + borrowing limit {limit} GPUs, 0 in use, job needs {demand}"


def test_borrowing_limit_counts_what_is_already_borrowed() -> None:
    """a borrows 1 of its limit of 2 already (holds 5): one more GPU is fine, two are not."""
    snapshot = cohort_snapshot(a_limit=2)
    hold(snapshot, "a", 5)
    assert quota_shortfall(snapshot, "a", "f", 1000) is None
    assert quota_shortfall(snapshot, "a", "f", 2000) == (
        "queue a: f quota 4 + borrowing limit 2 GPUs, 5 in use, job needs 2"
    )


def test_cohort_fully_lent_holds_back_even_a_job_within_nominal_quota() -> None:
    """b borrowed all of a's quota (holds 8): a's 1-GPU job is within quota but waits for a reclaim."""
    snapshot = cohort_snapshot()
    hold(snapshot, "b", 8)
    assert is_borrowing(snapshot, "b", "f")
    assert quota_shortfall(snapshot, "a", "f", 1000) == (
        "queue a: within its f quota (1 of 4 GPUs) but cohort c has lent it out (0 idle); "
        "reclaim needs preemption of borrowers"
    )


# -- the most a queue could ever hold ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("queues", "expected"),
    [
        pytest.param([make_queue("a", {"f": 4})], 4000, id="no-cohort-nominal"),
        pytest.param([make_queue("a", {"g": 4})], 0, id="flavor-not-listed"),
        pytest.param(
            [make_queue("a", {"f": 4}, cohort="c"), make_queue("b", {"f": 6}, cohort="c")],
            10000,
            id="whole-cohort",
        ),
        pytest.param(
            [
                make_queue("a", {"f": 4}, cohort="c", borrowing_limit={"f": 2}),
                make_queue("b", {"f": 6}, cohort="c"),
            ],
            6000,
            id="nominal-plus-limit",
        ),
        pytest.param(
            [
                make_queue("a", {"f": 4}, cohort="c", borrowing_limit={"f": 20}),
                make_queue("b", {"f": 6}, cohort="c"),
            ],
            10000,
            id="limit-above-cohort",
        ),
        pytest.param(
            [
                make_queue("a", {"f": 4}, cohort="c", borrowing_limit={"g": 0}),
                make_queue("b", {"f": 6}, cohort="c"),
            ],
            10000,
            id="limit-for-other-flavor-only",
        ),
        pytest.param(
            [make_queue("a", {}, cohort="c"), make_queue("b", {"f": 6}, cohort="c")],
            6000,
            id="zero-nominal-borrows-all",
        ),
        pytest.param(
            [make_queue("a", {"f": 4}, cohort="c"), make_queue("b", {"f": 6}, cohort="other")],
            4000,
            id="other-cohort-lends-nothing",
        ),
    ],
)
def test_max_admissible_is_nominal_plus_everything_the_cohort_could_lend(queues, expected) -> None:
    """The ceiling used to reject jobs that could never be admitted (OVER_QUOTA_LIMIT)."""
    snapshot = make_snapshot(queues=queues)
    assert max_admissible_milli(snapshot, "a", "f") == expected


def test_max_admissible_ignores_current_usage() -> None:
    """The ceiling is static: what others hold now does not lower it."""
    snapshot = cohort_snapshot()
    hold(snapshot, "b", 8)
    assert max_admissible_milli(snapshot, "a", "f") == 8000


# -- borrowing state -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("held", "borrowing"), [(0, False), (3, False), (4, False), (5, True), (8, True)])
def test_is_borrowing_when_holding_more_than_nominal(held, borrowing) -> None:
    """b (quota 4) is borrowing only while it holds more than 4 GPUs of the flavor."""
    snapshot = cohort_snapshot()
    if held:
        hold(snapshot, "b", held)
    assert is_borrowing(snapshot, "b", "f") is borrowing
    assert not is_borrowing(snapshot, "b", "other-flavor")


def test_releasing_a_job_gives_quota_back() -> None:
    """After a borrower's job is released (preempted or finished), the cohort's idle quota is back."""
    snapshot = cohort_snapshot()
    hold(snapshot, "b", 8, name="big")
    assert quota_shortfall(snapshot, "a", "f", 4000) is not None
    snapshot.release("big")
    assert quota_shortfall(snapshot, "a", "f", 4000) is None
    assert not is_borrowing(snapshot, "b", "f")


# -- fractional GPUs count in milli --------------------------------------------------------------------


def test_fractional_shares_count_against_quota_in_milli() -> None:
    """Quota 1.5 GPUs: two 500-milli shares and one 250 fit (1250), a further 500 does not (1750)."""
    snapshot = make_snapshot(queues=[make_queue("a", {"f": 1.5})])
    share = job("s1", milli=500)
    assert share.gpu_demand_milli == 500
    run_job(snapshot, share)
    run_job(snapshot, job("s2", milli=500))
    run_job(snapshot, job("s3", milli=250))
    assert snapshot.queue_gpu[("a", "f")] == 1250
    assert quota_shortfall(snapshot, "a", "f", 250) is None
    assert quota_shortfall(snapshot, "a", "f", 500) == (
        "queue a: f quota 1.5 GPUs, 1.25 in use, job needs 0.5 (no cohort to borrow from)"
    )


def test_fractional_borrowing_in_a_cohort() -> None:
    """a has 0.5 GPU and b 0.5 idle: a may hold 1000 milli, and holding 750 it is borrowing."""
    snapshot = cohort_snapshot(a_quota=0.5, b_quota=0.5)
    run_job(snapshot, job("s", milli=750))
    assert is_borrowing(snapshot, "a", "f")
    assert quota_shortfall(snapshot, "a", "f", 250) is None
    assert quota_shortfall(snapshot, "a", "f", 251) is not None
    assert max_admissible_milli(snapshot, "a", "f") == 1000
