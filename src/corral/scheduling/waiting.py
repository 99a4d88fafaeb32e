"""Which waiting jobs a scheduling round should look at.

A job that could not start waits for room, and room appears only when something is released (a job ends
or is preempted, a node comes up or is added, quota grows). Until then retrying it gives the same answer,
so it is *parked*, as Kueue parks inadmissible workloads: a round looks at new and requeued jobs, and at
every waiting job again after a release. This keeps a round's cost proportional to what changed, not to
the length of the queue.

Under StrictFIFO a parked job still holds its place: whenever a queue has a new job, its parked jobs are
presented too, so the new job cannot overtake a blocked head.
"""

from __future__ import annotations

from collections.abc import Set

from corral.core.workloads import Workload
from corral.scheduling.policies import Ordering, Policy


class WaitingJobs:
    """Jobs waiting to start, split into active (look at them next round) and parked (wait for a release)."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._jobs: dict[str, Workload] = {}
        self._parked: set[str] = set()
        self._behind: set[str] = set()
        """Parked jobs refused only because free room is reserved: a moved reservation may let them in."""

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job: str) -> bool:
        return job in self._jobs

    def add(self, workload: Workload) -> None:
        """A new or requeued job: looked at in the next round."""
        self._jobs[workload.id] = workload
        self._parked.discard(workload.id)
        self._behind.discard(workload.id)

    def remove(self, job: str) -> Workload:
        self._parked.discard(job)
        self._behind.discard(job)
        return self._jobs.pop(job)

    def park(self, jobs: set[str], behind_reservations: Set[str] = frozenset()) -> None:
        """These jobs were looked at and could not start: skip them until ``wake``, or, for those in
        ``behind_reservations``, until ``wake_behind_reservations``."""
        self._parked.update(job for job in jobs if job in self._jobs)
        self._behind.update(job for job in behind_reservations if job in self._parked)

    def wake(self) -> None:
        """Something was released: every waiting job gets another look."""
        self._parked.clear()
        self._behind.clear()

    def wake_behind_reservations(self) -> bool:
        """Reservations moved or ended: the jobs they kept out get another look. True if there were any."""
        woken = bool(self._behind)
        self._parked -= self._behind
        self._behind.clear()
        return woken

    @property
    def has_active(self) -> bool:
        return len(self._parked) < len(self._jobs)

    def ids(self) -> list[str]:
        return list(self._jobs)

    def jobs(self) -> list[Workload]:
        """Every waiting job, parked or not, in arrival order."""
        return list(self._jobs.values())

    def for_round(self) -> list[Workload]:
        """The jobs the next round should consider, in arrival order."""
        if not self._parked:
            return list(self._jobs.values())
        active = [w for job, w in self._jobs.items() if job not in self._parked]
        if self._policy.ordering is not Ordering.STRICT_FIFO:
            return active
        queues = {self._queue_key(w) for w in active}
        return [w for w in self._jobs.values() if self._queue_key(w) in queues]

    def _queue_key(self, workload: Workload) -> str:
        return workload.queue if self._policy.fair_share else ""
