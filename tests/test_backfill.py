"""Backfill with reservations (issue 13): a job that finds no room gets a reservation, later jobs use
its idle GPUs only if they end before it needs them, and a stream of small jobs no longer starves a
gang."""

from __future__ import annotations

from dataclasses import replace

from builders import job, make_cluster, make_pool, make_snapshot, run_job

from corral.scenario.models import ClusterFile, Event
from corral.scheduling import POLICIES, schedule
from corral.sim.engine import Simulator

DEFAULT = POLICIES["default"]
NO_BACKFILL = replace(DEFAULT, name="no-backfill", backfill=False)


def _half_busy_node():
    """One 8-GPU node; four 1-GPU jobs whose time limits end at t=1000, 4 GPUs idle."""
    snapshot = make_snapshot(pools=[make_pool("p", "f", count=1, gpus=8)])
    for i in range(4):
        run_job(snapshot, job(f"r{i}", duration=1000.0, time_limit=1000.0), started_at=0.0)
    return snapshot


def test_a_blocked_gang_keeps_the_idle_gpus_from_jobs_that_would_run_past_its_start() -> None:
    pending = [
        job("gang", gpus=8, submit=1.0),
        job("long", gpus=2, submit=2.0, time_limit=5000.0),
        job("short", gpus=2, submit=3.0, time_limit=500.0),
    ]
    result = schedule(_half_busy_node(), pending, DEFAULT, now=100.0)
    assert [s.job for s in result.starts] == ["short"]
    assert [(r.job, r.until) for r in result.reservations] == [("gang", 1000.0)]
    assert result.pending["gang"].message.startswith("reserved: expected to start in 15 min on p-0")
    assert "backfill: the free GPUs are reserved for gang, expected to start in 15 min" in (
        result.pending["long"].message
    )


def test_jobs_of_one_shape_behind_a_reservation_are_each_told_their_own_run_time() -> None:
    """Held back as the first of their shape was, without placing each again: each message quotes the
    job's own bound, and a shorter job of that shape after them still backfills."""
    pending = [
        job("gang", gpus=8, submit=1.0),
        job("long", gpus=2, submit=2.0, time_limit=5000.0),
        job("longer", gpus=2, submit=3.0, time_limit=7200.0),
        job("guessed", gpus=2, submit=4.0, duration=3600.0),
        job("short", gpus=2, submit=5.0, time_limit=500.0),
    ]
    result = schedule(_half_busy_node(), pending, DEFAULT, now=100.0)
    assert [s.job for s in result.starts] == ["short"]
    assert "this job's time limit (83 min) runs past that" in result.pending["long"].message
    assert "this job's time limit (2.0 h) runs past that" in result.pending["longer"].message
    assert "reserved for gang" in result.pending["guessed"].message


def test_without_backfill_the_long_job_takes_the_idle_gpus() -> None:
    pending = [job("gang", gpus=8, submit=1.0), job("long", gpus=2, submit=2.0, time_limit=5000.0)]
    result = schedule(_half_busy_node(), pending, NO_BACKFILL, now=100.0)
    assert [s.job for s in result.starts] == ["long"]
    assert not result.reservations


def test_a_higher_queue_job_that_fits_elsewhere_is_not_held_back() -> None:
    """The reservation holds only the GPUs the gang would get: a job that fits beside them starts."""
    snapshot = make_snapshot(pools=[make_pool("p", "f", count=2, gpus=8)])
    for i in range(8):
        run_job(snapshot, job(f"r{i}", duration=1000.0, time_limit=1000.0), "p-0", started_at=0.0)
    run_job(snapshot, job("half", gpus=4, duration=9000.0, time_limit=9000.0), "p-1", started_at=0.0)
    pending = [job("gang", gpus=8, pods=2, submit=1.0), job("long", gpus=4, submit=2.0, time_limit=5000.0)]
    result = schedule(snapshot, pending, DEFAULT, now=100.0)
    assert [(s.job, s.placements[0].node) for s in result.starts] == [("long", "p-1")]


def test_the_second_blocked_gang_gets_its_own_reservation_beside_the_first() -> None:
    """p-0 frees at t=1000 and p-1 at 3000 (4 GPUs idle there now). Gang a reserves p-0; gang b, with
    a's GPUs counted as taken, reserves p-1, so a job that would still run at 3000 may not take p-1's
    idle GPUs (under EASY, with one reservation, it would and b would wait for it)."""
    snapshot = make_snapshot(pools=[make_pool("p", "f", count=2, gpus=8)])
    for i in range(8):
        run_job(snapshot, job(f"r{i}", duration=1000.0, time_limit=1000.0), "p-0", started_at=0.0)
    for i in range(4):
        run_job(snapshot, job(f"q{i}", duration=3000.0, time_limit=3000.0), "p-1", started_at=0.0)
    pending = [
        job("a", gpus=8, submit=1.0, time_limit=3600.0),
        job("b", gpus=8, submit=2.0, time_limit=3600.0),
        job("long", gpus=2, submit=3.0, time_limit=5000.0),
        job("mid", gpus=2, submit=4.0, time_limit=2000.0),
    ]
    result = schedule(snapshot, pending, DEFAULT, now=100.0)
    assert [s.job for s in result.starts] == ["mid"]
    assert [(r.job, r.until, r.gpus[0][0]) for r in result.reservations] == [
        ("a", 1000.0, "p-0"),
        ("b", 3000.0, "p-1"),
    ]
    assert "the free GPUs are reserved for b" in result.pending["long"].message

    easy = replace(DEFAULT, reservations_per_domain=1)
    result = schedule(snapshot, pending, easy, now=100.0)
    assert sorted(s.job for s in result.starts) == ["long", "mid"]
    assert [r.job for r in result.reservations] == ["a"]


def _replay(policy) -> list[Event]:
    """An 8-GPU node: eight 1-GPU jobs end at t=100..800; an 8-GPU gang arrives at t=1; a 1-GPU job
    with a 2000 s limit arrives every 50 s from t=2 on."""
    cluster = ClusterFile(clusters=[make_cluster("c", [make_pool("p", "f", count=1, gpus=8)])])
    jobs = [job(f"r{i}", duration=100.0 * (i + 1), time_limit=100.0 * (i + 1)) for i in range(8)]
    jobs.append(job("gang", gpus=8, submit=1.0, duration=100.0, time_limit=100.0))
    jobs += [job(f"s{i}", submit=2.0 + 50 * i, duration=2000.0, time_limit=2000.0) for i in range(40)]
    events: list[Event] = []
    Simulator(cluster, jobs, policy, sink=events.append).run()
    return events


def test_a_stream_of_small_jobs_no_longer_starves_a_gang() -> None:
    def gang_start(events: list[Event]) -> float:
        return next(e.t for e in events if e.job == "gang" and e.event == "started")

    assert gang_start(_replay(DEFAULT)) == 800.0  # as soon as the first eight jobs are done
    assert gang_start(_replay(NO_BACKFILL)) > 2000.0  # each freed GPU went to the next small job
