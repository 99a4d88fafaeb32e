"""The discrete-event loop: submissions, completions and node changes in time order, with a scheduling
round after each batch of simultaneous events.

The engine holds the only mutable truth of a replay (which job runs where, since when, with how much
saved progress) and applies the scheduler's decisions to it, exactly as the control plane's reconcile
loop will: preemptions first, then starts. It never decides anything itself.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum

from corral.core.cluster import PoolSpec
from corral.core.nodes import Node, build_initial_nodes, build_node
from corral.core.units import MILLI_PER_GPU
from corral.core.workloads import Workload, checkpointed_progress
from corral.errors import CorralError
from corral.forecasting.replay import ReplayStart, forecast_private_starts
from corral.forecasting.runtimes import RuntimeEstimates
from corral.scenario.models import RESERVED_EVENT, ClusterFile, Event, PodPlacement, Summary
from corral.scheduling import Allocation, Pending, PendingReason, Policy, Snapshot, schedule
from corral.scheduling.decisions import BehindReservation, Placement, Reservation
from corral.scheduling.snapshot import Domain
from corral.scheduling.waiting import WaitingJobs
from corral.sim.ledger import SpendLedger
from corral.sim.report import JobRecord, ReplayTally, summarize

EventSink = Callable[[Event], None]

log = logging.getLogger(__name__)

FORECAST_REFRESH_SECONDS = 600.0
"""A forecast is made again after every arrival or requeue, and otherwise after this long: finishes
earlier or later than estimated move the predictions."""

MAX_FRUITLESS_WAKES = 100
"""Wakes in a row that changed nothing before the engine stops asking for more: a job that waits for a
budget period that never pays for it would otherwise wake the replay every day, forever."""

MAX_ROUNDS_PER_INSTANT = 1000
"""Rounds at one instant after which the engine stops letting them preempt. It is never reached: a job
that starts at an instant cannot be a victim at that instant, so each round that preempts stops a job
that was running before the instant, and there are finitely many (docs/scheduler.md, "Why preemption
always settles"). It stays as a guard so that a bug slows a replay instead of ending it."""


class _Kind(IntEnum):
    """Order of simultaneous events: releases before arrivals, so freed room is seen by the round."""

    FINISH = 0
    NODE_DOWN = 1
    NODE_REMOVED = 2
    NODE_UP = 3
    NODE_ADDED = 4
    PROVISIONED = 5
    SUBMIT = 6
    TICK = 7  # wake the scheduler without any other change, e.g. to give back an idle elastic node
    WAKE = 8  # look at parked jobs again: the clock alone changed their options (a burst threshold)


_CLUSTER_EVENT_KINDS = {
    "node_down": _Kind.NODE_DOWN,
    "node_up": _Kind.NODE_UP,
    "node_added": _Kind.NODE_ADDED,
    "node_removed": _Kind.NODE_REMOVED,
}


@dataclass
class _Running:
    allocation: Allocation
    attempt: int


@dataclass(frozen=True)
class SimulationResult:
    summary: Summary
    pending: dict[str, Pending]
    """Why each job still waiting at the end of the replay waits (from the last round that saw it)."""


class Simulator:
    """Replays ``workloads`` on the clusters of ``cluster_file`` under ``policy``.

    ``cluster_events`` are injected node changes (node_down/node_up/node_added/node_removed), in the event
    log's own line format. ``sink`` receives every event of the log as it happens.
    """

    def __init__(
        self,
        cluster_file: ClusterFile,
        workloads: Sequence[Workload],
        policy: Policy,
        *,
        cluster_events: Iterable[Event] = (),
        sink: EventSink | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        start: ReplayStart | None = None,
        record_forecasts: bool = False,
    ) -> None:
        self.policy = policy.for_workload(job.pod for job in workloads)
        nodes = start.nodes if start is not None else build_initial_nodes(cluster_file.clusters)
        self.snapshot = Snapshot(cluster_file.clusters, nodes, cluster_file.queues)
        self._sink = sink or (lambda event: None)
        self._on_progress = on_progress
        self._heap: list[tuple[float, int, int, object]] = []
        self._seq = itertools.count()
        self._waiting = WaitingJobs(policy)
        self._saved: dict[str, float] = {}
        self._running: dict[str, _Running] = {}
        self._attempts: dict[str, int] = {}
        self._last_pending: dict[str, Pending] = {}
        self._idled_by_limits: dict[str, float] = {}
        self._reservations: dict[str, tuple[float, tuple[Placement, ...]]] = {}
        """The last round's reservations: job -> (until, placements)."""
        """GPUs per queue that borrowing limits left idle as of the last round (``_held_by_limits``)."""
        self._reservations_logged: dict[str, tuple[float, tuple[Placement, ...]]] = {}
        self.tally = ReplayTally()
        clock = start.now if start is not None else 0.0
        for workload in workloads:
            self.tally.jobs[workload.id] = JobRecord(workload)
            self._push(max(workload.submit, clock), _Kind.SUBMIT, workload)
        for allocation, remaining in start.running if start is not None else ():
            job = allocation.workload.id
            self.snapshot.allocate(allocation)
            self._running[job] = _Running(allocation, 1)
            self._attempts[job] = 1
            self.tally.jobs[job] = JobRecord(allocation.workload, first_start=allocation.started_at)
            self._push(clock + remaining, _Kind.FINISH, (job, 1))
        self.snapshot.commit()
        for event in cluster_events:
            kind = _CLUSTER_EVENT_KINDS.get(event.event)
            if kind is None or event.node is None:
                raise CorralError(
                    f"cluster event at t={event.t}: {event.event!r} is not one of {', '.join(_CLUSTER_EVENT_KINDS)}"
                )
            if kind is not _Kind.NODE_ADDED and event.node not in self.snapshot.nodes:
                self._parse_node_name(event.node)
            self._push(event.t, kind, event.node)
        self._submitted = 0
        self._gpu_capacity = self._count_gpus()
        self._provision_left: dict[str, int] = {}
        self._reserved_names: set[str] = set()
        self._tick = False
        self._wakes: set[float] = set()
        self._woken = False
        self._fruitless_wakes = 0
        self._ledger = SpendLedger(
            {q.name: q.budget for q in cluster_file.queues or [] if q.budget is not None}
        )
        self.runtimes = RuntimeEstimates()
        """Run times learned from finished jobs: what forecasts assume, never the true durations."""
        self.snapshot.runtime_estimate = self.runtimes
        self._forecasts = record_forecasts or (
            self.policy.bursting.uses_forecast and any(not c.private for c in cluster_file.clusters)
        )
        self._forecast_at: float | None = None
        self._record_forecasts = record_forecasts
        self.predicted_starts: dict[str, float] = {}
        """With ``record_forecasts``: each job's forecast private start, as first forecast on arrival."""
        self._capacity_seconds = 0.0
        for node in self.snapshot.nodes.values():
            node.idle_since = clock if node.empty else None

    def run(self) -> SimulationResult:
        previous: float | None = None
        while self._heap:
            now = self._heap[0][0]
            if previous is not None:
                self._capacity_seconds += self._gpu_capacity * (now - previous)
                for queue, gpus in self._idled_by_limits.items():
                    self.tally.gpu_seconds_idled_by_limits[queue] += gpus * (now - previous)
            else:
                self.tally.first_time = now
            previous = now
            while self._heap and self._heap[0][0] == now:
                _, kind, _, payload = heapq.heappop(self._heap)
                self._handle(now, _Kind(kind), payload)
            self._settle(now)
        pending = {job: self._last_pending[job] for job in self._waiting.ids() if job in self._last_pending}
        self.tally.budgets = self._ledger.budgets
        self.tally.peak_period_cost = self._ledger.peak_period_spend(self.tally.last_time)
        return SimulationResult(summarize(self.tally, self.policy.name), pending)

    def _settle(self, now: float) -> None:
        """Run rounds at this instant until none asks for another: a victim may restart elsewhere at once,
        and a moved reservation may let in a job it kept out."""
        for _ in range(MAX_ROUNDS_PER_INSTANT):
            if not (self._waiting.has_active or self._tick):
                return
            self._tick = False
            if not self._round(now, self.policy):
                return
        log.warning(
            "t=%s: rounds still preempted after %d rounds; one more without preemption",
            now,
            MAX_ROUNDS_PER_INSTANT,
        )
        self._round(now, replace(self.policy, preemption=False))

    def _job_activity(self, now: float) -> None:
        """Makespan and capacity-time run to the last job event, not to trailing node events."""
        self.tally.last_time = now
        self.tally.capacity_gpu_seconds = self._capacity_seconds

    # -- events --

    def _push(self, t: float, kind: _Kind, payload: object) -> None:
        heapq.heappush(self._heap, (t, int(kind), next(self._seq), payload))

    def _handle(self, now: float, kind: _Kind, payload: object) -> None:
        if kind is _Kind.SUBMIT:
            assert isinstance(payload, Workload)
            self._forecast_at = None
            self._job_activity(now)
            self._emit(Event(t=now, job=payload.id, event="submitted"))
            self._waiting.add(payload)
            self._submitted += 1
            if self._on_progress is not None:
                self._on_progress(self._submitted, len(self.tally.jobs))
        elif kind is _Kind.FINISH:
            job, attempt = payload  # type: ignore[misc]
            running = self._running.get(job)
            if running is None or running.attempt != attempt:
                return  # preempted since this finish was scheduled
            workload = self._stop(now, job).workload
            self.runtimes.observe(workload, workload.duration)
            self._job_activity(now)
            record = self.tally.jobs[job]
            record.outcome, record.end = "finished", now
            self._emit(Event(t=now, job=job, event="finished"))
        elif kind is _Kind.PROVISIONED:
            name, job = payload  # type: ignore[misc]
            self._node_ready(now, name, job)
        elif kind is _Kind.TICK:
            self._tick = True
        elif kind is _Kind.WAKE:
            self._waiting.wake()
            self._tick = True
            self._woken = True
        else:
            self._cluster_event(now, kind, str(payload))

    def _cluster_event(self, now: float, kind: _Kind, name: str) -> None:
        snapshot = self.snapshot
        if kind is _Kind.NODE_ADDED:
            if name in snapshot.nodes or name in self._reserved_names:
                raise CorralError(
                    f"t={now}: node_added for {name}, which already exists or is being provisioned"
                )
            node = self._build_named_node(name)
            node.idle_since = now
            snapshot.add_node(node)
            self._waiting.wake()
            self._emit(Event(t=now, event="node_added", node=name))
        else:
            if name not in snapshot.nodes:
                raise CorralError(f"t={now}: {kind.name.lower()} for unknown node {name}")
            if kind in (_Kind.NODE_DOWN, _Kind.NODE_REMOVED):
                event = "node_down" if kind is _Kind.NODE_DOWN else "node_removed"
                self._emit(Event(t=now, event=event, node=name))
                for job in snapshot.jobs_on_node(name):
                    self._preempt(now, job, f"node {name} {'down' if kind is _Kind.NODE_DOWN else 'removed'}")
                snapshot.set_node_up(name, False)
                if kind is _Kind.NODE_REMOVED:
                    snapshot.remove_node(name)
            else:
                snapshot.set_node_up(name, True)
                self._waiting.wake()
                self._emit(Event(t=now, event="node_up", node=name))
        self._gpu_capacity = self._count_gpus()

    def _node_ready(self, now: float, name: str, job: str) -> None:
        """A node provisioned for ``job`` joins its pool."""
        node = self._build_named_node(name)
        node.idle_since = now
        self._reserved_names.discard(name)
        self.snapshot.provisioning[node.pool] -= 1
        self.snapshot.add_node(node)
        self._emit(Event(t=now, event="node_added", node=name, reason=f"provisioned for {job}"))
        self._provision_left[job] -= 1
        if not self._provision_left[job]:
            del self._provision_left[job]
            self.snapshot.awaiting_nodes.pop(job, None)
        self._waiting.wake()
        self._gpu_capacity = self._count_gpus()
        self._push(now + self.policy.scale_down_idle_seconds, _Kind.TICK, None)

    def _scale_up(self, now: float, pool_name: str, nodes: int, job: str) -> None:
        pool = self.snapshot.pools[pool_name]
        index = 0
        for _ in range(nodes):
            while (
                f"{pool_name}-{index}" in self.snapshot.nodes
                or f"{pool_name}-{index}" in self._reserved_names
            ):
                index += 1
            name = f"{pool_name}-{index}"
            self._reserved_names.add(name)
            self.snapshot.provisioning[pool_name] += 1
            self._push(now + pool.provision_seconds, _Kind.PROVISIONED, (name, job))
        self._provision_left[job] = self._provision_left.get(job, 0) + nodes
        self.snapshot.awaiting_nodes[job] = pool_name

    def _build_named_node(self, name: str) -> Node:
        pool, index = self._parse_node_name(name)
        return build_node(self.snapshot.pool_cluster[pool.name], pool, index)

    def _parse_node_name(self, name: str) -> tuple[PoolSpec, int]:
        """The pool and index of ``{pool}-{i}``; the name must be exactly what ``build_node`` would make."""
        match = re.fullmatch(r"(.+)-(0|[1-9]\d*)", name)
        pool = self.snapshot.pools.get(match.group(1)) if match else None
        if match is None or pool is None:
            raise CorralError(
                f"node {name!r}: node names are {{pool}}-{{i}} (i without leading zeros) of a known pool"
            )
        return pool, int(match.group(2))

    # -- scheduling --

    def _prepare(self, now: float) -> None:
        """What the snapshot needs from the caller besides state: public spend, and the forecast when
        the policy uses one (made again after arrivals and requeues, else at most every
        ``FORECAST_REFRESH_SECONDS``)."""
        if self._ledger:
            self.snapshot.public_spend = self._ledger.spent(now)
        if not self._forecasts:
            return
        if self._forecast_at is not None and now - self._forecast_at < FORECAST_REFRESH_SECONDS:
            return
        waiting = self._waiting.jobs()
        if not self._record_forecasts and not any(not job.must_stay_private for job in waiting):
            self.snapshot.forecast = None
            return
        started = time.perf_counter()
        forecast = forecast_private_starts(
            self.snapshot, waiting, self.policy, now, self.runtimes, self._saved, replay=replay_first_starts
        )
        self.tally.forecast_seconds += time.perf_counter() - started
        self.tally.forecasts += 1
        self.snapshot.forecast = forecast
        self._forecast_at = now
        if self._record_forecasts:
            for job, start in forecast.private_start.items():
                self.predicted_starts.setdefault(job, start)

    def _round(self, now: float, policy: Policy) -> bool:
        """One scheduling round and its decisions applied; True when another round must follow at this
        instant: it preempted (victims wait again), or reservations moved or ended, so jobs they kept
        out may fit now."""
        self._prepare(now)
        started = time.perf_counter()
        result = schedule(self.snapshot, self._waiting.for_round(), policy, now, self._saved)
        self.snapshot.reserved = tuple(r.job for r in result.reservations)
        self.tally.scheduler_seconds += time.perf_counter() - started
        self.tally.rounds += 1
        if (
            result.wake_at is not None
            and result.wake_at > now
            and result.wake_at not in self._wakes
            and self._fruitless_wakes < MAX_FRUITLESS_WAKES
        ):
            self._wakes.add(result.wake_at)  # a burst threshold passes then: decide again
            self._push(result.wake_at, _Kind.WAKE, None)
        for preempt in result.preemptions:
            self._preempt(now, preempt.job, preempt.reason)
        for start in result.starts:
            workload = self._waiting.remove(start.job)
            allocation = Allocation(
                workload=workload,
                cluster=start.cluster,
                flavor=start.flavor,
                placements=start.placements,
                started_at=now,
                progress_at_start=self._saved.get(start.job, 0.0),
            )
            self.snapshot.allocate(allocation)
            usd_per_second = 0.0
            for placement in start.placements:
                node = self.snapshot.nodes[placement.node]
                node.idle_since = None
                if not node.private:
                    usd_per_second += node.gpu_hour_cost * placement.gpu_milli * len(placement.gpus) / 3.6e6
            self._ledger.open(start.job, workload.queue, usd_per_second, now)
            attempt = self._attempts.get(start.job, 0) + 1
            self._attempts[start.job] = attempt
            self._running[start.job] = _Running(allocation, attempt)
            record = self.tally.jobs[start.job]
            if record.first_start is None:
                record.first_start = now
            self._push(
                now + workload.duration - allocation.progress_at_start, _Kind.FINISH, (start.job, attempt)
            )
            self._emit(
                Event(
                    t=now,
                    job=start.job,
                    event="started",
                    cluster=start.cluster,
                    placements=[PodPlacement(**p.fields()) for p in start.placements],
                )
            )
        for reservation in result.reservations:
            self._emit_reservation(now, reservation)
        for rejection in result.rejections:
            self._waiting.remove(rejection.job)
            self.tally.reject(rejection.job, now, str(rejection.reason), rejection.message)
            self._emit(Event(t=now, job=rejection.job, event="rejected", reason=rejection.message))
        for scale_up in result.scale_ups:
            self._scale_up(now, scale_up.pool, scale_up.nodes, scale_up.job)
        for scale_down in result.scale_downs:
            self._emit(
                Event(
                    t=now, event="node_removed", node=scale_down.node, reason="idle elastic node given back"
                )
            )
            self.snapshot.remove_node(scale_down.node)
        if result.scale_downs:
            self._gpu_capacity = self._count_gpus()
        self._last_pending.update(result.pending)
        self._idled_by_limits = self._held_by_limits(result.held_by_limits)
        behind = {job for job, waiting in result.pending.items() if _held_by_a_reservation(waiting)}
        self._waiting.park(set(result.pending) - set(self.snapshot.reserved), behind)
        reservations = {r.job: (r.until, r.placements) for r in result.reservations}
        moved = reservations != self._reservations and self._waiting.wake_behind_reservations()
        self._reservations = reservations
        if result.starts or result.preemptions or result.rejections:
            self._job_activity(now)
            self._fruitless_wakes = 0
        elif self._woken:
            self._fruitless_wakes += 1
        self._woken = False
        self.snapshot.commit()
        return bool(result.preemptions) or moved

    def _held_by_limits(self, held: dict[str, set[Domain]]) -> dict[str, float]:
        """GPUs per queue that stay idle until the next round only because borrowing limits refused
        jobs that would fit in them: each such job counts once, in the first of its domains where its
        whole demand is idle."""
        idle: dict[Domain, int] = {}
        idled: dict[str, float] = defaultdict(float)
        for job_id, domains in sorted(held.items()):
            workload = self.tally.jobs[job_id].workload
            for domain in sorted(domains):
                if domain not in idle:
                    nodes = self.snapshot.domains.get(domain, ())
                    idle[domain] = sum(gpu.free_milli for node in nodes if node.up for gpu in node.gpus)
                if idle[domain] >= workload.gpu_demand_milli:
                    idle[domain] -= workload.gpu_demand_milli
                    idled[workload.queue] += workload.gpu_demand_milli / MILLI_PER_GPU
                    break
        return idled

    def _emit_reservation(self, now: float, reservation: Reservation) -> None:
        """Write a backfill reservation to the log when it is new or has moved, so a checker can tell
        capacity held for a job from capacity left idle (``corral check --work-conserving``)."""
        if self._reservations_logged.get(reservation.job) == (reservation.until, reservation.placements):
            return
        self._reservations_logged[reservation.job] = (reservation.until, reservation.placements)
        self._emit(
            Event(
                t=now,
                job=reservation.job,
                event=RESERVED_EVENT,
                until=reservation.until,
                placements=[PodPlacement(**p.fields()) for p in reservation.placements],
            )
        )

    def _preempt(self, now: float, job: str, reason: str) -> None:
        allocation = self._stop(now, job)
        progress = allocation.progress(now)
        self._saved[job] = checkpointed_progress(allocation.workload, progress)
        gpus = sum(p.gpu_milli * len(p.gpus) for p in allocation.placements) / MILLI_PER_GPU
        self.tally.lost_gpu_seconds += (progress - self._saved[job]) * gpus
        if allocation.started_at == now:
            self.tally.zero_length_runs += 1
        self._waiting.add(allocation.workload)
        self._forecast_at = None
        self.tally.preemptions += 1
        self.tally.preemptions_per_queue[allocation.workload.queue] += 1
        self._emit(Event(t=now, job=job, event="preempted", reason=reason))

    def _stop(self, now: float, job: str) -> Allocation:
        """Release a running job's resources and account for what it used."""
        self._running.pop(job)
        self._ledger.close(job, now)
        allocation = self.snapshot.release(job)
        self.snapshot.commit()
        self._waiting.wake()
        seconds = now - allocation.started_at
        for placement in allocation.placements:
            node = self.snapshot.nodes[placement.node]
            self.tally.add_usage(
                allocation.workload.queue,
                placement.gpu_milli * len(placement.gpus),
                seconds,
                node.gpu_hour_cost,
            )
            if node.empty and node.idle_since is None:
                node.idle_since = now
                if self.snapshot.pools[node.pool].elastic:
                    self._push(now + self.policy.scale_down_idle_seconds, _Kind.TICK, None)
        return allocation

    def _emit(self, event: Event) -> None:
        self._sink(event)

    def _count_gpus(self) -> float:
        return sum(self.snapshot.capacity()[0].values()) / MILLI_PER_GPU


def _held_by_a_reservation(waiting: Pending) -> bool:
    """Whether a reservation kept the job out of some domain: then the reservation moving may let it in
    there, even when another domain had no room at all (so its reason is ``no_fit``, not ``reserved``).
    Held out (federation, spread): a job kept out of the lab by a reservation, with no room in the cloud,
    stayed parked when the reservation moved 1.4 h later, beside lab GPUs it fitted before that."""
    return waiting.reason is PendingReason.RESERVED or any(
        isinstance(cause, BehindReservation) for _, cause in waiting.causes
    )


def replay_first_starts(
    cluster_file: ClusterFile, workloads: Sequence[Workload], policy: Policy, start: ReplayStart
) -> dict[str, float]:
    """The forecast's replay (``corral.forecasting.replay.Replay``): this simulator from the live state;
    when each job that started first started."""
    replay = Simulator(cluster_file, workloads, policy, start=start)
    replay.run()
    return {
        job: record.first_start for job, record in replay.tally.jobs.items() if record.first_start is not None
    }
