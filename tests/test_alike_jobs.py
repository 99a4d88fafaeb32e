"""A deep queue of few kinds of jobs: the scheduler decides each kind once a round and tells the other jobs
of that kind the same, which must change no decision and no explanation, and ``Workload.kind`` (what
says two jobs are alike) must follow the fields of a copied workload."""

from __future__ import annotations

import pytest
from builders import job, make_snapshot

from corral.scheduling import POLICIES, SchedulingResult, schedule
from corral.scheduling.scheduler import _Round


def _queue() -> list:
    """Three kinds interleaved in one queue on one 8-GPU node: 1 GPU, 4 GPUs, and 2 GPUs at priority 1."""
    jobs = []
    for index in range(60):
        if index % 3 == 0:
            jobs.append(job(f"one-{index}", gpus=1, submit=index))
        elif index % 3 == 1:
            jobs.append(job(f"four-{index}", gpus=4, submit=index))
        else:
            jobs.append(job(f"two-{index}", gpus=2, submit=index, priority=1))
    return jobs


def _answers(result: SchedulingResult) -> tuple[list[object], dict[str, tuple[str, str]]]:
    reasons = {job_id: (str(p.reason), p.message) for job_id, p in result.pending.items()}
    return [(s.job, s.placements) for s in result.starts], reasons


@pytest.mark.parametrize("policy", ["default", "fifo", "strict-fifo", "best-fit"])
def test_jobs_of_a_kind_told_at_once_get_what_trying_each_would_give(policy: str) -> None:
    told = schedule(make_snapshot(), _queue(), POLICIES[policy], now=10.0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_Round, "_repeatable", lambda *args: False)  # every job tried on its own
        tried = schedule(make_snapshot(), _queue(), POLICIES[policy], now=10.0)
    assert _answers(told) == _answers(tried)
    assert len(told.starts) > 0 and len(told.pending) == 60 - len(told.starts)


def test_waiting_jobs_of_one_kind_share_one_explanation() -> None:
    """Jobs of one GPU (wide ones hold reservations, which are their own): two kinds, by CPU."""
    queue = [job(f"{'cpu' if i % 2 else 'lean'}-{i}", gpus=1, cpu=i % 2 * 8.0, submit=i) for i in range(40)]
    result = schedule(make_snapshot(), queue, POLICIES["default"], now=10.0)
    assert len(result.starts) == 8
    waiting = {job_id.split("-")[0]: [] for job_id in result.pending}
    for job_id, pending in result.pending.items():
        waiting[job_id.split("-")[0]].append(pending)
    for kind, explanations in waiting.items():
        assert len({id(p) for p in explanations}) == 1, kind
        assert explanations[0].at == 10.0


def test_a_copied_workload_with_other_fields_is_of_another_kind() -> None:
    original = job("a", gpus=1, cpu=1.0)
    assert original.kind == job("b", gpus=1, cpu=1.0, submit=5).kind  # id and submit time do not count
    copied = original.model_copy(update={"cpu": 2.0, "queue": "other"})
    assert copied.kind != original.kind
    assert copied.pod.cpu == 2.0 and original.pod.cpu == 1.0
    assert copied.kind == job("c", gpus=1, cpu=2.0, queue="other").kind
