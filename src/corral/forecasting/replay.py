"""Start-time forecasts: when each waiting job would start if it stayed on private clusters.

The forecast replays the live state forward with the simulator itself (``replay``: the simulator passes
its own, the control plane gets it from the server's wiring, so neither imports the other through here),
on the private clusters only: the
running jobs end when their estimated run time is up, the waiting jobs arrive at once with estimated run
times, and the same scheduler under the same policy decides. No new submissions are imagined, so the
forecast is what the queue ahead of a job implies; later, higher-priority arrivals can only delay it.

A forecast replays at most ``FORECAST_JOBS`` waiting jobs: those first in line (highest priority, then
earliest submitted). A replay of the whole queue costs about the square of its depth (each start is a
round over every job still waiting), so a queue of 20,000 would cost more than all the rounds that use the
forecast; the jobs further back get no prediction (the burst rules that need one pass them by, and their
queue's threshold still applies) until they move up. The jobs ahead of a job are what delay it, so the
first in line lose little: only what later jobs, passed over, would have taken from them.

Run times are estimates (``RuntimeEstimates``): the control plane knows only what users declare and what
finished jobs took, and the simulator is held to the same, so a policy that uses the forecast is not
clairvoyant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from corral.core.nodes import Node
from corral.core.workloads import Workload
from corral.forecasting.runtimes import RuntimeEstimates
from corral.scenario.models import ClusterFile
from corral.scheduling import Allocation, Policy, Snapshot
from corral.scheduling.bursting import Bursting, Forecast

FORECAST_JOBS = 200
"""Waiting jobs a forecast replays, first in line first; see the module docstring."""


@dataclass(frozen=True)
class ReplayStart:
    """A replay that begins from a live state instead of empty clusters at t=0: what a forecast needs.

    ``nodes`` are empty copies of the live nodes (up/down and GPU health kept); ``running`` holds each
    running job's allocation and the seconds it has left.
    """

    now: float
    nodes: Sequence[Node]
    running: Sequence[tuple[Allocation, float]] = ()


Replay = Callable[[ClusterFile, Sequence[Workload], Policy, ReplayStart], dict[str, float]]
"""Replays the jobs on the clusters from the live state under the policy, and says when each job that
started first started: the simulator (``corral.sim.engine.replay_first_starts``)."""


def forecast_private_starts(
    snapshot: Snapshot,
    waiting: Sequence[Workload],
    policy: Policy,
    now: float,
    estimates: RuntimeEstimates,
    saved: dict[str, float] | None = None,
    *,
    replay: Replay,
) -> Forecast:
    """Predicted private start of every waiting job (absent: it would not start on private clusters),
    and the run time assumed for every waiting and running job, given the work each has done (running
    jobs) or saved (``saved``: checkpointed progress of requeued jobs)."""
    saved = saved or {}
    waiting = first_in_line(waiting)
    runtimes = {job.id: estimates(job, saved.get(job.id, 0.0)) for job in waiting}
    runtimes.update({job: estimates(a.workload, a.progress(now)) for job, a in snapshot.running.items()})
    guessed = frozenset(
        [job.id for job in waiting if _guessed(estimates, job, saved.get(job.id, 0.0))]
        + [job for job, a in snapshot.running.items() if _guessed(estimates, a.workload, a.progress(now))]
    )
    private = [cluster for cluster in snapshot.clusters.values() if cluster.private]
    if not private or not waiting:
        return Forecast({}, runtimes, guessed)
    names = {cluster.name for cluster in private}
    nodes = [empty_copy(node) for node in snapshot.nodes.values() if node.cluster in names]
    running = [
        (allocation, max(runtimes[job] - allocation.progress(now), 0.0))
        for job, allocation in snapshot.running.items()
        if allocation.cluster in names
    ]
    remaining = [
        job.model_copy(update={"duration": max(runtimes[job.id] - saved.get(job.id, 0.0), 1.0)})
        for job in waiting
    ]
    queues = list(snapshot.queues.values()) if snapshot.queues is not None else None
    cluster_file = ClusterFile(clusters=private, queues=queues)
    first = replay(
        cluster_file,
        remaining,
        replace(policy, bursting=Bursting(enabled=False)),
        ReplayStart(now, nodes, running),
    )
    starts = {job.id: first[job.id] for job in waiting if job.id in first}
    return Forecast(starts, runtimes, guessed)


def _guessed(estimates: RuntimeEstimates, job: Workload, elapsed: float) -> bool:
    """Neither learned from similar jobs nor bounded by a time limit its user declared."""
    return job.time_limit is None and estimates.learned(job, elapsed) is None


def first_in_line(waiting: Sequence[Workload], limit: int = FORECAST_JOBS) -> Sequence[Workload]:
    """The ``limit`` waiting jobs a best-effort round tries first: highest priority, then earliest."""
    if len(waiting) <= limit:
        return waiting
    return sorted(waiting, key=lambda job: (-job.priority, job.submit))[:limit]


def empty_copy(node: Node) -> Node:
    """The node as hardware and health only: the replay re-applies the running allocations."""
    gpus = [replace(gpu, used_milli=0, used_memory_gib=0.0) for gpu in node.gpus]
    return replace(node, gpus=gpus, used_cpu=0.0, used_memory_gib=0.0, idle_since=None)
