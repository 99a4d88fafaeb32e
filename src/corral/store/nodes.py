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

    def heartbeat(self, name: str, address: str | None = None) -> float:
        """The node is alive; ``address``: where its agent says (or was seen) to be reached now."""
        now = self.clock()
        with Session(self.engine) as session, session.begin():
            row = session.get(NodeRow, name)
            if row is None:
                session.add(NodeRow(name=name, last_heartbeat=now, address=address))
            else:
                row.last_heartbeat = now
                row.address = address or row.address
        return now

    def register(self, name: str, registration: NodeRegistration, address: str | None = None) -> None:
        """Record what the node has (and ``address``, as for a heartbeat); registering counts as a
        heartbeat."""
        now = self.clock()
        document = registration.model_dump(mode="json")
        with Session(self.engine) as session, session.begin():
            row = session.get(NodeRow, name)
            if row is None:
                session.add(NodeRow(name=name, last_heartbeat=now, registration=document, address=address))
            else:
                row.last_heartbeat, row.registration = now, document
                row.address = address or row.address

    def addresses(self) -> dict[str, str]:
        """Where each node an agent speaks for is reached (see ``NodeRow.address``)."""
        with Session(self.engine) as session:
            rows = session.execute(select(NodeRow.name, NodeRow.address).where(NodeRow.address.is_not(None)))
            return {name: address for name, address in rows}

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
