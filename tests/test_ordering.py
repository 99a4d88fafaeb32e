"""Job order inside a queue and priority: the default policy goes by highest response ratio (HRRN)."""

from __future__ import annotations

from builders import job, make_pool, make_snapshot, run_job
from hypothesis import given
from hypothesis import strategies as st

from corral.scheduling import POLICIES, schedule
from corral.scheduling.ordering import drain_horizon, order_by_response_ratio, response_ratio

DEFAULT = POLICIES["default"]
FIFO = POLICIES["fifo"]
HOUR = 3600.0


def _one_free_gpu():
    """One 8-GPU node with 7 GPUs taken by a job that runs on: room for exactly one 1-GPU job."""
    snapshot = make_snapshot(pools=[make_pool("p", "f", count=1)])
    run_job(snapshot, job("running", gpus=7, time_limit=100 * HOUR, duration=100 * HOUR), "p-0")
    return snapshot


def _started(result) -> list[str]:
    return [s.job for s in result.starts]


def test_a_short_job_overtakes_a_long_one_submitted_just_before_it() -> None:
    """long: 10 h limit, waited 10 min (ratio ~1.02); short: 10 min limit, waited 9 min (ratio 1.9)."""
    long = job("long", submit=0.0, time_limit=10 * HOUR, duration=9 * HOUR)
    short = job("short", submit=60.0, time_limit=600.0, duration=300.0)

    assert _started(schedule(_one_free_gpu(), [long, short], DEFAULT, now=600.0)) == ["short"]
    assert _started(schedule(_one_free_gpu(), [long, short], FIFO, now=600.0)) == ["long"]


def test_a_long_job_that_has_waited_goes_before_a_newcomer() -> None:
    """The ratio grows with the wait, so a long job is not starved: an hour-long job that has waited
    ten hours (ratio 11) goes before a ten-minute job that has just arrived (ratio 1)."""
    long = job("long", submit=0.0, time_limit=HOUR, duration=HOUR)
    short = job("short", submit=10 * HOUR, time_limit=600.0, duration=300.0)

    result = schedule(_one_free_gpu(), [long, short], DEFAULT, now=10 * HOUR)

    assert _started(result) == ["long"]
    assert "short" in result.pending


def test_a_job_that_outlasts_all_known_work_goes_first() -> None:
    """The running job has 10 min left and little waits: the 50 h job would end last wherever it is
    placed in the order, so it starts now instead of after the short job (which the ratio alone
    prefers, 1.9 against 1.0); waiting would only leave the cluster idle around it at the end."""
    snapshot = make_snapshot(pools=[make_pool("p", "f", count=1)])
    run_job(snapshot, job("running", gpus=7, time_limit=1200.0, duration=1200.0), "p-0")
    long = job("long", submit=0.0, time_limit=50 * HOUR, duration=50 * HOUR)
    short = job("short", submit=60.0, time_limit=600.0, duration=300.0)

    assert _started(schedule(snapshot, [long, short], DEFAULT, now=600.0)) == ["long"]


def test_drain_horizon_is_the_known_work_over_the_gpus() -> None:
    waiting = [job("a", gpus=2, time_limit=HOUR), job("b", gpus=4, time_limit=HOUR)]
    horizon = drain_horizon(waiting, lambda j: j.time_limit, running_gpu_seconds=2 * HOUR, gpus=8)
    assert horizon == HOUR
    assert drain_horizon(waiting, lambda j: j.time_limit, 0.0, gpus=0) == float("inf")


def test_priority_still_comes_before_the_ratio() -> None:
    urgent = job("urgent", submit=600.0, priority=10, time_limit=10 * HOUR, duration=HOUR)
    short = job("short", submit=0.0, time_limit=600.0, duration=300.0)

    assert _started(schedule(_one_free_gpu(), [short, urgent], DEFAULT, now=600.0)) == ["urgent"]


def test_checkpointed_progress_shortens_a_requeued_jobs_expected_run() -> None:
    """Both submitted together; the requeued one has 1.5 h of its 2 h saved, so 30 min are left of it
    against the fresh job's hour: it goes first."""
    requeued = job("requeued", submit=0.0, time_limit=2 * HOUR, duration=2 * HOUR, checkpoint_seconds=900.0)
    fresh = job("fresh", submit=0.0, time_limit=HOUR, duration=HOUR)

    result = schedule(
        _one_free_gpu(), [fresh, requeued], DEFAULT, now=HOUR, progress={"requeued": 1.5 * HOUR}
    )

    assert _started(result) == ["requeued"]


_jobs = st.lists(
    st.tuples(st.floats(0, 100 * HOUR), st.sampled_from([120.0, 900.0, HOUR, 10 * HOUR, 72 * HOUR])),
    min_size=1,
    max_size=30,
)


@given(_jobs, st.floats(0, 10 * HOUR))
def test_a_job_that_waited_longer_and_runs_shorter_is_never_behind(specs, later) -> None:
    """Dominance: if one job has waited at least as long as another and is expected to run no longer,
    it is never ordered after it; jobs of equal size stay in submission order."""
    now = 100 * HOUR + later
    jobs = [job(f"j{i}", submit=submit, time_limit=limit) for i, (submit, limit) in enumerate(specs)]
    jobs.sort(key=lambda j: (j.submit, j.id))
    ordered = list(jobs)

    order_by_response_ratio(ordered, now, lambda j: j.time_limit)

    position = {j.id: i for i, j in enumerate(ordered)}
    for a in jobs:
        for b in jobs:
            waited_longer = a.submit <= b.submit
            tied = response_ratio(now - a.submit, a.time_limit) == response_ratio(
                now - b.submit, b.time_limit
            )
            if waited_longer and a.time_limit <= b.time_limit and not tied:
                assert position[a.id] < position[b.id]
            if a.time_limit == b.time_limit and (a.submit, a.id) < (b.submit, b.id):
                assert position[a.id] < position[b.id]
