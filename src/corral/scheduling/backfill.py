"""Backfill with reservations (EASY, as Slurm's ``sched/backfill``): the first job of a round that finds
no room in a domain gets a reservation there, and later jobs may use the reserved GPUs only if they
will be done before it needs them.

Without reservations, a gang that needs a whole node is starved by small jobs: every GPU that frees is
taken by the next small job before the node empties. With one, the round estimates when the blocked job
would fit as running jobs finish (``earliest_fit``), and the idle GPUs it would get then are held back
from any job whose time limit (or, without one, its estimated run time) ends after that moment. Jobs
that end sooner fill the hole, which is what keeps utilisation up.

Estimates, never true durations: run times learned from finished jobs (``Snapshot.runtime_estimate``),
else declared time limits, else "as long again as it has run, at least an hour".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from corral.core.workloads import Workload
from corral.scheduling.decisions import Placement, Reservation
from corral.scheduling.snapshot import Allocation, Domain, Snapshot

UNKNOWN_RUNTIME_SECONDS = 3600.0
"""What a job with no time limit and no estimate is assumed to run at least."""

T = TypeVar("T")


def remaining_runtime(
    allocation: Allocation, now: float, estimate: Callable[[Workload, float], float] | None
) -> float:
    """Estimated seconds until ``allocation`` finishes by itself."""
    progress = allocation.progress(now)
    return max(total_runtime(allocation.workload, progress, estimate) - progress, 0.0)


def total_runtime(
    job: Workload, progress: float, estimate: Callable[[Workload, float], float] | None
) -> float:
    """Estimated total run time of ``job`` after ``progress`` seconds of it."""
    if estimate is not None:
        return estimate(job, progress)
    if job.time_limit is not None:
        return max(job.time_limit, progress)
    return max(UNKNOWN_RUNTIME_SECONDS, 2 * progress)  # heavy tails: as long again as it has run


def earliest_fit(
    snapshot: Snapshot, domain: Domain, attempt: Callable[[], T | None], now: float, demand_milli: int = 0
) -> tuple[float, T] | None:
    """When ``attempt()`` first succeeds in ``domain`` if running jobs there end by their estimated run
    times and nothing else starts, with what it returned then; None if it never would. ``attempt`` is
    not called while the domain has less free GPU than ``demand_milli``: on a big cluster most releases
    cannot be enough yet, and each attempt is a placement. The snapshot is left as it was found."""
    running = [a for a in snapshot.running.values() if (a.cluster, a.flavor) == domain]
    ends = sorted((remaining_runtime(a, now, snapshot.runtime_estimate), a.workload.id) for a in running)
    free = sum(g.free_milli for node in snapshot.domains.get(domain, ()) if node.up for g in node.gpus)
    mark = snapshot.mark()
    try:
        for remaining, job_id in ends:
            free += snapshot.release(job_id).gpu_milli
            if free < demand_milli:
                continue
            outcome = attempt()
            if outcome is not None:
                return now + remaining, outcome
    finally:
        snapshot.rollback(mark)
    return None


def reservation_for(job: Workload, domain: Domain, until: float, placements: list[Placement]) -> Reservation:
    return Reservation(job.id, domain, until, tuple((p.node, p.gpus) for p in placements))


def idle_reserved(snapshot: Snapshot, reservation: Reservation) -> list[tuple[str, tuple[int, ...]]]:
    """The reserved GPUs that are idle now: the ones a backfilled job could take from the reservation."""
    idle = []
    for node_name, gpus in reservation.gpus:
        node = snapshot.nodes[node_name]
        free = tuple(i for i in gpus if node.gpus[i].idle and node.gpus[i].healthy)
        if free:
            idle.append((node_name, free))
    return idle


def overlaps(placements: list[Placement], held: list[tuple[str, tuple[int, ...]]]) -> bool:
    taken = {(node, gpu) for node, gpus in held for gpu in gpus}
    return any((p.node, gpu) in taken for p in placements for gpu in p.gpus)
