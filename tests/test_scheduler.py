"""One scheduling round end to end: ordering (DRF, priority, FIFO), rejections, domain choice, purity."""

from __future__ import annotations

import pytest
from builders import job, make_cluster, make_pool, make_queue, make_snapshot, node_state, run_job

from corral.core.nodes import build_initial_nodes
from corral.scheduling import POLICIES, PendingReason, Reject, Snapshot, schedule

DEFAULT = POLICIES["default"]
STRICT = POLICIES["strict-fifo"]
FIFO = POLICIES["fifo"]


def started(result) -> list[str]:
    return [s.job for s in result.starts]


# -- ordering between queues: weighted dominant resource share (DRF) ----------------------------------


@pytest.mark.parametrize(
    ("weight_b", "first"),
    [
        # qa holds 4/16 GPUs: share 0.25 / weight 1 = 0.25.
        # qb holds 6/16 GPUs: share 0.375 / weight 2 = 0.1875 < 0.25, so qb goes first.
        pytest.param(2.0, "b1", id="weight-2-makes-b-poorer"),
        # Same holdings, weight 1: qb's 0.375 > qa's 0.25, so qa goes first.
        pytest.param(1.0, "a1", id="equal-weights"),
    ],
)
def test_queue_with_lowest_weighted_dominant_share_goes_first(weight_b, first) -> None:
    """Only 4 GPUs are free in one place (p-0 GPUs 4-7; p-1 has 2): the poorer queue's job gets them."""
    snapshot = make_snapshot(
        pools=[make_pool("p", "f", count=2)],
        queues=[make_queue("qa", {"f": 16}), make_queue("qb", {"f": 16}, weight=weight_b)],
    )
    run_job(snapshot, job("ra", queue="qa", gpus=4), "p-0")
    run_job(snapshot, job("rb", queue="qb", gpus=6), "p-1")
    a1, b1 = job("a1", queue="qa", gpus=4), job("b1", queue="qb", gpus=4)

    result = schedule(snapshot, [a1, b1], DEFAULT, now=0.0)

    assert started(result) == [first]
    loser = "b1" if first == "a1" else "a1"
    assert result.pending[loser].reason is PendingReason.NO_FIT
    assert result.preemptions == []


def test_drf_interleaves_queues_by_weighted_share_as_jobs_start() -> None:
    """One 8-GPU node, 2-GPU jobs, qa weight 1 and qb weight 2, nothing running; room for four jobs.

    Shares are GPUs held / 8 / weight; ties go to the queue name:
      qa 0, qb 0      -> qa (name)   a1 starts: qa = 2/8/1 = 0.25
      qa .25, qb 0    -> qb          b1 starts: qb = 2/8/2 = 0.125
      qa .25, qb .125 -> qb          b2 starts: qb = 4/8/2 = 0.25
      qa .25, qb .25  -> qa (name)   a2 starts: qa = 0.5; the node is now full.
    """
    snapshot = make_snapshot(
        pools=[make_pool("p", "f", count=1)],
        queues=[make_queue("qa", {"f": 8}), make_queue("qb", {"f": 8}, weight=2.0)],
    )
    pending = [job(f"a{i}", queue="qa", gpus=2, submit=i) for i in range(1, 5)]
    pending += [job(f"b{i}", queue="qb", gpus=2, submit=i) for i in range(1, 5)]

    result = schedule(snapshot, pending, DEFAULT, now=0.0)

    assert started(result) == ["a1", "b1", "b2", "a2"]
    assert sorted(result.pending) == ["a3", "a4", "b3", "b4"]


def test_cpu_counts_in_the_dominant_share_of_queues_without_quota() -> None:
    """No quotas: qa holds no GPU but half the CPU; qb holds 1/8 of the GPUs: qb's dominant share is
    lower, so b1 goes first."""
    snapshot = make_snapshot(pools=[make_pool("p", "f", count=1, cpu=64)], queues=None)
    run_job(snapshot, job("ra", queue="qa", gpus=0, cpu=32))
    run_job(snapshot, job("rb", queue="qb", gpus=1))
    # 7 GPUs and 32 CPU free: one of the two 7-GPU jobs can start.
    result = schedule(snapshot, [job("a1", queue="qa", gpus=7), job("b1", queue="qb", gpus=7)], DEFAULT, 0.0)
    assert started(result) == ["b1"]


@pytest.mark.parametrize("weight_b", [1.0, 4.0])
def test_a_queue_within_its_quota_goes_before_a_borrower_whatever_their_shares(weight_b) -> None:
    """Cohort of qa (quota 6) and qb (quota 2) on one 8-GPU node. qa uses 4 of its own 6 GPUs (half the
    cluster); qb uses 3, one of them borrowed, so it holds less. One GPU is free: plain DRF would give it
    to qb; fair sharing gives it to qa, whose quota it is, at any weight of qb's."""
    snapshot = make_snapshot(
        pools=[make_pool("p", "f", count=1)],
        queues=[
            make_queue("qa", {"f": 6}, cohort="c"),
            make_queue("qb", {"f": 2}, cohort="c", weight=weight_b),
        ],
    )
    run_job(snapshot, job("ra", queue="qa", gpus=4))
    run_job(snapshot, job("rb", queue="qb", gpus=3))

    result = schedule(snapshot, [job("b1", queue="qb", gpus=1), job("a1", queue="qa", gpus=1)], DEFAULT, 0.0)

    assert started(result) == ["a1"]


def test_borrowers_are_ordered_by_what_they_borrow_over_what_the_cohort_lends() -> None:
    """Cohort quotas 4 + 4 + 8 on two 8-GPU nodes; the big queue qc lends. qa borrows 2 of the 16
    lendable GPUs (1/8), qb borrows 1 (1/16): the next free GPU goes to qb, then qa (now equal, by name)."""
    snapshot = make_snapshot(
        pools=[make_pool("p", "f", count=2)],
        queues=[
            make_queue("qa", {"f": 4}, cohort="c"),
            make_queue("qb", {"f": 4}, cohort="c"),
            make_queue("qc", {"f": 8}, cohort="c"),
        ],
    )
    run_job(snapshot, job("ra", queue="qa", gpus=6), "p-0")
    run_job(snapshot, job("rb", queue="qb", gpus=5), "p-1")
    pending = [job("a1", queue="qa", gpus=1, submit=0), job("b1", queue="qb", gpus=1, submit=1)]
    pending += [job("b2", queue="qb", gpus=1, submit=2)]

    result = schedule(snapshot, pending, DEFAULT, 0.0)

    assert started(result) == ["b1", "a1", "b2"]


# -- ordering inside a queue: priority, then submission ------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected_started", "expected_pending"),
    [
        # priority 1 before 0; z (submitted 10) before y (submitted 20); room for two 4-GPU jobs.
        pytest.param(DEFAULT, ["z", "y"], "x", id="priority-then-fifo"),
        # the fifo baseline ignores priority: submission order x (0), z (10), y (20).
        pytest.param(FIFO, ["x", "z"], "y", id="fifo-ignores-priority"),
    ],
)
def test_inside_a_queue_higher_priority_first_then_earlier_submission(
    policy, expected_started, expected_pending
) -> None:
    snapshot = make_snapshot(pools=[make_pool("p", "f", count=1)], queues=None)
    pending = [
        job("x", gpus=4, priority=0, submit=0),
        job("y", gpus=4, priority=1, submit=20),
        job("z", gpus=4, priority=1, submit=10),
    ]
    result = schedule(snapshot, pending, policy, now=30.0)
    assert started(result) == expected_started
    assert list(result.pending) == [expected_pending]


def test_same_priority_and_submit_time_break_ties_by_id() -> None:
    """Identical jobs start in id order, whatever order they were handed in."""
    snapshot = make_snapshot(pools=[make_pool("p", "f", count=1)], queues=None)
    result = schedule(snapshot, [job("j3", gpus=4), job("j1", gpus=4), job("j2", gpus=4)], DEFAULT, 0.0)
    assert started(result) == ["j1", "j2"]
    assert list(result.pending) == ["j3"]


# -- head-of-line blocking -----------------------------------------------------------------------------


def _blocked_head_round(policy):
    """One 8-GPU node with 4 GPUs busy; queue a's head asks 8 GPUs, then two 1-GPU jobs; queue b has one."""
    snapshot = make_snapshot(pools=[make_pool("p", "f", count=1)], queues=None)
    run_job(snapshot, job("running", gpus=4))
    pending = [
        job("big", gpus=8, submit=0),
        job("small1", gpus=1, submit=1),
        job("small2", gpus=1, submit=2),
        job("other", queue="b", gpus=1, submit=3),
    ]
    return schedule(snapshot, pending, policy, now=5.0)


def test_best_effort_fifo_lets_small_jobs_pass_a_blocked_head() -> None:
    """Best effort: the 8-GPU head waits (no fit), the 1-GPU jobs behind it start now.

    Queue b holds nothing (share 0) and a holds 4/8, so b's job goes first, then a's in queue order.
    """
    result = _blocked_head_round(DEFAULT)
    assert started(result) == ["other", "small1", "small2"]
    assert list(result.pending) == ["big"]
    assert result.pending["big"].reason is PendingReason.NO_FIT
    assert result.pending["big"].message == (
        "reserved: expected to start in 60 min on p-0; "
        "c/f: 0/1 nodes fit (1 insufficient GPUs); largest free block: 1 GPU, 64 CPU, 512 GiB on p-0"
    )


def test_strict_fifo_blocks_the_queue_behind_its_head_only() -> None:
    """StrictFIFO: the jobs behind a's head wait as BLOCKED naming the head; queue b is unaffected."""
    result = _blocked_head_round(STRICT)
    assert started(result) == ["other"]
    assert result.pending["big"].reason is PendingReason.NO_FIT
    for name in ("small1", "small2"):
        pending = result.pending[name]
        assert pending.reason is PendingReason.BLOCKED
        assert pending.message == "StrictFIFO: waiting behind big, head of its queue"


# -- jobs that can never run are rejected, with the reason ---------------------------------------------


@pytest.mark.parametrize(
    ("clusters", "queues", "workload", "reason", "message_part"),
    [
        pytest.param(
            None,
            [make_queue("a", {"f": 8})],
            job("j", queue="nope"),
            PendingReason.UNKNOWN_QUEUE,
            "queue 'nope' does not exist (queues: a)",
            id="unknown-queue",
        ),
        pytest.param(
            None,
            None,
            job("j", gpus=16),
            PendingReason.NEVER_FITS,
            "holds a pod of 16 GPUs, 0 CPU, 0 GiB memory (no node has more than 8 GPUs)",
            id="16-gpus-per-pod-on-8-gpu-nodes",
        ),
        pytest.param(
            None,
            None,
            job("j", model="H100"),
            PendingReason.NEVER_FITS,
            "model H100, 0 CPU, 0 GiB memory (no pool has GPU model H100; models: A100)",
            id="model-nobody-has",
        ),
        pytest.param(
            [make_cluster("c", [make_pool("p", "f", count=1, max_count=2)])],
            None,
            job("j", gpus=8, pods=3),
            PendingReason.NEVER_FITS,
            "needs 3 pods of 8 GPUs, 0 CPU, 0 GiB memory at once",
            id="gang-larger-than-elastic-maximum",
        ),
        pytest.param(
            None,
            [make_queue("a", {"f": 4})],
            job("j", gpus=5),
            PendingReason.OVER_QUOTA_LIMIT,
            "job needs 5 GPUs, more than queue 'a' could ever hold: f at most 4 (quota 4, no cohort to borrow from)",
            id="over-nominal-quota-no-cohort",
        ),
        pytest.param(
            None,
            [
                make_queue("a", {"f": 2}, cohort="c", borrowing_limit={"f": 1}),
                make_queue("b", {"f": 8}, cohort="c"),
            ],
            job("j", gpus=4),
            PendingReason.OVER_QUOTA_LIMIT,
            "could ever hold: f at most 3 (quota 2 + borrowing limit 1)",
            id="over-nominal-plus-borrowing-limit",
        ),
        pytest.param(
            None,
            [make_queue("a", {"f": 2}, cohort="c"), make_queue("b", {"f": 4}, cohort="c")],
            job("j", gpus=8),
            PendingReason.OVER_QUOTA_LIMIT,
            "f at most 6 (quota 2 + 4 its cohort 'c' could lend)",
            id="over-what-the-cohort-could-lend",
        ),
        pytest.param(
            [make_cluster("cloud", [make_pool("p", "f", count=4)], private=False)],
            None,
            job("j", sensitive=True),
            PendingReason.PRIVATE_ONLY,
            "job is sensitive, so it runs only on private clusters",
            id="sensitive",
        ),
        pytest.param(
            [make_cluster("cloud", [make_pool("p", "f", count=4)], private=False)],
            None,
            job("j", burstable=False),
            PendingReason.PRIVATE_ONLY,
            "job is not burstable",
            id="not-burstable",
        ),
    ],
)
def test_jobs_that_can_never_run_are_rejected_with_the_reason(
    clusters, queues, workload, reason, message_part
) -> None:
    snapshot = make_snapshot(pools=[make_pool("p", "f", count=1)], queues=queues, clusters=clusters)
    result = schedule(snapshot, [workload], DEFAULT, now=0.0)
    [rejection] = result.rejections
    assert (rejection.job, rejection.reason) == ("j", reason)
    assert message_part in rejection.message
    assert result.starts == [] and result.pending == {}


def test_a_job_no_registered_node_holds_yet_waits_while_nodes_may_join() -> None:
    """A fleet of registered machines (agents, Ray) can still grow: a job none holds yet, even with no
    node at all, is pending with why, not rejected; a declared-only fleet rejects the same job."""
    for pools in ([], [make_pool("p", "f", count=1, gpus=2)]):
        clusters = [make_cluster("agents", pools)]
        snapshot = Snapshot(clusters, build_initial_nodes(clusters), None, nodes_may_join=True)
        result = schedule(snapshot, [job("j", gpus=4)], DEFAULT, now=0.0)
        assert result.rejections == [] and result.starts == []
        assert result.pending["j"].reason is PendingReason.NO_NODE_YET
        assert "no node registered yet can hold a pod of 4 GPUs" in result.pending["j"].message
    declared = make_snapshot(pools=[make_pool("p", "f", count=1, gpus=2)], queues=None)
    [rejection] = schedule(declared, [job("j", gpus=4)], DEFAULT, now=0.0).rejections
    assert rejection.reason is PendingReason.NEVER_FITS


def test_whole_gpu_job_needing_more_gpu_memory_than_any_gpu_has_is_rejected() -> None:
    """A 1-GPU job stating 100 GiB of GPU memory can never run on 80 GiB GPUs: NEVER_FITS, not a start."""
    snapshot = make_snapshot(pools=[make_pool("p", "f", count=1, gpu_mem=80)], queues=None)
    result = schedule(snapshot, [job("j", gpus=1, gpu_mem=100)], DEFAULT, now=0.0)
    assert result.starts == []
    assert [r.reason for r in result.rejections] == [PendingReason.NEVER_FITS]


def test_private_only_rejection_names_each_jobs_own_reason() -> None:
    """A sensitive and a non-burstable job of one shape, in one round, each get their own explanation."""
    snapshot = make_snapshot(clusters=[make_cluster("cloud", [make_pool()], private=False)], queues=None)
    result = schedule(
        snapshot, [job("secret", sensitive=True), job("pinned", burstable=False)], DEFAULT, now=0.0
    )
    messages = {r.job: r.message for r in result.rejections}
    assert "job is sensitive" in messages["secret"]
    assert "job is not burstable" in messages["pinned"]


def test_a_gang_the_elastic_maximum_can_hold_is_not_rejected() -> None:
    """2 pods x 8 GPUs with one node now and max_count 2: it waits for the pool to grow, not rejected."""
    snapshot = make_snapshot(pools=[make_pool("p", "f", count=1, max_count=2)], queues=None)
    result = schedule(snapshot, [job("j", gpus=8, pods=2)], DEFAULT, now=0.0)
    assert result.rejections == []
    assert result.pending["j"].reason is PendingReason.NO_FIT


def test_rejected_job_does_not_stop_the_others() -> None:
    """A rejection is per job: the valid job in the same round starts."""
    snapshot = make_snapshot(queues=None)
    result = schedule(snapshot, [job("bad", gpus=16), job("good")], DEFAULT, now=0.0)
    assert result.rejections == [Reject("bad", PendingReason.NEVER_FITS, result.rejections[0].message)]
    assert started(result) == ["good"]


def test_sensitive_job_is_kept_off_a_public_cluster_even_when_the_private_one_is_full() -> None:
    """Private full: a burstable job bursts to the cloud, a sensitive one waits."""
    snapshot = make_snapshot(
        clusters=[
            make_cluster("onprem", [make_pool("own", "f", count=1)], private=True),
            make_cluster("cloud", [make_pool("rent", "f", count=1)], private=False),
        ],
        queues=None,
    )
    run_job(snapshot, job("filler", gpus=8), "own-0")
    result = schedule(snapshot, [job("secret", sensitive=True), job("normal", submit=1)], DEFAULT, now=0.0)
    assert [(s.job, s.cluster) for s in result.starts] == [("normal", "cloud")]
    assert result.pending["secret"].reason is PendingReason.NO_FIT
    message = result.pending["secret"].message
    assert "cloud/" not in message  # the cloud was never tried, and the message says why
    assert message.startswith(
        "job is sensitive, so it runs only on private clusters (not on cloud); onprem/f:"
    )


# -- where a job goes: private first, then the cheaper tier --------------------------------------------


def _tiered_snapshot():
    """Private onprem: silver pool (flavor fs) listed before a bronze pool (fb); public cloud: bronze (fc)."""
    return make_snapshot(
        clusters=[
            make_cluster("cloud", [make_pool("cloud", "fc", count=1, tier="bronze")], private=False),
            make_cluster(
                "onprem",
                [
                    make_pool("silver", "fs", count=1, tier="silver"),
                    make_pool("bronze", "fb", count=1, tier="bronze"),
                ],
                private=True,
            ),
        ],
        queues=None,
    )


@pytest.mark.parametrize(
    ("full", "expected"),
    [
        pytest.param([], ("onprem", "fb"), id="private-bronze-first"),
        pytest.param(["bronze-0"], ("onprem", "fs"), id="then-private-silver"),
        pytest.param(["bronze-0", "silver-0"], ("cloud", "fc"), id="then-public"),
    ],
)
def test_placement_prefers_private_then_the_cheaper_tier(full, expected) -> None:
    snapshot = _tiered_snapshot()
    for name in full:
        run_job(snapshot, job(f"fill-{name}", gpus=8), name)
    result = schedule(snapshot, [job("j")], DEFAULT, now=0.0)
    [start] = result.starts
    assert (start.cluster, start.flavor) == expected


def test_tier_preference_counts_only_pools_that_can_hold_the_job() -> None:
    """Flavor fx = bronze 1-GPU nodes + gold 8-GPU nodes; fy = silver 8-GPU nodes: 8 GPUs go to silver."""
    snapshot = make_snapshot(
        pools=[
            make_pool("tiny", "fx", count=1, gpus=1, tier="bronze"),
            make_pool("gold", "fx", count=1, tier="gold"),
            make_pool("silver", "fy", count=1, tier="silver"),
        ],
        queues=None,
    )
    [start] = schedule(snapshot, [job("j", gpus=8)], DEFAULT, now=0.0).starts
    assert start.placements[0].node == "silver-0"


def test_same_tier_prefers_lower_gpu_hour_cost() -> None:
    """Two private silver pools: the one at $1/GPU-hour is used before the one at $3, whatever the order."""
    snapshot = make_snapshot(
        pools=[make_pool("dear", "fd", count=1, cost=3.0), make_pool("cheap", "fc", count=1, cost=1.0)],
        queues=None,
    )
    [start] = schedule(snapshot, [job("j")], DEFAULT, now=0.0).starts
    assert start.flavor == "fc"


@pytest.mark.parametrize("policy", [DEFAULT, FIFO], ids=["default", "fifo"])
def test_same_price_prefers_the_smaller_nodes_that_hold_the_pod(policy) -> None:
    """Flavor dgx (8-GPU nodes, first by name) and ws (4-GPU nodes), same tier and price: 1- and 4-GPU
    pods go to ws, so the 8-GPU nodes stay whole for the 8-GPU pod that only they can hold."""
    snapshot = make_snapshot(
        pools=[make_pool("dgx", "dgx", count=1), make_pool("ws", "ws", count=2, gpus=4)], queues=None
    )
    pending = [job("one", gpus=1), job("four", gpus=4, submit=1.0), job("eight", gpus=8, submit=2.0)]

    result = schedule(snapshot, pending, policy, now=10.0)

    assert {s.job: s.flavor for s in result.starts} == {"one": "ws", "four": "ws", "eight": "dgx"}


# -- the round is pure: the snapshot comes back as it was ----------------------------------------------


def test_snapshot_is_unchanged_after_schedule_returns() -> None:
    """A round that starts, preempts and leaves jobs pending restores every node, GPU and counter."""
    snapshot = make_snapshot(
        pools=[make_pool("p", "f", count=2, nvlink=[[0, 1, 2, 3], [4, 5, 6, 7]])],
        queues=[make_queue("a", {"f": 16})],
    )
    run_job(
        snapshot,
        job("low", gpus=8, priority=0, duration=9000.0, checkpoint_seconds=60.0),
        "p-0",
        started_at=0.0,
    )
    run_job(snapshot, job("mid", gpus=3, priority=5), "p-1", started_at=0.0)
    before = node_state(snapshot)
    pending = [
        job("hi", gpus=8, priority=9),  # preempts low
        job("share", milli=500, gpu_mem=10),  # fits on p-1
        job("huge", gpus=8, pods=2, priority=1),  # cannot fit: pending
    ]

    result = schedule(snapshot, pending, DEFAULT, now=1000.0)

    assert [p.job for p in result.preemptions] == ["low"]
    assert sorted(started(result)) == ["hi", "share"]
    assert "huge" in result.pending
    assert node_state(snapshot) == before
    again = schedule(snapshot, pending, DEFAULT, now=1000.0)
    assert (again.starts, again.preemptions, list(again.pending)) == (
        result.starts,
        result.preemptions,
        list(result.pending),
    )


# -- why a job is pending ------------------------------------------------------------------------------


def test_pending_for_quota_states_the_quota_numbers() -> None:
    """Quota 4, 4 in use, job needs 1: the message says so, prefixed by the domain that was tried."""
    snapshot = make_snapshot(pools=[make_pool("p", "f", count=1)], queues=[make_queue("a", {"f": 4})])
    run_job(snapshot, job("r", gpus=4))
    result = schedule(snapshot, [job("j")], DEFAULT, now=0.0)
    pending = result.pending["j"]
    assert pending.reason is PendingReason.QUOTA
    assert pending.message == "c/f: queue a: f quota 4 GPUs, 4 in use, job needs 1 (no cohort to borrow from)"


def test_pending_for_room_says_how_many_nodes_fit() -> None:
    """Two full nodes: '0/2 nodes fit (2 insufficient GPUs)'."""
    snapshot = make_snapshot(pools=[make_pool("p", "f", count=2)], queues=None)
    run_job(snapshot, job("r", gpus=8, pods=2))
    result = schedule(snapshot, [job("j")], DEFAULT, now=0.0)
    pending = result.pending["j"]
    assert pending.reason is PendingReason.NO_FIT
    assert pending.message == "c/f: 0/2 nodes fit (2 insufficient GPUs); no whole GPU is free on any node"


def test_pending_lists_every_domain_tried() -> None:
    """Quota blocks flavor f1 and room blocks f2: reason NO_FIT, and both causes are in the message."""
    snapshot = make_snapshot(
        pools=[make_pool("p1", "f1", count=1), make_pool("p2", "f2", count=1, tier="gold")],
        queues=[make_queue("a", {"f1": 8, "f2": 8})],
    )
    run_job(snapshot, job("r1", gpus=8), "p1-0")
    run_job(snapshot, job("r2", gpus=0, cpu=64), "p2-0")
    result = schedule(snapshot, [job("j", cpu=1)], DEFAULT, now=0.0)
    pending = result.pending["j"]
    assert pending.reason is PendingReason.NO_FIT
    assert pending.message == (
        "c/f1: queue a: f1 quota 8 GPUs, 8 in use, job needs 1 (no cohort to borrow from); "
        "c/f2: 0/1 nodes fit (1 insufficient CPU); largest free block: 8 GPUs, 0 CPU, 512 GiB on p2-0"
    )


def test_cpu_only_job_prefers_a_pool_without_gpus() -> None:
    """A CPU-only job on a GPU node can strand its GPUs; a CPU pool in the same cluster goes first."""
    snapshot = make_snapshot(
        pools=[
            make_pool("dgx", "a100", count=1, cpu=64),
            make_pool("cpu", "cpu", count=1, gpus=0, model=None, cpu=64),
        ]
    )
    result = schedule(snapshot, [job("c", gpus=0, cpu=60)], DEFAULT, now=0.0)
    assert [s.placements[0].node for s in result.starts] == ["cpu-0"]


def test_fair_share_order_is_updated_for_the_victims_queue_after_a_preemption() -> None:
    """b loses its borrowed job to a's reclaim, so b's share drops to 0 and b's next job goes before c's."""
    queues = [make_queue(name, {"f": 4}, cohort="k") for name in ("a", "b", "c")]
    snapshot = make_snapshot(pools=[make_pool("p", "f", count=2, gpus=8)], queues=queues)
    run_job(snapshot, job("b-borrow", queue="b", gpus=8, duration=9000.0, checkpoint_seconds=60.0))
    run_job(snapshot, job("c-run", queue="c", gpus=4))
    pending = [
        job("a-big", queue="a", gpus=4),
        job("b-next", queue="b", gpus=4, submit=1),
        job("c-next", queue="c", gpus=4, submit=2),
    ]
    result = schedule(snapshot, pending, DEFAULT, now=1000.0)
    assert [p.job for p in result.preemptions] == ["b-borrow"]
    assert [s.job for s in result.starts] == ["a-big", "b-next"]
