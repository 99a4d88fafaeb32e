"""Pipeline runs and their step instances in the store, and the outputs jobs left.

Everything a run needs to go on after a restart is here: the spec and parameters it was started with,
each step instance's status, job, cache key (and its parts, for saying why a later run missed) and
outputs. A step's change is written only if the step is still as the writer read it (``update_step``),
so a cancel through the API and the controller in the reconcile loop never undo each other.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from corral.errors import CorralError
from corral.store.schema import JobOutputRow, PipelineRunRow, PipelineStepRow

ACTIVE_STEPS = ("waiting", "submitted")
ENDED_RUNS = ("succeeded", "failed", "cancelled")


class PipelineNotFound(CorralError):
    """No pipeline run with that id (or not one the caller's tenant may see)."""


@dataclass(frozen=True)
class StepRecord:
    run_id: str
    name: str
    step: str
    position: int
    status: str
    job_id: str | None
    cached: bool
    cache_key: str | None
    key_parts: dict[str, Any] | None
    reason: str | None
    cache_reason: str | None
    outputs: dict[str, str] | None

    @classmethod
    def of(cls, row: PipelineStepRow) -> StepRecord:
        return cls(
            run_id=row.run_id,
            name=row.name,
            step=row.step,
            position=row.position,
            status=row.status,
            job_id=row.job_id,
            cached=row.cached,
            cache_key=row.cache_key,
            key_parts=row.key_parts,
            reason=row.reason,
            cache_reason=row.cache_reason,
            outputs=row.outputs,
        )


@dataclass(frozen=True)
class RunRecord:
    id: str
    name: str
    tenant: str
    status: str
    spec: dict[str, Any]
    params: dict[str, str]
    created_at: float
    ended_at: float | None
    reason: str | None

    @classmethod
    def of(cls, row: PipelineRunRow) -> RunRecord:
        return cls(
            id=row.id,
            name=row.name,
            tenant=row.tenant,
            status=row.status,
            spec=row.spec,
            params=row.params,
            created_at=row.created_at,
            ended_at=row.ended_at,
            reason=row.reason,
        )


class PipelineStore:
    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock

    def create(
        self,
        name: str,
        tenant: str,
        spec: dict[str, Any],
        params: dict[str, str],
        steps: list[tuple[str, str]],
    ) -> RunRecord:
        """A new running run with its step instances (``(instance, step)`` in order), all waiting."""
        run = PipelineRunRow(
            id=f"p-{uuid.uuid4().hex[:12]}",
            name=name,
            tenant=tenant,
            status="running",
            spec=spec,
            params=params,
            created_at=self.clock(),
        )
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            session.add(run)
            session.flush()
            for position, (instance, step) in enumerate(steps):
                session.add(
                    PipelineStepRow(
                        run_id=run.id,
                        name=instance,
                        step=step,
                        position=position,
                        status="waiting",
                        cached=False,
                    )
                )
        return RunRecord.of(run)

    def get(self, run_id: str) -> RunRecord:
        with Session(self.engine) as session:
            row = session.get(PipelineRunRow, run_id)
            if row is None:
                raise PipelineNotFound(f"no pipeline run {run_id!r}")
            return RunRecord.of(row)

    def list(self, *, tenant: str | None = None, limit: int = 100) -> list[RunRecord]:
        """Newest first."""
        query = select(PipelineRunRow).order_by(PipelineRunRow.created_at.desc()).limit(limit)
        if tenant is not None:
            query = query.where(PipelineRunRow.tenant == tenant)
        with Session(self.engine) as session:
            return [RunRecord.of(row) for row in session.scalars(query)]

    def running(self) -> list[RunRecord]:
        with Session(self.engine) as session:
            rows = session.scalars(select(PipelineRunRow).where(PipelineRunRow.status == "running"))
            return [RunRecord.of(row) for row in rows]

    def steps(self, run_id: str) -> list[StepRecord]:
        query = select(PipelineStepRow).where(PipelineStepRow.run_id == run_id)
        with Session(self.engine) as session:
            return [StepRecord.of(row) for row in session.scalars(query.order_by(PipelineStepRow.position))]

    def update_step(self, run_id: str, name: str, expected: str, **values: Any) -> bool:
        """Write ``values`` on the step if its status is still ``expected``; False when it changed since."""
        statement = (
            update(PipelineStepRow)
            .where(
                PipelineStepRow.run_id == run_id,
                PipelineStepRow.name == name,
                PipelineStepRow.status == expected,
            )
            .values(**values)
        )
        with self.engine.begin() as connection:
            return connection.execute(statement).rowcount == 1

    def end(self, run_id: str, status: str, reason: str | None) -> bool:
        """The run ended (if it still ran): False when another writer ended it first."""
        statement = (
            update(PipelineRunRow)
            .where(PipelineRunRow.id == run_id, PipelineRunRow.status == "running")
            .values(status=status, reason=reason, ended_at=self.clock())
        )
        with self.engine.begin() as connection:
            return connection.execute(statement).rowcount == 1

    def cache_hit(self, tenant: str, key: str) -> StepRecord | None:
        """The newest succeeded step of ``tenant`` with cache key ``key`` that ran its own job (a hit's
        outputs are that job's)."""
        query = (
            select(PipelineStepRow)
            .join(PipelineRunRow, PipelineRunRow.id == PipelineStepRow.run_id)
            .where(
                PipelineRunRow.tenant == tenant,
                PipelineStepRow.cache_key == key,
                PipelineStepRow.status == "succeeded",
                PipelineStepRow.cached.is_(False),
            )
            .order_by(PipelineRunRow.created_at.desc())
            .limit(1)
        )
        with Session(self.engine) as session:
            row = session.scalars(query).first()
            return StepRecord.of(row) if row is not None else None

    def previous(
        self, tenant: str, pipeline: str, run_id: str, step: str, instance: str
    ) -> StepRecord | None:
        """The nearest earlier keyed run of the same step of the same pipeline: the same instance
        (``train[c=0.1]``) if there is one, else any instance of the step (another matrix value)."""
        query = (
            select(PipelineStepRow)
            .join(PipelineRunRow, PipelineRunRow.id == PipelineStepRow.run_id)
            .where(
                PipelineRunRow.tenant == tenant,
                PipelineRunRow.name == pipeline,
                PipelineStepRow.step == step,
                PipelineStepRow.run_id != run_id,
                PipelineStepRow.key_parts.is_not(None),
            )
            .order_by(PipelineRunRow.created_at.desc())
            .limit(50)
        )
        with Session(self.engine) as session:
            rows = [StepRecord.of(row) for row in session.scalars(query)]
        same = [row for row in rows if row.name == instance]
        return (same or rows or [None])[0]

    def record_output(self, job_id: str, name: str, digest: str, size: int) -> None:
        """A job's output is stored (again, for a later attempt: the newest wins)."""
        with self.engine.begin() as connection:
            connection.execute(
                delete(JobOutputRow).where(JobOutputRow.job_id == job_id, JobOutputRow.name == name)
            )
            connection.execute(
                JobOutputRow.__table__.insert(),
                {"job_id": job_id, "name": name, "digest": digest, "size": size},
            )

    def outputs(self, job_id: str) -> dict[str, str]:
        """The job's stored outputs: name -> digest."""
        query = select(JobOutputRow.name, JobOutputRow.digest).where(JobOutputRow.job_id == job_id)
        with self.engine.connect() as connection:
            return {name: digest for name, digest in connection.execute(query)}
