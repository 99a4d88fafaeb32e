"""Preemption: which running jobs to stop so a pending job can start, and whether it is worth it.

Rules, in the order they matter to users:
- only jobs of lower priority in the same queue, or jobs of another queue in the same cohort that are
  borrowing the flavor while the preemptor's queue claims back its own nominal quota (without queues, any
  lower-priority job); never a job of equal or higher priority in the preemptor's own queue;
- never a job that started at this instant, nor one that has run less than the policy's minimum run time
  (``PreemptionCost.min_runtime_seconds``): a start is never undone before it could do any work, which is
  also what makes preemption unable to cycle (docs/scheduler.md, "Why preemption always settles");
- lowest priority first, then the job that loses least work since its last checkpoint, then the newest;
- no needless victim: after a set that works is found, each victim is given back in turn and stays
  running if the job still fits without stopping it (a minimal set, not always the smallest one);
- a preemption must pay for itself: the GPU-time it throws away (each victim's work since its last
  checkpoint, plus a restart cost) must not exceed the GPU-time of waiting it saves the preemptor: its
  GPUs times how long until it would fit anyway, as running jobs finish by their estimated run times.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from corral.core.units import MILLI_PER_GPU
from corral.core.workloads import Workload, checkpointed_progress
from corral.scheduling.backfill import Headroom, earliest_fit
from corral.scheduling.quota import is_borrowing
from corral.scheduling.snapshot import Allocation, Domain, Snapshot


@dataclass(frozen=True)
class PreemptionCost:
    """What a preemption costs and what it must buy.

    ``min_runtime_seconds``: a job is never a victim before it has run this long (Run:ai's minimum
    guaranteed run time, Slurm's PreemptExemptTime). 0 by default: a job started at an earlier instant
    is the cheapest victim there is, and the restart cost already keeps fresh starts from being undone
    for little gain. ``restart_seconds``: what stopping and starting a
    job costs beyond its lost work (scheduling, pulling, loading a model). ``payback``: how many times
    the waiting it saves must exceed the work it throws away; None stops weighing (Kueue's behaviour:
    any eligible victim set is taken).
    """

    min_runtime_seconds: float = 0.0
    restart_seconds: float = 60.0
    payback: float | None = 3.0


@dataclass(frozen=True, slots=True)
class Unprofitable:
    """A victim set that was found but does not pay for itself: what ``corral why`` says about it."""

    victims: tuple[str, ...]
    lost_gpu_seconds: float
    saved_gpu_seconds: float

    def describe(self) -> str:
        names = ", ".join(self.victims[:3]) + (
            f" and {len(self.victims) - 3} more" if len(self.victims) > 3 else ""
        )
        return (
            f"preempting {names} would throw away {self.lost_gpu_seconds / 3600:.2f} GPU-h of work to save "
            f"about {self.saved_gpu_seconds / 3600:.2f} GPU-h of waiting"
        )


def lost_work(allocation: Allocation, now: float) -> float:
    """Seconds of work a victim loses if stopped now: everything since its last checkpoint."""
    progress = allocation.progress(now)
    return progress - checkpointed_progress(allocation.workload, progress)


def protected(allocation: Allocation, now: float, cost: PreemptionCost) -> bool:
    """A job too fresh to be a victim: started at this instant, or before its minimum run time."""
    ran = now - allocation.started_at
    return ran <= 0 or ran < cost.min_runtime_seconds


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
    started: set[str],
    cost: PreemptionCost,
) -> list[Allocation] | Unprofitable | None:
    """A minimal set of running jobs to stop so that ``fits()`` holds; ``Unprofitable`` when the set
    found does not pay for itself; None if no set works.

    ``fits`` tests the job against the snapshot as it stands; ``started`` are jobs started in this
    round (never victims). The snapshot is left as it was found.
    """
    flavor = domain[1]
    candidates = [
        a
        for a in snapshot.running.values()
        if a.flavor == flavor
        and a.workload.id not in started
        and not protected(a, now, cost)
        and _eligible(snapshot, job, a, flavor)
    ]
    if not candidates:
        return None
    candidates.sort(
        key=lambda a: (a.workload.priority, _thrown_away(a, now, cost), -a.started_at, a.workload.id)
    )
    # Room by counts is necessary for a fit, and costs a few additions per release where a fit test
    # costs a placement: with hundreds of small borrowers, testing after every release was the round.
    headroom = Headroom(snapshot.domains.get(domain, ()), job.pod)
    mark = snapshot.mark()
    removed: list[Allocation] = []
    try:
        for allocation in candidates:
            if not _eligible(snapshot, job, allocation, flavor):
                continue
            snapshot.release(allocation.workload.id)
            removed.append(allocation)
            headroom.release(allocation)
            if headroom.pods >= job.pods and fits():
                break
        else:
            return None
        for allocation in reversed(removed[:-1]):
            snapshot.allocate(allocation)
            if not fits():
                snapshot.release(allocation.workload.id)
        victims = [a for a in removed if a.workload.id not in snapshot.running]
    finally:
        snapshot.rollback(mark)
    if cost.payback is None:
        return victims
    lost = sum(_thrown_away(v, now, cost) for v in victims)
    saved = _gpus(job.gpu_demand_milli, job.pods) * wait_without_preemption(snapshot, domain, fits, now, job)
    if lost * cost.payback > saved:
        return Unprofitable(tuple(v.workload.id for v in victims), lost, saved)
    return victims


def wait_without_preemption(
    snapshot: Snapshot, domain: Domain, fits: Callable[[], bool], now: float, job: Workload
) -> float:
    """Estimated seconds until ``fits()`` holds in ``domain`` with no preemption, as running jobs end by
    their estimated run times (infinite if it never would)."""
    # Past the look-ahead the wait is long: as good as never for weighing a preemption.
    fit = earliest_fit(snapshot, domain, lambda: True if fits() else None, now, job.pod, job.pods)
    return float("inf") if fit is None else fit[0] - now


def _thrown_away(allocation: Allocation, now: float, cost: PreemptionCost) -> float:
    """GPU-seconds a preemption of ``allocation`` costs: lost work and the restart, on all its GPUs."""
    return _gpus(allocation.gpu_milli, len(allocation.placements)) * (
        lost_work(allocation, now) + cost.restart_seconds
    )


def _gpus(milli: int, pods: int) -> float:
    """GPUs held, for weighing; a GPU-less job counts as a thousandth of a GPU per pod."""
    return milli / MILLI_PER_GPU if milli else pods / MILLI_PER_GPU


def _eligible(snapshot: Snapshot, job: Workload, victim: Allocation, flavor: str) -> bool:
    other = victim.workload
    if snapshot.queues is None:
        return other.priority < job.priority
    if other.queue == job.queue:
        return other.priority < job.priority
    if snapshot.cohort_of(other.queue) != snapshot.cohort_of(job.queue):
        return False
    return _may_reclaim(snapshot, job, flavor) and is_borrowing(snapshot, other.queue, flavor)
