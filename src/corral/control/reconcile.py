"""One reconcile round: store -> snapshot -> scheduler -> decisions -> store, in one transaction.

The store holds the desired state. A round reads the pending jobs and what runs where, asks the same
``schedule`` the simulator uses, and writes every decision (starts with their placements, preemptions with
the progress they keep, rejections, why the rest wait) in a single transaction, then returns them so the
caller can tell the backends. A crash before the commit loses nothing (the next round decides again from
the same state); a crash after it leaves running jobs that backends adopt or start, never start twice,
because the store, not the backend, says what should run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, defer

from corral.control.fleet import fleet
from corral.control.forecasting import Forecasting
from corral.core.budgets import period_bounds
from corral.core.cluster import ClusterSpec
from corral.core.queues import QueueSpec
from corral.core.workloads import Workload, checkpointed_progress
from corral.scheduling import Allocation, Policy, SchedulingResult, Snapshot, schedule
from corral.scheduling.bursting import burst_cost
from corral.scheduling.decisions import Placement
from corral.spec.job import JobSpec
from corral.store.costs import open_charges, public_spend, release
from corral.store.nodes import read_registrations
from corral.store.queues import read_queues
from corral.store.schema import EventRow, JobRow, NodeRow, PlacementRow

REGISTERED_TIMEOUT = 5.0
"""Seconds of silence after which a registered node is down, when the inventory sets no timeout."""


@dataclass(frozen=True)
class Inventory:
    """The clusters and pools the round schedules onto (from config today, agents later)."""

    clusters: Sequence[ClusterSpec]
    queues: Sequence[QueueSpec] | None = None
    """The queues a new store starts with; after that, queues live in the store (``corral queues``)."""
    heartbeat_timeout: float | None = None
    """With agents: a node not heard from for this long is down, and its work is requeued. None: every
    node is taken as up (the local backend runs everything on this machine)."""

    @property
    def nodes_may_join(self) -> bool:
        """The nodes are what registers, so the fleet can still grow: no cluster file (agents' machines
        are the nodes) or a Ray or Kubernetes cluster (its nodes are discovered). A cluster file that declares
        every node is the whole fleet: what none of them can hold is refused."""
        discovered = ("ray", "kubernetes")
        return not self.clusters or any(cluster.backend.kind in discovered for cluster in self.clusters)


def reconcile(
    engine: Engine,
    inventory: Inventory,
    policy: Policy,
    now: float,
    parsed: dict[str, Workload] | None = None,
    forecasting: Forecasting | None = None,
) -> SchedulingResult:
    """Decide and record one round; the decisions are committed when this returns.

    ``parsed`` carries the jobs' workloads from one round to the next (a job's spec and submit time never
    change): without it every round validates the spec of every pending and running job again, which
    made a round's cost grow with the number of running jobs. It is left holding this round's jobs only.
    ``forecasting`` keeps run-time history and the last forecast between rounds; without it the round
    makes no forecast (no early bursts, no forecast in ``corral why``).
    """
    parsed = {} if parsed is None else parsed
    # The session ends with the round, so its rows need not be expired (reloaded) on commit.
    with Session(engine, expire_on_commit=False) as session, session.begin():
        # Specs are read (and their JSON decoded) only for jobs the last round did not see.
        active = select(JobRow).where(JobRow.status.in_(("pending", "running"))).options(defer(JobRow.spec))
        jobs = {row.id: row for row in session.scalars(active)}
        specs = _specs(session, [job_id for job_id in jobs if job_id not in parsed])
        workloads = {
            job_id: parsed[job_id] if job_id in parsed else _workload(row, specs[job_id])
            for job_id, row in jobs.items()
        }
        parsed.clear()
        parsed.update(workloads)
        queues = [queue.spec() for queue in read_queues(session)] or None
        registered = read_registrations(session)
        snapshot = Snapshot(
            *fleet(inventory.clusters, registered), queues, nodes_may_join=inventory.nodes_may_join
        )
        placements: dict[str, list[PlacementRow]] = {}
        for row in session.scalars(select(PlacementRow).where(PlacementRow.job_id.in_(list(jobs)))):
            placements.setdefault(row.job_id, []).append(row)
        down = _down_nodes(session, snapshot, inventory, set(registered), now)
        for name in down:
            snapshot.set_node_up(name, False)
        for job_id, rows in placements.items():
            if jobs[job_id].status != "running":
                continue
            removed = sorted({row.node for row in rows} - snapshot.nodes.keys())
            if removed:  # an admin removed the node's registration (DELETE /nodes/{name})
                progress = jobs[job_id].checkpointed_seconds + now - (jobs[job_id].started_at or now)
                reason = f"node {', '.join(removed)} was removed"
                _requeue(session, jobs[job_id], workloads[job_id], progress, now, reason)
                continue
            allocation = _allocation(snapshot, jobs[job_id], workloads[job_id], rows)
            lost = _lost(snapshot, allocation, down)
            if lost:
                _requeue(session, jobs[job_id], allocation.workload, allocation.progress(now), now, lost)
            elif allocation.progress(now) > allocation.workload.duration:
                _stop_overdue(session, jobs[job_id], allocation.workload.duration, now)
            else:
                snapshot.allocate(allocation)
        snapshot.commit()
        session.flush()
        pending = [workloads[j] for j, row in jobs.items() if row.status == "pending"]
        progress = {j: row.checkpointed_seconds for j, row in jobs.items() if row.status == "pending"}
        ready = policy.for_workload(w.pod for w in workloads.values())
        snapshot.public_spend = _public_spend(session, snapshot, queues, now)
        if forecasting is not None:
            snapshot.forecast = forecasting.forecast(session, snapshot, pending, ready, now, progress)
            snapshot.runtime_estimate = forecasting.estimates
        result = schedule(snapshot, pending, ready, now, progress)
        _record(session, result, jobs, workloads, snapshot, now)
    return result


def _public_spend(
    session: Session, snapshot: Snapshot, queues: Sequence[QueueSpec] | None, now: float
) -> dict[str, float]:
    """What each budgeted queue spent on public clusters in its current budget period."""
    periods = {q.name: period_bounds(now, q.budget.period)[0] for q in queues or () if q.budget is not None}
    public = {name for name, cluster in snapshot.clusters.items() if not cluster.private}
    return public_spend(session, periods, public, now)


def _down_nodes(
    session: Session, snapshot: Snapshot, inventory: Inventory, registered: set[str], now: float
) -> set[str]:
    """Nodes not heard from within the heartbeat timeout. A registered node (an agent's, a Ray node)
    always has one, ``REGISTERED_TIMEOUT`` unless the inventory sets its own; the cluster file's nodes
    only when the inventory sets it (the local backend needs no heartbeats)."""
    heard = {name: heard for name, heard in session.execute(select(NodeRow.name, NodeRow.last_heartbeat))}
    down = set()
    for name in snapshot.nodes:
        timeout = heartbeat_timeout(inventory, registered=name in registered)
        if timeout is not None and now - heard.get(name, float("-inf")) > timeout:
            down.add(name)
    return down


def heartbeat_timeout(inventory: Inventory, *, registered: bool) -> float | None:
    """Seconds of silence after which a node is down (None: never): the inventory's timeout, else
    ``REGISTERED_TIMEOUT`` for a registered node. Agents learn theirs from the server, to stop their
    pods once the server has given them away."""
    if inventory.heartbeat_timeout is None and registered:
        return REGISTERED_TIMEOUT
    return inventory.heartbeat_timeout


def _lost(snapshot: Snapshot, allocation: Allocation, down: set[str]) -> str | None:
    """Why the allocation cannot go on (its node is down, or one of its GPUs failed), or None."""
    silent = sorted({p.node for p in allocation.placements} & down)
    if silent:
        return f"node {', '.join(silent)} stopped answering"
    failed = [
        f"GPU {index} of {p.node}"
        for p in allocation.placements
        for index in p.gpus
        if p.node in snapshot.nodes and not snapshot.nodes[p.node].gpus[index].healthy
    ]
    return f"{', '.join(failed)} failed (drained)" if failed else None


def _requeue(
    session: Session, row: JobRow, workload: Workload, progress: float, now: float, reason: str
) -> None:
    """The job's node or GPU is gone: it waits again and resumes from its last checkpoint (as a
    preemption); ``progress`` is the seconds of work it had done."""
    row.status, row.reason = "pending", reason
    row.checkpointed_seconds = checkpointed_progress(workload, progress)
    row.started_at = None
    release(session, row.id, now)
    session.add(EventRow(t=now, job_id=row.id, kind="node_lost", reason=reason))


def _stop_overdue(session: Session, row: JobRow, limit: float, now: float) -> None:
    """The job ran past its ``time_limit`` (``limit`` seconds): it fails, and its backend stops its pods."""
    row.status, row.ended_at = "failed", now
    row.reason = f"ran past its time limit ({limit:g} s); raise time_limit in the spec if it needs longer"
    release(session, row.id, now)
    session.add(EventRow(t=now, job_id=row.id, kind="failed", reason=row.reason))


SPEC_BATCH = 5000
"""Job ids per query when reading new jobs' specs (a bound parameter each; SQLite allows 32,766)."""


def _specs(session: Session, job_ids: list[str]) -> dict[str, dict[str, object]]:
    specs: dict[str, dict[str, object]] = {}
    for first in range(0, len(job_ids), SPEC_BATCH):
        batch = job_ids[first : first + SPEC_BATCH]
        specs.update(session.execute(select(JobRow.id, JobRow.spec).where(JobRow.id.in_(batch))).all())
    return specs


def _workload(row: JobRow, spec: dict[str, object]) -> Workload:
    return JobSpec.model_validate(spec).to_workload(row.id, submit=row.submitted_at)


def _allocation(snapshot: Snapshot, row: JobRow, workload: Workload, rows: list[PlacementRow]) -> Allocation:
    node = snapshot.nodes[rows[0].node]
    return Allocation(
        workload=workload,
        cluster=node.cluster,
        flavor=node.flavor,
        placements=tuple(
            Placement(p.pod, p.node, tuple(p.gpus), p.gpu_milli, p.gpu_memory_gib, p.cpu, p.memory_gib)
            for p in sorted(rows, key=lambda p: p.pod)
        ),
        started_at=row.started_at or 0.0,
        progress_at_start=row.checkpointed_seconds,
    )


def _record(
    session: Session,
    result: SchedulingResult,
    jobs: dict[str, JobRow],
    workloads: dict[str, Workload],
    snapshot: Snapshot,
    now: float,
) -> None:
    for preempt in result.preemptions:
        row = jobs[preempt.job]
        running = snapshot.running[preempt.job]
        row.status, row.reason = "pending", preempt.reason
        row.checkpointed_seconds = checkpointed_progress(workloads[preempt.job], running.progress(now))
        release(session, preempt.job, now)
        session.add(EventRow(t=now, job_id=preempt.job, kind="preempted", reason=preempt.reason))
    session.flush()
    for start in result.starts:
        row = jobs[start.job]
        row.status, row.started_at, row.reason = "running", now, None
        row.forecast_start = row.burst_cost_usd = None
        row.attempt += 1
        for p in start.placements:
            session.add(PlacementRow(job_id=start.job, **p.fields()))
        where = {
            p.node: (node.cluster, node.pool, node.gpu_hour_cost)
            for p in start.placements
            for node in [snapshot.nodes[p.node]]
        }
        open_charges(session, (start.job, row.attempt, row.tenant, row.queue), start.placements, where, now)
        session.add(EventRow(t=now, job_id=start.job, kind="started"))
    for rejection in result.rejections:
        row = jobs[rejection.job]
        row.status, row.ended_at, row.reason = "failed", now, rejection.message
        session.add(EventRow(t=now, job_id=rejection.job, kind="rejected", reason=rejection.message))
    forecast = snapshot.forecast
    for job_id, waiting in result.pending.items():
        row = jobs[job_id]
        message = waiting.message
        if row.reason != message:
            row.reason = message
        start = forecast.private_start.get(job_id) if forecast is not None else None
        if row.forecast_start != start:
            row.forecast_start = start
        cost = None
        workload = workloads[job_id]
        if start is not None and not workload.must_stay_private:
            cost = burst_cost(workload, forecast, snapshot.cheapest_public_gpu_hour(workload))
        if row.burst_cost_usd != cost:
            row.burst_cost_usd = cost
