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
from dataclasses import dataclass, replace
from operator import attrgetter

from sqlalchemy import Engine, bindparam, select, update
from sqlalchemy.orm import Session

from corral.control.active import ActiveJob, ActiveJobs, WaitingNote
from corral.control.fleet import fleet
from corral.control.forecasting import Forecasting
from corral.control.notes import changed_notes
from corral.core.budgets import period_bounds
from corral.core.cluster import ClusterSpec
from corral.core.queues import QueueSpec
from corral.core.workloads import checkpointed_progress
from corral.scheduling import Allocation, Policy, SchedulingResult, Snapshot, schedule
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
    heard_since: float = float("-inf")
    """Silence counts from no earlier than this (Unix seconds; the server sets its start): while no
    server ran, no agent could reach one, so a restarted server gives every node it heard before one
    heartbeat timeout to check in before it requeues that node's work (which the agent still runs, or
    finished). A node never heard from is down from the start, as before."""

    @property
    def nodes_may_join(self) -> bool:
        """The nodes are what registers, so the fleet can still grow: no cluster file (agents' machines
        are the nodes) or a Ray or Kubernetes cluster (its nodes are discovered). A cluster file that declares
        every node is the whole fleet: what none of them can hold is refused."""
        discovered = ("ray", "kubernetes")
        return not self.clusters or any(cluster.backend.kind in discovered for cluster in self.clusters)


class RoundConflict(Exception):
    """Another writer changed a job between the round's read and its write (a cancel, an exit): the
    round is rolled back and the next one decides again from what the store then says."""


def reconcile(
    engine: Engine,
    inventory: Inventory,
    policy: Policy,
    now: float,
    jobs: ActiveJobs | None = None,
    forecasting: Forecasting | None = None,
) -> SchedulingResult:
    """Decide and record one round; the decisions are committed when this returns.

    ``jobs`` carries the pending and running jobs from one round to the next, each round reading only
    the rows the event log says changed (without it, the round reads them all, as a first round does).
    ``forecasting`` keeps run-time history and the last forecast between rounds; without it the round
    makes no forecast (no early bursts, no forecast in ``corral why``).
    """
    jobs = ActiveJobs() if jobs is None else jobs
    try:
        # The session ends with the round, so its rows need not be expired (reloaded) on commit.
        with Session(engine, expire_on_commit=False) as session, session.begin():
            jobs.refresh(session, now)
            result, notes = _round(session, inventory, policy, now, jobs, forecasting)
    except RoundConflict:
        raise  # what conflicted logged an event: the next refresh reads it
    except BaseException:
        jobs.forget()  # whether the round committed is unknown: the next one reads everything
        raise
    jobs.note_waiting(notes)
    return result


def _round(
    session: Session,
    inventory: Inventory,
    policy: Policy,
    now: float,
    kept: ActiveJobs,
    forecasting: Forecasting | None,
) -> tuple[SchedulingResult, dict[str, WaitingNote]]:
    jobs = kept.jobs
    queues = [queue.spec() for queue in read_queues(session)] or None
    registered = read_registrations(session)
    snapshot = Snapshot(
        *fleet(inventory.clusters, registered), queues, nodes_may_join=inventory.nodes_may_join
    )
    down = _down_nodes(session, snapshot, inventory, set(registered), now)
    for name in down:
        snapshot.set_node_up(name, False)
    view = dict(jobs)  # the jobs as this round leaves them: one requeued here may start again in it
    requeued: list[ActiveJob] = []
    for job in kept.running.values():
        if not job.placements:
            continue
        removed = sorted({p.node for p in job.placements} - snapshot.nodes.keys())
        if removed:  # an admin removed the node's registration (DELETE /nodes/{name})
            progress = job.checkpointed_seconds + now - (job.started_at or now)
            requeued.append(_requeue(session, job, progress, now, f"node {', '.join(removed)} was removed"))
            continue
        allocation = _allocation(snapshot, job)
        lost = _lost(snapshot, allocation, down)
        if lost:
            requeued.append(_requeue(session, job, allocation.progress(now), now, lost))
        elif allocation.progress(now) > allocation.workload.duration:
            _stop_overdue(session, job, allocation.workload.duration, now)
            del view[job.id]
        else:
            snapshot.allocate(allocation)
    snapshot.commit()
    view.update((job.id, job) for job in requeued)
    pending = [*map(_WORKLOAD, kept.waiting.values()), *(job.workload for job in requeued)]
    progress = kept.progressed | {
        job.id: job.checkpointed_seconds for job in requeued if job.checkpointed_seconds
    }
    ready = policy.for_workload(job.workload.pod for job in view.values())
    snapshot.public_spend = _public_spend(session, snapshot, queues, now)
    if forecasting is not None:
        snapshot.forecast = forecasting.forecast(session, snapshot, pending, ready, now, progress)
        snapshot.runtime_estimate = forecasting.estimates
    result = schedule(snapshot, pending, ready, now, progress)
    return result, _record(session, result, view, kept, snapshot, now)


_WORKLOAD = attrgetter("workload")


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
        last = heard.get(name)
        # A node heard before this server started had no server to reach since: it gets one timeout;
        # one never heard from, or marked down (0: its engine said so), does not.
        since = float("-inf") if last is None else max(last, inventory.heard_since) if last > 0 else last
        if timeout is not None and now - since > timeout:
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


def _requeue(session: Session, job: ActiveJob, progress: float, now: float, reason: str) -> ActiveJob:
    """The job's node or GPU is gone: it waits again and resumes from its last checkpoint (as a
    preemption); ``progress`` is the seconds of work it had done. Returns the job as it now waits."""
    saved = checkpointed_progress(job.workload, progress)
    _update(session, job, status="pending", reason=reason, checkpointed_seconds=saved, started_at=None)
    release(session, job.id, now)
    session.add(EventRow(t=now, job_id=job.id, kind="node_lost", reason=reason))
    return replace(
        job, status="pending", reason=reason, checkpointed_seconds=saved, started_at=None, placements=()
    )


def _stop_overdue(session: Session, job: ActiveJob, limit: float, now: float) -> None:
    """The job ran past its ``time_limit`` (``limit`` seconds): it fails, and its backend stops its pods."""
    reason = f"ran past its time limit ({limit:g} s); raise time_limit in the spec if it needs longer"
    _update(session, job, status="failed", ended_at=now, reason=reason)
    release(session, job.id, now)
    session.add(EventRow(t=now, job_id=job.id, kind="failed", reason=reason))


def _update(session: Session, job: ActiveJob, **values: object) -> None:
    """Write ``values`` on the job's row if it is still as the round read it (its status and attempt);
    otherwise another writer changed it since, and the round is rolled back (``RoundConflict``)."""
    current = (JobRow.id == job.id, JobRow.status == job.status, JobRow.attempt == job.attempt)
    statement = update(JobRow).where(*current).values(**values).execution_options(synchronize_session=False)
    if session.execute(statement).rowcount != 1:
        raise RoundConflict(f"job {job.id} changed since the round read it (it was {job.status})")


def _allocation(snapshot: Snapshot, job: ActiveJob) -> Allocation:
    node = snapshot.nodes[job.placements[0].node]
    return Allocation(
        workload=job.workload,
        cluster=node.cluster,
        flavor=node.flavor,
        placements=job.placements,
        started_at=job.started_at or 0.0,
        progress_at_start=job.checkpointed_seconds,
    )


_NOTE = (
    update(JobRow.__table__)
    .where(JobRow.id == bindparam("job"), JobRow.status == "pending")
    .values(reason=bindparam("reason"), forecast_start=bindparam("start"), burst_cost_usd=bindparam("cost"))
)
"""Why a job waits and its forecast, written only while it still waits (a cancel may have come since)."""


_START = (
    update(JobRow.__table__)
    .where(
        JobRow.id == bindparam("job"), JobRow.status == bindparam("was"), JobRow.attempt == bindparam("of")
    )
    .values(
        status="running",
        started_at=bindparam("now"),
        reason=None,
        attempt=bindparam("attempt"),
        forecast_start=None,
        burst_cost_usd=None,
    )
)
"""A start, written only if the job is still as the round read it (its status and attempt, as ``_update``)."""


def _mark_started(session: Session, started: Sequence[ActiveJob], now: float) -> None:
    """The round's starts as one statement, before any of their rows is added: one row each would
    flush the rows the starts before it added (the ORM flushes before every statement), which was most
    of recording a round of 8 starts. ``RoundConflict`` if any job changed since the round read it."""
    if not started:
        return
    rows = [
        {"job": job.id, "was": job.status, "of": job.attempt, "attempt": job.attempt + 1, "now": now}
        for job in started
    ]
    if session.execute(_START, rows).rowcount != len(rows):
        ids = ", ".join(job.id for job in started)
        raise RoundConflict(f"one of the jobs {ids} changed since the round read it")


def _record(
    session: Session,
    result: SchedulingResult,
    jobs: dict[str, ActiveJob],
    kept: ActiveJobs,
    snapshot: Snapshot,
    now: float,
) -> dict[str, WaitingNote]:
    """Write the round's decisions (``jobs``: the round's view of them); returns what it wrote on
    waiting jobs (for ``kept``, the loop's copy, which holds what was written before)."""
    for preempt in result.preemptions:
        job = jobs[preempt.job]
        saved = checkpointed_progress(job.workload, snapshot.running[preempt.job].progress(now))
        _update(session, job, status="pending", reason=preempt.reason, checkpointed_seconds=saved)
        release(session, preempt.job, now)
        session.add(EventRow(t=now, job_id=preempt.job, kind="preempted", reason=preempt.reason))
    _mark_started(session, [jobs[start.job] for start in result.starts], now)
    for start in result.starts:
        job = jobs[start.job]
        attempt = job.attempt + 1
        for p in start.placements:
            session.add(PlacementRow(job_id=start.job, **p.fields()))
        where = {
            p.node: (node.cluster, node.pool, node.gpu_hour_cost)
            for p in start.placements
            for node in [snapshot.nodes[p.node]]
        }
        open_charges(session, (start.job, attempt, job.tenant, job.queue), start.placements, where, now)
        session.add(EventRow(t=now, job_id=start.job, kind="started"))
    for rejection in result.rejections:
        _update(session, jobs[rejection.job], status="failed", ended_at=now, reason=rejection.message)
        session.add(EventRow(t=now, job_id=rejection.job, kind="rejected", reason=rejection.message))
    notes = changed_notes(result.pending, jobs, kept, snapshot)
    if notes:
        rows = [
            {"job": j, "reason": n.reason, "start": n.forecast_start, "cost": n.burst_cost_usd}
            for j, n in notes.items()
        ]
        session.execute(_NOTE, rows)
    return notes
