"""Backfill with reservations (as Slurm's ``sched/backfill``): the first jobs of a round that find no room
in a domain get a reservation there (one is EASY backfill; the default policy makes two, the second
counting the first's GPUs as taken), and later jobs may use the reserved GPUs only if they will be
done before the holder needs them.

Without reservations, a gang that needs a whole node is starved by small jobs: every GPU that frees is
taken by the next small job before the node empties. With one, the round estimates when the blocked job
would fit as running jobs finish (``earliest_fit``), and the idle GPUs it would get then are held back
from any job whose time limit (or, without one, its estimated run time) ends after that moment. Jobs
that end sooner fill the hole, which is what keeps utilisation up.

Estimates, never true durations: run times learned from finished jobs (``Snapshot.runtime_estimate``),
else declared time limits, else "as long again as it has run, at least an hour".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from corral.core.nodes import Node
from corral.core.workloads import PodRequest, Workload
from corral.scheduling.decisions import Placement, Reservation
from corral.scheduling.placement import EPSILON
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


MAX_RELEASES = 256
"""Running jobs a look ahead releases at most: beyond them a job's start is too far off to hold room
for, and each release may cost a placement."""


def earliest_fit(
    snapshot: Snapshot,
    domain: Domain,
    attempt: Callable[[], T | None],
    now: float,
    pod: PodRequest,
    pods: int,
) -> tuple[float, T] | None:
    """When ``attempt()`` first succeeds in ``domain`` if running jobs there end by their estimated run
    times and nothing else starts, with what it returned then; None if it never would within
    ``MAX_RELEASES`` ends. The snapshot is left as it was found.

    ``attempt`` is a real placement, and releasing a job in the snapshot costs as much: so the look
    ahead first counts, per node, the whole GPUs, CPU and memory the ends free (``Headroom``), and only
    when ``pods`` such pods could fit by those counts are the ends applied and the placement tried."""
    ends = _ends(snapshot, domain, now)
    headroom = Headroom(snapshot.domains.get(domain, ()), pod)
    mark = snapshot.mark()
    applied = 0
    try:
        for index, (remaining, job_id) in enumerate(ends[:MAX_RELEASES]):
            headroom.release(snapshot.running[job_id])
            if headroom.pods < pods:
                continue
            for _, earlier in ends[applied : index + 1]:
                snapshot.release(earlier)
            applied = index + 1
            outcome = attempt()
            if outcome is not None:
                # At least a second ahead: a job that overran its estimate leaves ``remaining`` at 0, and
                # a reservation must still hold after the instant it is made.
                return now + max(remaining, 1.0), outcome
    finally:
        snapshot.rollback(mark)
    return None


def _ends(snapshot: Snapshot, domain: Domain, now: float) -> list[tuple[float, str]]:
    """The domain's running jobs by estimated time left."""
    ends = [
        (_time_left(snapshot, allocation, now), allocation.workload.id)
        for allocation in snapshot.running.values()
        if (allocation.cluster, allocation.flavor) == domain
    ]
    ends.sort()
    return ends


def running_gpu_seconds_left(snapshot: Snapshot, now: float) -> float:
    """The GPU-seconds the running jobs still have to run by the estimates."""
    return sum(
        allocation.workload.gpu_demand_milli / 1000 * _time_left(snapshot, allocation, now)
        for allocation in snapshot.running.values()
    )


def _time_left(snapshot: Snapshot, allocation: Allocation, now: float) -> float:
    """``remaining_runtime``, kept for the rest of the instant: a round asks once per blocked job, and an
    estimate is a lookup in the run-time history."""
    at, left = snapshot.time_left
    if at != now:
        left = {}
        snapshot.time_left = (now, left)
    key = (allocation.workload.id, allocation.started_at)
    remaining = left.get(key)
    if remaining is None:
        remaining = left[key] = remaining_runtime(allocation, now, snapshot.runtime_estimate)
    return remaining


class Headroom:
    """How many pods of one shape the nodes of a domain could hold, counting resources as jobs end: a
    necessary condition for a placement (it ignores which GPUs, NVLink and shares), cheap to keep."""

    def __init__(self, nodes: Sequence[Node], pod: PodRequest) -> None:
        self.pod = pod
        self.free: dict[str, list[float]] = {}
        self.fit: dict[str, int] = {}
        for node in nodes:
            if node.up and (pod.models is None or node.gpu_model in pod.models):
                shared = pod.fractional and node.max_free_share >= pod.gpu_milli
                self.free[node.name] = [
                    float(node.whole_free_gpus + shared),
                    node.cpu - node.used_cpu,
                    node.memory_gib - node.used_memory_gib,
                ]
                self.fit[node.name] = self._fits(node.name)
        self.pods = sum(self.fit.values())

    def release(self, allocation: Allocation) -> None:
        for placement in allocation.placements:
            free = self.free.get(placement.node)
            if free is None:
                continue
            # A released share may leave its GPU whole (if it was the last on it) or with room for a
            # share: count each of its GPUs as freed, an upper bound, so the count stays necessary.
            free[0] += len(placement.gpus)
            free[1] += placement.cpu
            free[2] += placement.memory_gib
            fit = self._fits(placement.node)
            self.pods += fit - self.fit[placement.node]
            self.fit[placement.node] = fit

    def _fits(self, name: str) -> int:
        gpus, cpu, memory = self.free[name]
        pod = self.pod
        limits = [10_000]
        if pod.gpus:
            limits.append(int(gpus + EPSILON) // pod.gpus)
        if pod.cpu > 0:
            limits.append(int((cpu + EPSILON) / pod.cpu))
        if pod.memory_gib > 0:
            limits.append(int((memory + EPSILON) / pod.memory_gib))
        return max(min(limits), 0)


def reservation_for(job: Workload, domain: Domain, until: float, placements: list[Placement]) -> Reservation:
    return Reservation(job.id, domain, until, tuple(placements))


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
