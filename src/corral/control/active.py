"""The pending and running jobs the reconcile loop keeps between rounds, brought up to date from the event log.

Every change to a job's row is written together with an event (submitted, started, preempted, retried,
node_lost, finished, failed, rejected, cancelled) in one transaction, so the events newer than the last
one a round read name every job whose row changed since: a round re-reads those rows only, and its cost
follows what changed, not how long the queue is. The fields a round writes without an event (why a job
waits, its forecast) are the round's own and are applied to the copy once the round commits.

Event ids come from an autoincrement column. SQLite serialises writers, so ids commit in order; on
PostgreSQL a transaction may commit an id lower than one already read, so the ids missing below the newest
one read are looked at again until they appear or ``GAP_SECONDS`` pass (a rolled back transaction never
fills its id). What that could still miss, the full read finds: on the first round, and every
``FULL_READ_SECONDS`` as a consistency check that logs any difference loudly and trusts the full read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Row, func, or_, select
from sqlalchemy.orm import Session

from corral.core.workloads import Workload
from corral.scheduling.decisions import Placement
from corral.spec.job import JobSpec
from corral.store.schema import EventRow, JobRow, PlacementRow

log = logging.getLogger(__name__)

ACTIVE = ("pending", "running")

FULL_READ_SECONDS = 60.0
"""How often a round reads every pending and running row again and compares it with the kept copy."""

GAP_SECONDS = 10.0
"""How long an event id missing below the newest one read is looked for (an uncommitted transaction's)."""

GAP_WINDOW = 256
"""On a full read, the ids this far below the newest that are missing count as gaps: the transactions
still open then (a few per API worker) hold ids just below it."""

BATCH = 5000
"""Job ids per ``IN`` query (a bound parameter each; SQLite allows 32,766)."""


@dataclass(frozen=True)
class ActiveJob:
    """What a round needs of one pending or running job: its row's scheduling fields, its workload
    (parsed from its spec once) and, while it runs, where its pods are."""

    id: str
    tenant: str
    queue: str
    status: str
    submitted_at: float
    started_at: float | None
    attempt: int
    checkpointed_seconds: float
    reason: str | None
    forecast_start: float | None
    burst_cost_usd: float | None
    workload: Workload
    placements: tuple[Placement, ...] = ()


@dataclass(frozen=True)
class WaitingNote:
    """What a round wrote on a waiting job without an event: why it waits, and its forecast."""

    reason: str | None
    forecast_start: float | None
    burst_cost_usd: float | None


class ActiveJobs:
    """The pending and running jobs by id, and how far into the event log they are known."""

    def __init__(self, full_read_seconds: float = FULL_READ_SECONDS) -> None:
        self.jobs: dict[str, ActiveJob] = {}
        self.waiting: dict[str, ActiveJob] = {}
        self.running: dict[str, ActiveJob] = {}
        """``jobs`` by status, kept with it: a round starts from these, not from a pass over every job."""
        self.progressed: dict[str, float] = {}
        """The waiting jobs with checkpointed progress (requeued ones), and its seconds."""
        self.reasons: dict[str, str | None] = {}
        """Each waiting job's ``reason``: a round compares its explanations with these in C
        (``corral.control.notes``), where reading each job's field was a Python pass."""
        self.forecasted: set[str] = set()
        """The waiting jobs with a forecast start or a burst cost written (a forecast covers a few hundred)."""
        self.full_read_seconds = full_read_seconds
        self._cursor: int | None = None
        """The newest event id read; None: nothing read yet, the next refresh reads everything."""
        self._gaps: dict[int, float] = {}
        """Event ids below the cursor not seen yet -> when they were first missed."""
        self._full_read_at = float("-inf")

    def refresh(self, session: Session, now: float) -> None:
        """Bring the jobs up to what the store holds, in the caller's transaction (a round's)."""
        if self._cursor is None:
            self._cursor, self._gaps, jobs = read_all(session, {}, now)
            self._keep_all(jobs)
            self._full_read_at = now
            return
        self._catch_up(session, now)
        if now - self._full_read_at >= self.full_read_seconds:
            self._check(session, now)

    def forget(self) -> None:
        """Read everything again at the next refresh (after a round whose outcome is unknown)."""
        self._cursor = None

    def note_waiting(self, notes: dict[str, WaitingNote]) -> None:
        """A committed round wrote these on waiting jobs (no event says so): keep the copy equal."""
        for job_id, note in notes.items():
            job = self.jobs.get(job_id)
            if job is not None and job.status == "pending":
                self._keep(
                    replace(
                        job,
                        reason=note.reason,
                        forecast_start=note.forecast_start,
                        burst_cost_usd=note.burst_cost_usd,
                    )
                )

    def _keep(self, job: ActiveJob) -> None:
        """Keep ``job`` (a job already kept keeps its place in the orders: rounds see them in it)."""
        old = self.jobs.get(job.id)
        if old is not None and old.status != job.status:
            self._unindex(job.id)
        self.jobs[job.id] = job
        self._index(job)

    def _drop(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)
        self._unindex(job_id)

    def _keep_all(self, jobs: dict[str, ActiveJob]) -> None:
        self.jobs = jobs
        self.waiting, self.running, self.progressed, self.reasons = {}, {}, {}, {}
        self.forecasted = set()
        for job in jobs.values():
            self._index(job)

    def _index(self, job: ActiveJob) -> None:
        if job.status == "running":
            self.running[job.id] = job
            return
        self.waiting[job.id] = job
        self.reasons[job.id] = job.reason
        if job.checkpointed_seconds:
            self.progressed[job.id] = job.checkpointed_seconds
        else:
            self.progressed.pop(job.id, None)
        if job.forecast_start is not None or job.burst_cost_usd is not None:
            self.forecasted.add(job.id)
        else:
            self.forecasted.discard(job.id)

    def _unindex(self, job_id: str) -> None:
        self.waiting.pop(job_id, None)
        self.running.pop(job_id, None)
        self.progressed.pop(job_id, None)
        self.reasons.pop(job_id, None)
        self.forecasted.discard(job_id)

    def _catch_up(self, session: Session, now: float) -> None:
        assert self._cursor is not None
        since = EventRow.id > self._cursor
        where = or_(since, EventRow.id.in_(list(self._gaps))) if self._gaps else since
        events = session.execute(select(EventRow.id, EventRow.job_id).where(where)).all()
        seen = {event_id for event_id, _ in events}
        for event_id in seen & self._gaps.keys():
            del self._gaps[event_id]
        newest = max(seen, default=self._cursor)
        for missing in set(range(self._cursor + 1, newest)) - seen:
            self._gaps[missing] = now
        self._gaps = {gap: first for gap, first in self._gaps.items() if now - first < GAP_SECONDS}
        self._cursor = max(self._cursor, newest)
        touched = {job_id for _, job_id in events if job_id is not None}
        fresh = read_jobs(session, touched, self.jobs)
        for job_id in touched:
            if job_id in fresh:
                self._keep(fresh[job_id])
            else:
                self._drop(job_id)

    def _check(self, session: Session, now: float) -> None:
        """The consistency check: a full read must equal the kept copy, but for jobs whose events came in
        between the two reads (PostgreSQL reads each statement's newest commit)."""
        assert self._cursor is not None
        cursor, gaps, full = read_all(session, self.jobs, now)
        changed = session.scalars(
            select(EventRow.job_id).where(EventRow.id > self._cursor, EventRow.id <= cursor)
        )
        racing = set(changed)
        differ = sorted(
            job_id
            for job_id in (self.jobs.keys() | full.keys()) - racing
            if self.jobs.get(job_id) != full.get(job_id)
        )
        if differ:
            log.error(
                "the reconcile loop's copy of %d pending/running jobs differs from the store for %d "
                "(e.g. %s); using the store's",
                len(full),
                len(differ),
                ", ".join(differ[:5]),
            )
        self._cursor, self._gaps = cursor, gaps
        self._keep_all(full)
        self._full_read_at = now


def read_all(
    session: Session, known: dict[str, ActiveJob], now: float
) -> tuple[int, dict[int, float], dict[str, ActiveJob]]:
    """Every pending and running job, the newest event id (read first: whatever commits after it is
    re-read next time), and the ids missing just below it. ``known`` lends workloads already parsed."""
    newest = session.scalar(select(func.max(EventRow.id))) or 0
    recent = set(session.scalars(select(EventRow.id).where(EventRow.id > newest - GAP_WINDOW)))
    gaps = {
        missing: now for missing in range(max(1, newest - GAP_WINDOW + 1), newest) if missing not in recent
    }
    rows = list(session.execute(select(*_COLUMNS).where(JobRow.status.in_(ACTIVE))))
    return newest, gaps, _jobs(session, rows, known)


def read_jobs(session: Session, job_ids: Iterable[str], known: dict[str, ActiveJob]) -> dict[str, ActiveJob]:
    """Those of ``job_ids`` that are pending or running, as the store has them now."""
    rows: list[Row[Any]] = []
    for batch in _batches(list(job_ids)):
        # By id alone, the status checked here: with the status in the query, SQLite's planner chose the
        # status index for a few ids and scanned every pending row (5 ms a round with 10,000 waiting).
        selected = session.execute(select(*_COLUMNS).where(JobRow.id.in_(batch)))
        rows += [row for row in selected if row.status in ACTIVE]
    return _jobs(session, rows, known)


_COLUMNS = (
    JobRow.id,
    JobRow.tenant,
    JobRow.queue,
    JobRow.status,
    JobRow.submitted_at,
    JobRow.started_at,
    JobRow.attempt,
    JobRow.checkpointed_seconds,
    JobRow.reason,
    JobRow.forecast_start,
    JobRow.burst_cost_usd,
)
"""A job's columns but its spec: a spec is read (and its JSON decoded) only for a job not seen before."""


def _jobs(session: Session, rows: Sequence[Row[Any]], known: dict[str, ActiveJob]) -> dict[str, ActiveJob]:
    fields = {row.id: row for row in rows}
    specs: dict[str, dict[str, Any]] = {}
    for batch in _batches([job_id for job_id in fields if job_id not in known]):
        specs.update(session.execute(select(JobRow.id, JobRow.spec).where(JobRow.id.in_(batch))).all())
    pods: dict[str, list[Placement]] = {}
    for batch in _batches([job_id for job_id, row in fields.items() if row.status == "running"]):
        for p in session.scalars(select(PlacementRow).where(PlacementRow.job_id.in_(batch))):
            placement = Placement(
                p.pod, p.node, tuple(p.gpus), p.gpu_milli, p.gpu_memory_gib, p.cpu, p.memory_gib
            )
            pods.setdefault(p.job_id, []).append(placement)
    return {
        job_id: ActiveJob(
            id=job_id,
            tenant=row.tenant,
            queue=row.queue,
            status=row.status,
            submitted_at=row.submitted_at,
            started_at=row.started_at,
            attempt=row.attempt,
            checkpointed_seconds=row.checkpointed_seconds,
            reason=row.reason,
            forecast_start=row.forecast_start,
            burst_cost_usd=row.burst_cost_usd,
            workload=known[job_id].workload
            if job_id in known
            else _workload(job_id, specs[job_id], row.submitted_at),
            placements=tuple(sorted(pods.get(job_id, ()), key=lambda p: p.pod)),
        )
        for job_id, row in fields.items()
    }


def _batches(ids: list[str]) -> Iterator[list[str]]:
    for first in range(0, len(ids), BATCH):
        yield ids[first : first + BATCH]


def _workload(job_id: str, spec: dict[str, Any], submitted_at: float) -> Workload:
    return JobSpec.model_validate(spec).to_workload(job_id, submit=submitted_at)
