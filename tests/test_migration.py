"""GPU-share migration (policy corral-defrag): shares move elsewhere so a pod that fits nowhere fits."""

from __future__ import annotations

from builders import job, make_pool, make_snapshot, run_job

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
