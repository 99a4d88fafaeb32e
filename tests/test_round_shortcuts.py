"""A round's shortcuts on a deep queue decide what the long way decides.

A queue whose jobs all expect the same run time is left in submission order instead of being sorted by
response ratio (and its drain horizon is not computed), its waiting jobs of one kind are told at once,
and a queue whose jobs wait keeps its turn without heap operations. On random queues of a few kinds, two
rounds apart so that running jobs make reservations, the round must start, preempt, reserve and explain
exactly what it does with the ordering shortcut off and every job tried on its own.
"""

from __future__ import annotations

import pytest
from builders import job, make_pool, make_snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.core.workloads import Workload
from corral.scheduling import POLICIES, SchedulingResult, schedule
from corral.scheduling.bursting import Forecast
from corral.scheduling.scheduler import _Round
from corral.scheduling.snapshot import Allocation, Snapshot

KINDS = st.tuples(
    st.sampled_from([1, 2, 4, 8]),  # GPUs
    st.sampled_from([None, 600.0, 3600.0]),  # time limit
    st.sampled_from([0, 1]),  # priority
    st.sampled_from(["a", "b"]),  # queue
)


@st.composite
def queues(draw: st.DrawFn) -> tuple[list[Workload], list[Workload]]:
    """Jobs of 1-3 kinds submitted before the first round, and more arriving before the second."""
    kinds = draw(st.lists(KINDS, min_size=1, max_size=3))
    jobs = []
    for index in range(draw(st.integers(10, 60))):
        gpus, limit, priority, queue = draw(st.sampled_from(kinds))
        submit = float(draw(st.integers(0, 200)))
        jobs.append(
            job(
                f"j{index:03d}", queue, gpus, priority=priority, submit=submit, time_limit=limit, duration=500
            )
        )
    first = [j for j in jobs if j.submit <= 100]
    return first, jobs


def _snapshot() -> Snapshot:
    return make_snapshot([make_pool(count=2)])  # no quotas: queues a and b share by DRF


def _two_rounds(
    first: list[Workload], every: list[Workload], policy: str, forecast: Forecast | None = None
) -> list[SchedulingResult]:
    """A round at t=100; its starts applied, every other one then finished; a round at t=300 with the
    jobs still waiting and the later ones (both with ``forecast``, if given)."""
    snapshot = _snapshot()
    snapshot.forecast = forecast
    result = schedule(snapshot, first, POLICIES[policy], now=100.0)
    started = {start.job: start for start in result.starts}
    for workload in first:
        start = started.get(workload.id)
        if start is not None:
            snapshot.allocate(Allocation(workload, start.cluster, start.flavor, start.placements, 100.0))
    for finished in list(started)[::2]:
        snapshot.release(finished)
    snapshot.commit()
    snapshot.reserved = tuple(r.job for r in result.reservations)
    gone = started.keys() | {r.job for r in result.rejections}
    waiting = [j for j in every if j.id not in gone]
    return [result, schedule(snapshot, waiting, POLICIES[policy], now=300.0)]


def _decisions(results: list[SchedulingResult]) -> list[tuple[object, ...]]:
    return [_decided(result) for result in results]


def _decided(result: SchedulingResult) -> tuple[object, ...]:
    return (
        [(s.job, s.placements) for s in result.starts],
        [(p.job, p.reason) for p in result.preemptions],
        [(r.job, r.domain, r.until, r.placements) for r in result.reservations],
        {job_id: (str(p.reason), p.message) for job_id, p in sorted(result.pending.items())},
    )


@pytest.mark.parametrize("policy", ["default", "fifo", "strict-fifo"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queue=queues())
def test_the_shortcuts_decide_as_sorting_and_trying_every_job(
    policy: str, queue: tuple[list[Workload], list[Workload]]
) -> None:
    first, every = queue
    shortcut = _decisions(_two_rounds(first, every, policy))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_Round, "_one_expected_run_time", lambda *args: False)  # sort every queue by ratio
        patch.setattr(_Round, "_repeatable", lambda *args: False)  # try every job on its own
        long_way = _decisions(_two_rounds(first, every, policy))
    assert shortcut == long_way


@pytest.mark.parametrize("policy", ["default", "fifo"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queue=queues(), data=st.data())
def test_jobs_with_a_forecast_of_their_own_are_told_as_their_own_try_would(
    policy: str, queue: tuple[list[Workload], list[Workload]], data: st.DataObject
) -> None:
    """The control plane forecasts the first waiting jobs: each is told its kind's wait with its own
    forecast start (and no start while its forecast rests on guessed run times), as trying it would.
    (A job of a kind already told to wait without a forecast is told that, as before.)"""
    first, every = queue
    covered = data.draw(st.lists(st.sampled_from(every), unique=True))
    forecast = Forecast(
        private_start={j.id: 400.0 + 60.0 * index for index, j in enumerate(covered)},
        guessed=frozenset(j.id for j in covered[: data.draw(st.integers(0, 2))]),
    )
    shortcut = _decisions(_two_rounds(first, every, policy, forecast))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_Round, "_told_with_outlook", lambda *args: False)  # try every forecast job
        long_way = _decisions(_two_rounds(first, every, policy, forecast))
    assert shortcut == long_way
