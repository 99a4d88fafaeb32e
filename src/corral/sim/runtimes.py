"""Run-time estimates: what a forecast may assume about how long a job runs.

The control plane knows only what users declare (a time limit) and what finished jobs took; the
simulator is held to the same, so a policy that uses estimates is not clairvoyant.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from statistics import median

from corral.core.workloads import Workload

HISTORY_PER_KEY = 200
"""Finished run times kept per (queue, GPUs) key: recent enough to follow a team's habits."""

MIN_HISTORY = 3
"""Finished jobs of a kind needed before their median is trusted over a coarser kind's."""


@dataclass
class RuntimeEstimates:
    """Run-time estimates learned from finished jobs: median of the same queue and GPU count, else of
    the queue, else of everything; before any history, the job's declared ``duration`` when it is a
    user's estimate (the control plane's time limit), else ``default_seconds``."""

    declared_is_estimate: bool = False
    default_seconds: float = 3600.0
    _history: dict[tuple[str, int] | str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def observe(self, job: Workload, runtime: float) -> None:
        for key in ((job.queue, job.gpu_demand_milli), job.queue, ""):
            history = self._history[key]
            history.append(runtime)
            if len(history) > HISTORY_PER_KEY:
                del history[0]

    def __call__(self, job: Workload) -> float:
        for key in ((job.queue, job.gpu_demand_milli), job.queue, ""):
            history = self._history.get(key)
            if history is not None and len(history) >= MIN_HISTORY:
                estimate = median(history)
                return min(estimate, job.duration) if self.declared_is_estimate else estimate
        return job.duration if self.declared_is_estimate else self.default_seconds
