"""Queues in the store: an admin creates, changes and deletes them while the control plane runs.

Deleting a queue that pending or running jobs use is refused (with their number), so no job is ever
left pointing at a queue that no longer exists.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.errors import CorralError
from corral.spec.queue import QueueConfig
from corral.store.schema import JobRow, QueueRow


class QueueNotFound(CorralError):
    """No queue with that name."""


class QueueInUse(CorralError):
    """The queue still has pending or running jobs."""


class QueueStore:
    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock

    def list(self) -> list[QueueConfig]:
        with Session(self.engine) as session:
            return read_queues(session)

    def get(self, name: str) -> QueueConfig:
        with Session(self.engine) as session:
            row = session.get(QueueRow, name)
            if row is None:
                raise QueueNotFound(f"no queue {name!r}")
            return QueueConfig.model_validate(row.config)

    def put(self, queue: QueueConfig) -> bool:
        """Create or replace ``queue``; True when it was created."""
        with Session(self.engine) as session, session.begin():
            row = session.get(QueueRow, queue.name)
            config = queue.model_dump(mode="json")
            if row is None:
                session.add(QueueRow(name=queue.name, config=config, updated_at=self.clock()))
                return True
            row.config, row.updated_at = config, self.clock()
            return False

    def delete(self, name: str) -> None:
        with Session(self.engine) as session, session.begin():
            row = session.get(QueueRow, name)
            if row is None:
                raise QueueNotFound(f"no queue {name!r}")
            using = session.scalar(
                select(func.count())
                .select_from(JobRow)
                .where(JobRow.queue == name, JobRow.status.in_(("pending", "running")))
            )
            if using:
                raise QueueInUse(
                    f"queue {name!r} has {using} pending or running job(s): cancel them or let them end first"
                )
            session.delete(row)

    def seed(self, queues: Iterable[QueueConfig]) -> bool:
        """Store ``queues`` when the store has none yet (a new control plane); True when it did."""
        try:
            with Session(self.engine) as session, session.begin():
                if session.scalar(select(func.count()).select_from(QueueRow)):
                    return False
                now = self.clock()
                for queue in queues:
                    session.add(
                        QueueRow(name=queue.name, config=queue.model_dump(mode="json"), updated_at=now)
                    )
                return True
        except IntegrityError:  # another server process seeded the same store at the same moment
            return False


def read_queues(session: Session) -> list[QueueConfig]:
    """Every queue, by name: what a reconcile round schedules against, in the round's transaction."""
    rows = session.scalars(select(QueueRow).order_by(QueueRow.name))
    return [QueueConfig.model_validate(row.config) for row in rows]
