"""Nodes as their agents report them: when each was last heard from, and what it registered."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from corral.api_models import NodeRegistration
from corral.store.schema import NodeRow


class NodeStore:
    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock

    def heartbeat(self, name: str) -> float:
        now = self.clock()
        with Session(self.engine) as session, session.begin():
            row = session.get(NodeRow, name)
            if row is None:
                session.add(NodeRow(name=name, last_heartbeat=now))
            else:
                row.last_heartbeat = now
        return now

    def register(self, name: str, registration: NodeRegistration) -> None:
        """Record what the node has; registering counts as a heartbeat."""
        now = self.clock()
        document = registration.model_dump(mode="json")
        with Session(self.engine) as session, session.begin():
            row = session.get(NodeRow, name)
            if row is None:
                session.add(NodeRow(name=name, last_heartbeat=now, registration=document))
            else:
                row.last_heartbeat, row.registration = now, document

    def mark_down(self, name: str) -> None:
        """The node's engine says it is gone (Ray reports it dead): as silent as a node can be, so the
        next round requeues its work without waiting for the heartbeat timeout."""
        with Session(self.engine) as session, session.begin():
            row = session.get(NodeRow, name)
            if row is not None:
                row.last_heartbeat = 0.0

    def remove(self, name: str) -> bool:
        """Forget the node's registration and heartbeats; False when there were none. A registered-only
        node leaves the fleet (the next round requeues its work); a node the cluster file declares is
        back to its declared shape, down until heard from again when heartbeats are required."""
        with Session(self.engine) as session, session.begin():
            row = session.get(NodeRow, name)
            if row is None:
                return False
            session.delete(row)
            return True

    def last_heard(self) -> dict[str, float]:
        with Session(self.engine) as session:
            return {
                name: heard for name, heard in session.execute(select(NodeRow.name, NodeRow.last_heartbeat))
            }

    def registrations(self) -> dict[str, NodeRegistration]:
        with Session(self.engine) as session:
            return read_registrations(session)


def read_registrations(session: Session) -> dict[str, NodeRegistration]:
    """Every registered node, by name (in the caller's transaction: a reconcile round's)."""
    rows = session.execute(
        select(NodeRow.name, NodeRow.registration).where(NodeRow.registration.is_not(None))
    )
    return {name: NodeRegistration.model_validate(document) for name, document in rows}
