"""Jobs in the store: submit (idempotent with a client key), get, list, cancel; each change logs an event.

Every write is one transaction, so a crash leaves either the whole change or none of it: a job the server
acknowledged is in the store, and a retried submission with the same key finds it instead of making a
second one.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.errors import CorralError
from corral.spec.job import JobSpec
from corral.store.costs import release, release_many
from corral.store.schema import EventRow, JobRow, PlacementRow

ENDED = ("finished", "failed", "cancelled")


@dataclass(frozen=True)
class JobEnd:
    """How a running job ended, as its backend saw it: what ``JobStore.finish_many`` records."""

    job_id: str
    succeeded: bool
    reason: str | None = None


class JobNotFound(CorralError):
    """No job with that id."""


class JobAlreadyEnded(CorralError):
    """The job is not in a state that allows the change (already ended, or not running)."""


class StaleAttempt(JobAlreadyEnded):
    """A report about an attempt that is not the job's current run (fencing): the job was requeued,
    preempted or ended since, so whatever still runs that attempt must stop, and its report changes
    nothing."""


class IdempotencyConflict(CorralError):
    """An idempotency key already used for a submission with a different spec."""


def exit_outcome(exit_codes: list[int]) -> tuple[bool, str | None]:
    """Whether a job whose pods exited with these codes (in pod order) succeeded, and if not, why."""
    failed = [(pod, code) for pod, code in enumerate(exit_codes) if code != 0]
    return not failed, ", ".join(f"pod {pod} exited with code {code}" for pod, code in failed) or None


def stored_key(tenant: str, key: str) -> str:
    """The ``submit_key`` column's value for a tenant's idempotency key: ``tenant/key``, or where that
    would not fit the column (a long tenant name and a long key), a digest of it. Both are unique per
    (tenant, key) and cannot collide: tenant names have no ``:``, so a digest never reads as one."""
    plain = f"{tenant}/{key}"
    if len(plain) <= SUBMIT_KEY_COLUMN:
        return plain
    return "sha256:" + hashlib.sha256(plain.encode()).hexdigest()


SUBMIT_KEY_COLUMN = 128
"""``jobs.submit_key``'s length."""


@dataclass(frozen=True)
class JobEvent:
    t: float
    kind: str
    reason: str | None


@dataclass(frozen=True)
class JobRecord:
    id: str
    name: str
    tenant: str
    queue: str
    status: str
    spec: dict[str, Any]
    submitted_at: float
    started_at: float | None
    ended_at: float | None
    reason: str | None
    attempt: int
    forecast_start: float | None = None
    burst_cost_usd: float | None = None
    nodes: tuple[str, ...] = ()
    """The nodes its pods are placed on (while it runs), in pod order; filled by ``get`` and ``list``."""

    @classmethod
    def of(cls, row: JobRow, nodes: tuple[str, ...] = ()) -> JobRecord:
        return cls(
            id=row.id,
            name=row.name,
            tenant=row.tenant,
            queue=row.queue,
            status=row.status,
            spec=row.spec,
            submitted_at=row.submitted_at,
            started_at=row.started_at,
            ended_at=row.ended_at,
            reason=row.reason,
            attempt=row.attempt,
            forecast_start=row.forecast_start,
            burst_cost_usd=row.burst_cost_usd,
            nodes=nodes,
        )


def random_job_id() -> str:
    """A new job's id: random, so ids say nothing about how many jobs others submitted."""
    return f"j-{uuid.uuid4().hex[:12]}"


class JobStore:
    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = random_job_id,
    ) -> None:
        """``clock`` and ``new_id`` are the store's time and job ids; tests that replay random event
        sequences give their own, so a sequence decides the same way every time it is replayed."""
        self.engine = engine
        self.clock = clock
        self.new_id = new_id

    def submit(self, spec: JobSpec, *, tenant: str = "default", submit_key: str | None = None) -> JobRecord:
        """Store a new pending job; with ``submit_key``, a repeat returns the job the first call made.

        Keys are per tenant: another tenant's job is never returned for a key that happens to match.
        The insert comes first and the key's unique constraint catches a repeat: a new submission, the
        common case, is one transaction with no lookup. Core inserts rather than the ORM's unit of work,
        which costs more CPU than the database does for these two rows."""
        column_key = stored_key(tenant, submit_key) if submit_key is not None else None
        digest = spec_digest(spec) if submit_key is not None else None
        record = JobRecord(
            id=self.new_id(),
            name=spec.name,
            tenant=tenant,
            queue=spec.queue,
            status="pending",
            spec=spec.model_dump(mode="json"),
            submitted_at=self.clock(),
            started_at=None,
            ended_at=None,
            reason=None,
            attempt=0,
        )
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    insert(JobRow),
                    {
                        "id": record.id,
                        "name": record.name,
                        "tenant": record.tenant,
                        "queue": record.queue,
                        "status": record.status,
                        "spec": record.spec,
                        "submit_key": column_key,
                        "submit_digest": digest,
                        "submitted_at": record.submitted_at,
                        "attempt": record.attempt,
                        "checkpointed_seconds": 0.0,
                    },
                )
                connection.execute(
                    insert(EventRow), {"t": record.submitted_at, "job_id": record.id, "kind": "submitted"}
                )
        except IntegrityError:
            existing = self._by_key(column_key) if column_key is not None else None
            if existing is None:
                raise
            first, first_digest = existing
            if first_digest is not None and first_digest != digest:
                raise IdempotencyConflict(
                    f"Idempotency-Key {submit_key!r} was used for job {first.id} with a different spec; "
                    "use a new key for a new job"
                ) from None
            return first  # a repeat, or another request with the same key won the race
        return record

    def get(self, job_id: str) -> JobRecord:
        with Session(self.engine) as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise JobNotFound(f"no job {job_id!r}")
            return JobRecord.of(row, _placed_on(session, [job_id]).get(job_id, ()))

    def list(
        self,
        *,
        status: str | None = None,
        queue: str | None = None,
        tenant: str | None = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        """Newest first."""
        query = select(JobRow).order_by(JobRow.submitted_at.desc(), JobRow.id).limit(limit)
        if status is not None:
            query = query.where(JobRow.status == status)
        if queue is not None:
            query = query.where(JobRow.queue == queue)
        if tenant is not None:
            query = query.where(JobRow.tenant == tenant)
        with Session(self.engine) as session:
            rows = list(session.scalars(query))
            nodes = _placed_on(session, [row.id for row in rows])
            return [JobRecord.of(row, nodes.get(row.id, ())) for row in rows]

    def codes_in_use(self, tenant: str) -> set[str]:
        """The archives (uploaded ``code`` and mounted outputs, by digest) that ``tenant``'s pending and
        running jobs name: what its pods may still need to start."""
        query = select(JobRow.spec).where(JobRow.tenant == tenant, JobRow.status.in_(("pending", "running")))
        with Session(self.engine) as session:
            specs = list(session.scalars(query))
        used = {spec["code"] for spec in specs if spec.get("code")}
        return used | {mount["digest"] for spec in specs for mount in spec.get("mounts") or ()}

    def cancel(self, job_id: str, reason: str = "cancelled by user") -> JobRecord:
        now = self.clock()
        with Session(self.engine) as session, session.begin():
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None:
                raise JobNotFound(f"no job {job_id!r}")
            if row.status in ENDED:
                raise JobAlreadyEnded(f"job {job_id} already ended ({row.status}); nothing to cancel")
            row.status, row.ended_at, row.reason = "cancelled", now, reason
            release(session, job_id, now)
            session.add(EventRow(t=now, job_id=job_id, kind="cancelled", reason=reason))
            return JobRecord.of(row)

    def finish(self, job_id: str, *, succeeded: bool, reason: str | None = None) -> JobRecord:
        """A running job ended (its backend says how); its resources are free for the next round.

        A failure with retries left (the spec's ``retries``) makes the job wait to run again instead."""
        with Session(self.engine) as session, session.begin():
            return self._finish(session, JobEnd(job_id, succeeded, reason), self.clock())

    def finish_many(self, ends: Sequence[JobEnd]) -> list[JobEnd]:
        """Several running jobs ended: recorded in one transaction (a round's exits, which one
        transaction each made cost as much as the round). Returns those recorded; a job no longer
        running (cancelled meanwhile) is left out, as ``finish`` would refuse it."""
        now = self.clock()
        with Session(self.engine) as session, session.begin():
            # Every read and statement before the first change: the ORM flushes what was changed before
            # each statement, which made recording 8 ends cost 8 flushes.
            first: dict[str, JobEnd] = {}
            for end in ends:
                first.setdefault(end.job_id, end)  # a second end of one job is refused, as ``finish`` would
            query = select(JobRow).where(JobRow.id.in_(list(first))).with_for_update()
            rows = {row.id: row for row in session.scalars(query) if row.status == "running"}
            recorded = [end for job_id, end in first.items() if job_id in rows]
            retried = self._retries_used_many(session, [end.job_id for end in recorded if not end.succeeded])
            release_many(session, [end.job_id for end in recorded], now)
            for end in recorded:
                self._end(session, rows[end.job_id], end, now, retried.get(end.job_id, 0))
        return recorded

    def _finish(self, session: Session, end: JobEnd, now: float) -> JobRecord:
        job_id = end.job_id
        row = session.get(JobRow, job_id, with_for_update=True)
        if row is None:
            raise JobNotFound(f"no job {job_id!r}")
        if row.status != "running":
            raise JobAlreadyEnded(f"job {job_id} is {row.status}, not running")
        release(session, job_id, now)
        return self._end(session, row, end, now, 0 if end.succeeded else self._retries_used(session, job_id))

    @staticmethod
    def _end(session: Session, row: JobRow, end: JobEnd, now: float, retried: int) -> JobRecord:
        """Record how a running job ended, its resources already released: it waits again while its
        failures (``retried`` so far) have retries left, else it has ended."""
        job_id, reason = end.job_id, end.reason
        allowed = int(row.spec.get("retries", 0))
        if not end.succeeded and retried < allowed:
            row.status, row.started_at = "pending", None
            row.reason = f"{reason}; retry {retried + 1} of {allowed}"
            session.add(EventRow(t=now, job_id=job_id, kind="retried", reason=row.reason))
            return JobRecord.of(row)
        row.status, row.ended_at, row.reason = "finished" if end.succeeded else "failed", now, reason
        session.add(EventRow(t=now, job_id=job_id, kind=row.status, reason=reason))
        return JobRecord.of(row)

    @staticmethod
    def _retries_used_many(session: Session, job_ids: Sequence[str]) -> dict[str, int]:
        """``_retries_used`` for several jobs in one query (those never retried are left out)."""
        if not job_ids:
            return {}
        query = (
            select(EventRow.job_id, func.count())
            .where(EventRow.job_id.in_(job_ids), EventRow.kind == "retried")
            .group_by(EventRow.job_id)
        )
        return {job_id: count for job_id, count in session.execute(query)}

    @staticmethod
    def _retries_used(session: Session, job_id: str) -> int:
        return JobStore._retries_used_many(session, [job_id]).get(job_id, 0)

    def pod_node(self, job_id: str, attempt: int, pod: int) -> str:
        """The node pod ``pod`` of the job's running attempt ``attempt`` is placed on: where a report
        about it must come from. ``StaleAttempt`` when that attempt is not the job's current run."""
        with Session(self.engine) as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise JobNotFound(f"no job {job_id!r}")
            return _current_placement(session, row, attempt, pod).node

    def record_exit(self, job_id: str, attempt: int, pod: int, code: int) -> JobRecord:
        """An agent reports that a pod ended; when every pod of the job has, the job ends (finished when
        all exited 0). A report for another attempt than the running one (the job was requeued,
        preempted or ended since) is refused with ``StaleAttempt`` and changes nothing."""
        with Session(self.engine) as session, session.begin():
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None:
                raise JobNotFound(f"no job {job_id!r}")
            placement = _current_placement(session, row, attempt, pod)
            if placement.exit_code is not None:
                return JobRecord.of(row)  # a retried report
            placement.exit_code = code
            session.flush()
            codes = [
                p.exit_code
                for p in session.scalars(
                    select(PlacementRow).where(PlacementRow.job_id == job_id).order_by(PlacementRow.pod)
                )
            ]
        if all(c is not None for c in codes):
            succeeded, reason = exit_outcome([c for c in codes if c is not None])
            try:
                return self.finish(job_id, succeeded=succeeded, reason=reason)
            except JobAlreadyEnded:
                pass  # another pod's report finished it first
        return self.get(job_id)

    def record_port(self, job_id: str, attempt: int, pod: int, port: int) -> None:
        """The port a pod was given where it started (``JobSpec.listen_port``): kept with its placement,
        where a service's controller reads it. Fenced as exits are (``StaleAttempt``)."""
        with Session(self.engine) as session, session.begin():
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None:
                raise JobNotFound(f"no job {job_id!r}")
            _current_placement(session, row, attempt, pod).port = port

    def last_event(self) -> int | None:
        """The newest event's id: it changes whenever a job is submitted, cancelled or ends."""
        with self.engine.connect() as connection:
            return connection.execute(select(func.max(EventRow.id))).scalar()

    def queue_depths(self) -> dict[tuple[str, str], int]:
        with Session(self.engine) as session:
            return read_queue_depths(session)

    def allocated_gpus(self) -> dict[str, float]:
        with Session(self.engine) as session:
            return read_allocated_gpus(session)

    def events(self, job_id: str) -> list[JobEvent]:
        """What happened to a job, oldest first: submitted, started, preempted, node_lost, ended."""
        with Session(self.engine) as session:
            rows = session.scalars(select(EventRow).where(EventRow.job_id == job_id).order_by(EventRow.id))
            return [JobEvent(t=row.t, kind=row.kind, reason=row.reason) for row in rows]

    def placements(self, job_id: str) -> list[tuple[int, str, tuple[int, ...]]]:
        """(pod, node, GPUs) of a running job."""
        with Session(self.engine) as session:
            rows = session.scalars(
                select(PlacementRow).where(PlacementRow.job_id == job_id).order_by(PlacementRow.pod)
            )
            return [(row.pod, row.node, tuple(row.gpus)) for row in rows]

    def _by_key(self, submit_key: str) -> tuple[JobRecord, str | None] | None:
        """The job made with ``submit_key`` and the digest of its spec (None: stored before digests)."""
        with Session(self.engine) as session:
            row = session.scalars(select(JobRow).where(JobRow.submit_key == submit_key)).first()
            return (JobRecord.of(row), row.submit_digest) if row is not None else None


def spec_digest(spec: JobSpec) -> str:
    """SHA-256 of the spec as validated (so key order and spelled-out defaults do not matter)."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _current_placement(session: Session, row: JobRow, attempt: int, pod: int) -> PlacementRow:
    """The placement of ``pod`` in the job's running attempt ``attempt`` (fencing: the attempt number is
    the epoch, and only the current one may report)."""
    if row.status != "running":
        raise StaleAttempt(
            f"job {row.id} is not running (it is {row.status} after attempt {row.attempt}); "
            f"attempt {attempt} is over: stop its pods"
        )
    if row.attempt != attempt:
        raise StaleAttempt(
            f"job {row.id} runs attempt {row.attempt} now; attempt {attempt} is over: stop its pods"
        )
    placement = session.get(PlacementRow, (row.id, pod))
    if placement is None:
        raise JobNotFound(f"job {row.id} has no pod {pod}")
    return placement


def read_queue_depths(session: Session) -> dict[tuple[str, str], int]:
    """(queue, status) -> number of pending or running jobs."""
    rows = session.execute(
        select(JobRow.queue, JobRow.status, func.count())
        .where(JobRow.status.in_(("pending", "running")))
        .group_by(JobRow.queue, JobRow.status)
    )
    return {(queue, status): count for queue, status, count in rows}


def read_allocated_gpus(session: Session) -> dict[str, float]:
    """GPUs held by running pods per node (a share counts as its fraction)."""
    held: dict[str, float] = {}
    for node, gpus, milli in session.execute(
        select(PlacementRow.node, PlacementRow.gpus, PlacementRow.gpu_milli)
    ):
        held[node] = held.get(node, 0.0) + len(gpus) * milli / 1000
    return held


def _placed_on(session: Session, job_ids: list[str]) -> dict[str, tuple[str, ...]]:
    """Per job, the nodes of its placed pods in pod order (one query for a whole listing)."""
    placed: dict[str, list[str]] = {}
    query = select(PlacementRow.job_id, PlacementRow.node).where(PlacementRow.job_id.in_(job_ids))
    for job_id, node in session.execute(query.order_by(PlacementRow.job_id, PlacementRow.pod)):
        placed.setdefault(job_id, []).append(node)
    return {job_id: tuple(nodes) for job_id, nodes in placed.items()}
