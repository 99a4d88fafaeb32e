"""Ranked placement must answer exactly what a full scan of the nodes answers, whatever happened before.

The ranking keeps scores between rounds and rescores only the nodes the snapshot reports as changed;
these tests drive a snapshot through random starts, finishes and node failures and compare, at every
step, the node and GPUs the ranking picks with the scan's, for every deterministic policy.
"""

from __future__ import annotations

from builders import job, make_pool, make_snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.core.workloads import PodRequest, Workload
from corral.scheduling import Allocation, get_policy
from corral.scheduling.placement import FitFailure, place_gang
from corral.scheduling.ranking import best_node

DOMAIN = ("c", "f")
SHAPES = [
    job("s1", gpus=1, milli=500, cpu=4, mem=16),
    job("s2", gpus=1, milli=250, cpu=2, mem=8),
    job("s3", gpus=1, cpu=8, mem=64),
    job("s4", gpus=2, cpu=16, mem=128),
    job("s5", gpus=4, cpu=8, mem=32),
    job("s6", gpus=0, cpu=12, mem=32),
    job("s7", gpus=1, milli=700, cpu=1, mem=4),
]
DETERMINISTIC = [
    "default",
    "spread",
    "fifo",
    "dot-product",
    "gpu-clustering",
    "gpu-packing",
    "best-fit",
    "fgd",
]

step = st.one_of(
    st.tuples(st.just("start"), st.integers(0, len(SHAPES) - 1)),
    st.tuples(st.just("finish"), st.integers(0, 1000)),
    st.tuples(st.just("down"), st.integers(0, 5)),
    st.tuples(st.just("up"), st.integers(0, 5)),
)


def scan(snapshot, pod: PodRequest, scoring):
    outcome = place_gang(snapshot.domains[DOMAIN], pod, 1, scoring, snapshot.rng)
    if isinstance(outcome, FitFailure):
        return outcome.rejected_by
    return outcome[0].node, outcome[0].gpus


def ranked(snapshot, pod: PodRequest, scoring):
    outcome = best_node(snapshot, DOMAIN, pod, scoring)
    if isinstance(outcome, FitFailure):
        return outcome.rejected_by
    node, gpus = outcome
    return node.name, gpus


@settings(max_examples=60, deadline=None)
@given(policy=st.sampled_from(DETERMINISTIC), steps=st.lists(step, min_size=1, max_size=40))
def test_ranking_matches_a_full_scan(policy: str, steps: list[tuple[str, int]]) -> None:
    pools = [
        make_pool("big", count=3, gpus=8, cpu=64, mem=512),
        make_pool("small", count=3, gpus=2, cpu=32, mem=128, model="T4", gpu_mem=16),
    ]
    snapshot = make_snapshot(pools)
    scoring = get_policy(policy, (shape.pod for shape in SHAPES)).scoring
    names = sorted(snapshot.nodes)
    for index, (action, argument) in enumerate(steps):
        if action == "start":
            shape: Workload = SHAPES[argument]
            expected = scan(snapshot, shape.pod, scoring)
            assert ranked(snapshot, shape.pod, scoring) == expected
            if isinstance(expected, tuple):
                placement = place_gang(snapshot.domains[DOMAIN], shape.pod, 1, scoring, snapshot.rng)
                assert isinstance(placement, list)
                workload = shape.model_copy(update={"id": f"j{index}"})
                snapshot.allocate(Allocation(workload, "c", "f", tuple(placement), started_at=0.0))
        elif action == "finish" and snapshot.running:
            snapshot.release(sorted(snapshot.running)[argument % len(snapshot.running)])
        elif action in ("down", "up"):
            snapshot.set_node_up(names[argument], action == "up")
        for shape in SHAPES:
            assert ranked(snapshot, shape.pod, scoring) == scan(snapshot, shape.pod, scoring)


def test_random_ties_draw_among_the_best_nodes_only() -> None:
    """The random policy: every node fits and ties, so draws spread over all of them and only them."""
    snapshot = make_snapshot([make_pool("n", count=4, gpus=1)])
    snapshot.set_node_up("n-3", False)
    scoring = get_policy("random").scoring
    picks = {best_node(snapshot, DOMAIN, job("j").pod, scoring)[0].name for _ in range(200)}  # type: ignore[index]
    assert picks == {"n-0", "n-1", "n-2"}
