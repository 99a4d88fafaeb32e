"""Preemption: which running jobs to stop so a pending job can start.

Rules, in the order they matter to users:
- only jobs of lower priority in the same queue, or jobs of another queue in the same cohort that are
  borrowing the flavor while the preemptor's queue claims back its own nominal quota (without queues, any
  lower-priority job); never a job of equal or higher priority in the preemptor's own queue;
- lowest priority first, then the job that loses least work since its last checkpoint, then the newest;
- no needless victim: after a set that works is found, each victim is given back in turn and stays
  running if the job still fits without stopping it (a minimal set, not always the smallest one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from corral.core.workloads import Workload, checkpointed_progress
from corral.scheduling.quota import is_borrowing
from corral.scheduling.snapshot import Allocation, Domain, Snapshot


def lost_work(allocation: Allocation, now: float) -> float:
    """Seconds of work a victim loses if stopped now: everything since its last checkpoint."""
    progress = allocation.progress(now)
    return progress - checkpointed_progress(allocation.workload, progress)


def may_preempt(snapshot: Snapshot, job: Workload, domains: Sequence[Domain]) -> bool:
    """Cheap test, O(domains): could any running job be a victim of ``job`` at all?"""
    if snapshot.queues is None:
        lowest = snapshot.lowest_running_priority()
        return lowest is not None and lowest < job.priority
    lowest = snapshot.lowest_running_priority(job.queue)
    if lowest is not None and lowest < job.priority:
        return True
    return any(_may_reclaim(snapshot, job, flavor) for _, flavor in domains)


def _may_reclaim(snapshot: Snapshot, job: Workload, flavor: str) -> bool:
    """``job`` asks for GPU its queue is owed (within nominal quota) while some cohort member borrows it."""
    cohort = snapshot.cohort_of(job.queue)
    if cohort is None or job.gpu_demand_milli == 0 or not snapshot.cohort_borrowed[(cohort, flavor)]:
        return False
    own = snapshot.queues[job.queue].nominal_milli(flavor)  # type: ignore[index]
    return snapshot.queue_gpu[(job.queue, flavor)] + job.gpu_demand_milli <= own


def find_victims(
    snapshot: Snapshot,
    job: Workload,
    domain: Domain,
    fits: Callable[[], bool],
    now: float,
    protected: set[str],
) -> list[Allocation] | None:
    """The smallest set of running jobs to stop so that ``fits()`` holds, or None if none works.

    ``fits`` tests the job against the snapshot as it stands; ``protected`` are jobs started in this
    round (never victims). The snapshot is left as it was found.
    """
    flavor = domain[1]
    candidates = [
        a
        for a in snapshot.running.values()
        if a.flavor == flavor and a.workload.id not in protected and _eligible(snapshot, job, a, flavor)
    ]
    if not candidates:
        return None
    candidates.sort(key=lambda a: (a.workload.priority, lost_work(a, now), -a.started_at, a.workload.id))
    mark = snapshot.mark()
    removed: list[Allocation] = []
    try:
        for allocation in candidates:
            if not _eligible(snapshot, job, allocation, flavor):
                continue
            snapshot.release(allocation.workload.id)
            removed.append(allocation)
            if fits():
                break
        else:
            return None
        for allocation in reversed(removed[:-1]):
            snapshot.allocate(allocation)
            if not fits():
                snapshot.release(allocation.workload.id)
        return [a for a in removed if a.workload.id not in snapshot.running]
    finally:
        snapshot.rollback(mark)


def _eligible(snapshot: Snapshot, job: Workload, victim: Allocation, flavor: str) -> bool:
    other = victim.workload
    if snapshot.queues is None:
        return other.priority < job.priority
    if other.queue == job.queue:
        return other.priority < job.priority
    if snapshot.cohort_of(other.queue) != snapshot.cohort_of(job.queue):
        return False
    return _may_reclaim(snapshot, job, flavor) and is_borrowing(snapshot, other.queue, flavor)
