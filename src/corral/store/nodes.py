"""Node heartbeats: when each node's agent was last heard from."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from corral.store.schema import NodeRow


class NodeStore:
    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock

    def heartbeat(self, name: str) -> float:
        now = self.clock()
        with Session(self.engine) as session, session.begin():
            session.merge(NodeRow(name=name, last_heartbeat=now))
        return now

    def last_heard(self) -> dict[str, float]:
        with Session(self.engine) as session:
            return {
                name: heard for name, heard in session.execute(select(NodeRow.name, NodeRow.last_heartbeat))
            }
