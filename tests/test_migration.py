"""GPU-share migration (policy corral-defrag): shares move elsewhere so a pod that fits nowhere fits."""

from __future__ import annotations

from builders import job, make_pool, make_snapshot, run_job
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.scheduling import get_policy, schedule

TYPICAL = [job("t", cpu=1).pod]


def test_a_share_moves_to_free_a_whole_gpu_for_a_pod_that_fits_nowhere() -> None:
    """a-0 has shares of 0.5 and 0.3 on its two GPUs, b-0 a 0.4 share on its one: no idle GPU anywhere.
    Moving the 0.3 share off a-0's GPU 1 frees it for the new pod; the share lands where the policy puts
    it, next to the 0.5 share on GPU 0 (b-0's 0.6 would also do)."""
    snapshot = make_snapshot([make_pool("a", gpus=2, cpu=32), make_pool("b", gpus=1, cpu=32)])
    run_job(snapshot, job("s1", milli=500, checkpoint_seconds=60), "a-0", gpus=[(0,)])
    run_job(snapshot, job("s2", milli=300, checkpoint_seconds=60), "a-0", gpus=[(1,)], started_at=0.0)
    run_job(snapshot, job("s3", milli=400), "b-0", gpus=[(0,)])
    new = job("whole", cpu=1)

    assert not schedule(snapshot, [new], get_policy("corral-fgd", TYPICAL), now=100.0).starts
    result = schedule(snapshot, [new], get_policy("corral-defrag", TYPICAL), now=100.0)

    assert [p.job for p in result.preemptions] == ["s2"]
    assert "make room for whole" in result.preemptions[0].reason
    starts = {s.job: (s.placements[0].node, s.placements[0].gpus) for s in result.starts}
    assert starts == {"whole": ("a-0", (1,)), "s2": ("a-0", (0,))}


def test_no_share_moves_when_the_moved_shares_would_not_fit_elsewhere() -> None:
    snapshot = make_snapshot([make_pool("a", gpus=1, cpu=32), make_pool("b", gpus=1, cpu=32)])
    run_job(snapshot, job("s1", milli=600), "a-0", gpus=[(0,)])
    run_job(snapshot, job("s2", milli=600), "b-0", gpus=[(0,)])
    result = schedule(snapshot, [job("whole", cpu=1)], get_policy("corral-defrag", TYPICAL), now=0.0)
    assert not result.starts and not result.preemptions


@settings(max_examples=300, deadline=None)
@given(
    running=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 1), st.sampled_from([200, 300, 500, 700])), max_size=10
    ),
    pending=st.lists(st.sampled_from([1000, 100, 300, 500, 800]), min_size=2, max_size=10),
)
def test_a_round_moves_each_share_at_most_once_and_only_running_ones(running, pending) -> None:
    """Several pods that fit nowhere arrive together: a share moved (restarted) for one of them stays put
    for the rest of the round, so no job is preempted twice in one round."""
    snapshot = make_snapshot([make_pool("n", count=4, gpus=2, cpu=32)])
    for index, (node, gpu, milli) in enumerate(running):
        if snapshot.nodes[f"n-{node}"].gpus[gpu].used_milli + milli <= 1000:
            run_job(snapshot, job(f"s{index}", milli=milli), f"n-{node}", gpus=[(gpu,)])
    before = set(snapshot.running)
    jobs = [job(f"p{i}", milli=milli, cpu=1, submit=float(i)) for i, milli in enumerate(pending)]
    result = schedule(snapshot, jobs, get_policy("corral-defrag", TYPICAL), now=0.0)
    moved = [p.job for p in result.preemptions]
    assert len(moved) == len(set(moved))
    assert set(moved) <= before
