"""Parked jobs: a job that could not start is not retried until something is released, and under
StrictFIFO a parked head still blocks newcomers to its queue."""

from __future__ import annotations

from builders import job

from corral.scheduling import get_policy
from corral.scheduling.waiting import WaitingJobs


def _ids(jobs) -> list[str]:  # type: ignore[no-untyped-def]
    return [w.id for w in jobs]


def test_parked_jobs_skip_rounds_until_a_release() -> None:
    waiting = WaitingJobs(get_policy("default"))
    waiting.add(job("a"))
    waiting.add(job("b"))
    waiting.park({"a", "b"})
    assert not waiting.has_active and waiting.for_round() == []
    waiting.add(job("c"))
    assert _ids(waiting.for_round()) == ["c"]
    waiting.wake()
    assert _ids(waiting.for_round()) == ["a", "b", "c"]


def test_strict_fifo_presents_parked_jobs_of_a_queue_with_a_newcomer() -> None:
    waiting = WaitingJobs(get_policy("strict-fifo"))
    waiting.add(job("head", queue="q"))
    waiting.add(job("other", queue="r"))
    waiting.park({"head", "other"})
    waiting.add(job("new", queue="q"))
    assert _ids(waiting.for_round()) == ["head", "new"]


def test_removed_and_requeued_jobs() -> None:
    waiting = WaitingJobs(get_policy("default"))
    waiting.add(job("a"))
    waiting.park({"a"})
    assert "a" in waiting and len(waiting) == 1
    waiting.add(job("a"))
    assert _ids(waiting.for_round()) == ["a"]
    waiting.remove("a")
    assert "a" not in waiting and waiting.for_round() == []
