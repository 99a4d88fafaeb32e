"""The work-conserving check of ``corral check --work-conserving``: no job waits while it fits on idle
capacity that its quota allows.

The checker mirrors the log into a scheduler ``Snapshot`` and asks the scheduler's own code whether a
waiting job fits: ``feasibility`` for the domains it may ever use, ``quota_shortfall`` for what its queue
and cohort allow now, ``place_gang`` (first fit) for the nodes. A second fit test written here would drift
from the scheduler's, and then the check would judge a different scheduler.

Only private clusters are judged: a job's use of public ones also depends on burst thresholds, budgets and
forecasts, which a log does not record. The invariant holds for best-effort policies without reservations
(``fifo``, ``default``); ``strict-fifo`` leaves capacity idle on purpose (a head job blocks its queue).

Reservations (backfill) are written to the log as their own event, ``{"event": "reserved", "t", "job",
"until", "placements"}``: capacity in an active reservation's placements is not idle for a job that may
run past ``until``. The checker knows a job's run time only as its user declared it, so a job counts as
ending by ``until`` only when its ``time_limit`` says so; a job without one never uses reserved capacity.
A reservation is active from its event until ``until`` or until its job starts or ends, whichever comes
first.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from corral.core.cluster import ClusterSpec, PoolSpec
from corral.core.nodes import build_node
from corral.core.workloads import Workload
from corral.scenario.models import ClusterFile, PodPlacement
from corral.scheduling.decisions import Placement
from corral.scheduling.feasibility import feasibility
from corral.scheduling.placement import place_gang
from corral.scheduling.quota import quota_shortfall
from corral.scheduling.scorers import Scoring
from corral.scheduling.snapshot import Allocation, Snapshot

FIRST_FIT = Scoring()
"""Whether a gang fits anywhere does not depend on scores: the first node that fits is as good as any."""


@dataclass(frozen=True, slots=True)
class Reservation:
    """Capacity held for ``job`` until ``until`` (a backfill reservation, written by the scheduler)."""

    job: str
    until: float
    flavor: str
    placements: tuple[Placement, ...]


@dataclass(frozen=True, slots=True)
class IdleFit:
    """A waiting job and the idle block it fits on: the evidence of a violation."""

    job: str
    cluster: str
    flavor: str
    placements: tuple[Placement, ...]

    def describe(self) -> str:
        pods = "; ".join(
            f"pod {p.pod} on {p.node}" + (f" GPUs {list(p.gpus)}" if p.gpus else "") for p in self.placements
        )
        return f"idle in cluster {self.cluster} ({self.flavor}): {pods}"


class IdleCapacity:
    """The log's live state as the scheduler sees it, so the scheduler's own fit tests can be asked."""

    def __init__(self, cluster: ClusterFile) -> None:
        self._snapshot = Snapshot(
            cluster.clusters,
            [
                build_node(spec, pool, i)
                for spec in cluster.clusters
                for pool in spec.pools
                for i in range(pool.count)
            ],
            cluster.queues,
        )
        self._reservations: dict[str, Reservation] = {}
        self._leaving: set[str] = set()
        """Removed nodes that jobs still hold: the log preempts them after the removal, at the same instant."""

    # -- mirroring the log --

    def add_node(self, spec: ClusterSpec, pool: PoolSpec, index: int) -> None:
        self._snapshot.add_node(build_node(spec, pool, index))

    def remove_node(self, name: str) -> None:
        if self._snapshot.node_jobs.get(name):
            self._snapshot.set_node_up(name, False)
            self._leaving.add(name)
        else:
            self._snapshot.remove_node(name)

    def set_node_up(self, name: str, up: bool) -> None:
        self._snapshot.set_node_up(name, up)

    def start(self, workload: Workload, cluster: str, placements: Sequence[PodPlacement], now: float) -> None:
        held = _placements(placements)
        flavor = self._snapshot.nodes[held[0].node].flavor
        self._snapshot.allocate(Allocation(workload, cluster, flavor, held, now))
        self._snapshot.commit()
        self._reservations.pop(workload.id, None)

    def stop(self, job: str) -> None:
        allocation = self._snapshot.release(job)
        self._snapshot.commit()
        for placement in allocation.placements:
            if placement.node in self._leaving and not self._snapshot.node_jobs.get(placement.node):
                self._leaving.discard(placement.node)
                self._snapshot.remove_node(placement.node)

    def reserve(self, job: str, until: float, placements: Sequence[PodPlacement]) -> None:
        held = _placements(placements)
        flavor = self._snapshot.nodes[held[0].node].flavor
        self._reservations[job] = Reservation(job, until, flavor, held)

    def forget_reservation(self, job: str) -> None:
        self._reservations.pop(job, None)

    # -- the check --

    def first_idle_fit(
        self, waiting: Iterable[Workload], progress: dict[str, float], now: float
    ) -> IdleFit | None:
        """The first of ``waiting`` (in the given order) that fits now on idle private capacity its quota
        allows, with where it fits; jobs of one shape under the same reservations are tried once."""
        for job, reservation in list(self._reservations.items()):
            if reservation.until <= now:
                del self._reservations[job]
        tried: set[object] = set()
        for workload in waiting:
            respected = self._respected(workload, progress.get(workload.id, 0.0), now)
            key = (
                workload.queue,
                workload.pod,
                workload.pods,
                workload.sensitive,
                workload.burstable,
                respected,
            )
            if key in tried:
                continue
            tried.add(key)
            fit = self._fit(workload, respected)
            if fit is not None:
                return fit
        return None

    def _respected(self, workload: Workload, progress: float, now: float) -> tuple[str, ...]:
        """Reservations whose capacity is not idle for ``workload``: those it might still hold at ``until``."""
        limit = workload.time_limit
        end = None if limit is None else now + limit - progress
        return tuple(
            sorted(
                job
                for job, r in self._reservations.items()
                if job != workload.id and (end is None or end > r.until)
            )
        )

    def _fit(self, workload: Workload, respected: tuple[str, ...]) -> IdleFit | None:
        snapshot = self._snapshot
        # Reserved capacity is held on the nodes only: a reservation is room, not quota.
        held = [
            (snapshot.nodes[p.node], p)
            for job in respected
            for p in self._reservations[job].placements
            if p.node in snapshot.nodes
        ]
        for node, p in held:
            node.hold(p.cpu, p.memory_gib, p.gpus, p.gpu_milli, p.gpu_memory_gib)
        try:
            for cluster, flavor in feasibility(snapshot, workload, workload.pod).domains:
                if not snapshot.clusters[cluster].private:
                    continue
                if quota_shortfall(snapshot, workload.queue, flavor, workload.gpu_demand_milli) is not None:
                    continue
                placed = place_gang(
                    snapshot.domains[(cluster, flavor)],
                    workload.pod,
                    workload.pods,
                    FIRST_FIT,
                    random.Random(0),
                )
                if isinstance(placed, list):
                    return IdleFit(workload.id, cluster, flavor, tuple(placed))
            return None
        finally:
            for node, p in held:
                node.release(p.cpu, p.memory_gib, p.gpus, p.gpu_milli, p.gpu_memory_gib)


def _placements(placements: Sequence[PodPlacement]) -> tuple[Placement, ...]:
    return tuple(
        Placement(
            pod=p.pod,
            node=p.node,
            gpus=tuple(p.gpus),
            gpu_milli=p.gpu_milli,
            gpu_memory_gib=p.gpu_memory_gib,
            cpu=p.cpu,
            memory_gib=p.memory_gib,
        )
        for p in placements
    )
