"""Run-time estimates: what a forecast may assume about how long a job runs.

The control plane knows only what users declare (a time limit) and what finished jobs took; the
simulator is held to the same, so a policy that uses estimates is not clairvoyant.

GPU job run times are heavy-tailed (in the Alibaba trace the median is 11 minutes and the mean 8 hours), so
a job's elapsed time says much about what is left: a job that has run for a day is not eleven minutes from
done. Estimates are therefore conditional: the median run time of finished jobs of the same kind that ran
at least as long as this one has, less what it has run already.
"""

from __future__ import annotations

import bisect
from collections import defaultdict, deque
from dataclasses import dataclass, field

from corral.core.workloads import Workload

HISTORY_PER_KEY = 1000
"""Finished run times kept per kind: recent enough to follow a team's habits."""

MIN_HISTORY = 3
"""Finished jobs of a kind, past the elapsed time, needed before their median is trusted over a coarser
kind's."""

_Key = tuple[str, int] | str


@dataclass
class _History:
    """Run times in arrival order (to forget the oldest) and sorted (to take conditional medians)."""

    arrivals: deque[float] = field(default_factory=deque)
    ordered: list[float] = field(default_factory=list)

    def add(self, runtime: float) -> None:
        self.arrivals.append(runtime)
        bisect.insort(self.ordered, runtime)
        if len(self.arrivals) > HISTORY_PER_KEY:
            oldest = self.arrivals.popleft()
            del self.ordered[bisect.bisect_left(self.ordered, oldest)]

    def median_beyond(self, elapsed: float) -> float | None:
        """Median of the run times of at least ``elapsed``; None when too few are known."""
        first = bisect.bisect_left(self.ordered, elapsed)
        count = len(self.ordered) - first
        if count < MIN_HISTORY:
            return None
        middle = first + count // 2
        if count % 2:
            return self.ordered[middle]
        return (self.ordered[middle - 1] + self.ordered[middle]) / 2


@dataclass
class RuntimeEstimates:
    """Conditional run-time estimates from finished jobs.

    A job with a declared ``time_limit`` is estimated as that limit times the share of their limits that
    similar jobs really used (users over-declare, and by how much is a habit of the team); without one,
    as the run time of similar jobs. Similar means the same queue and GPU demand, else the same queue,
    else any; both are conditional on what the job has already run. Without history: the time limit, or
    ``default_seconds``, and never less than what the job has run.
    """

    default_seconds: float = 3600.0
    _history: dict[_Key, _History] = field(default_factory=lambda: defaultdict(_History))
    _used_share: dict[_Key, _History] = field(default_factory=lambda: defaultdict(_History))

    def observe(self, job: Workload, runtime: float) -> None:
        for key in _keys(job):
            self._history[key].add(runtime)
            if job.time_limit is not None:
                self._used_share[key].add(runtime / job.time_limit)

    def __call__(self, job: Workload, elapsed: float = 0.0) -> float:
        """Estimated total run time of ``job`` given it has run ``elapsed`` seconds so far."""
        learned = self.learned(job, elapsed)
        if learned is not None:
            return learned
        if job.time_limit is not None:
            return max(job.time_limit, elapsed)
        return max(self.default_seconds, 2 * elapsed)

    def learned(self, job: Workload, elapsed: float = 0.0) -> float | None:
        """The estimate similar finished jobs give, or None when too few are known: then ``__call__``
        falls back to the time limit, an upper bound rather than a prediction."""
        limit = job.time_limit
        for key in _keys(job):
            if limit is not None:
                history = self._used_share.get(key)
                share = history.median_beyond(elapsed / limit) if history is not None else None
                if share is not None:
                    return min(max(share * limit, elapsed), limit)
            else:
                history = self._history.get(key)
                estimate = history.median_beyond(elapsed) if history is not None else None
                if estimate is not None:
                    return estimate
        return None

    def remaining(self, job: Workload, elapsed: float) -> float:
        return max(self(job, elapsed) - elapsed, 0.0)


def _keys(job: Workload) -> tuple[_Key, ...]:
    return ((job.queue, job.gpu_demand_milli), job.queue, "")
