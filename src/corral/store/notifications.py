"""Wake-ups from PostgreSQL: every insert into the event log notifies channel ``corral_events`` (a trigger,
migration 0011), delivered when its transaction commits. With several API workers the reconcile loop runs
in another process than the request that submitted or reported an exit; it listens, and is woken within
the notification's trip instead of at its next look at the event log. SQLite has no notifications: there
the loop only watches the event log (``ReconcileLoop``'s ``watch``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import Engine

log = logging.getLogger(__name__)

CHANNEL = "corral_events"
RECONNECT_SECONDS = 1.0
"""Wait before listening again after the connection was lost (the watch still wakes the loop)."""


def notifies(engine: Engine) -> bool:
    """Whether the store sends notifications (PostgreSQL)."""
    return engine.dialect.name == "postgresql"


class EventListener:
    """A thread that LISTENs on its own connection and calls ``on_event`` for each notification."""

    def __init__(self, engine: Engine, on_event: Callable[[], None]) -> None:
        self.conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.on_event = on_event
        self.listening = threading.Event()
        """Set once LISTEN took effect: notifications committed after that are delivered."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="corral-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg  # the postgres extra: only a PostgreSQL store gets here

        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    while not self._stop.is_set():
                        for _ in connection.notifies(timeout=0.5):
                            self.on_event()
            except psycopg.Error:
                self.listening.clear()
                log.warning("lost the store's notifications; listening again in %g s", RECONNECT_SECONDS)
                self._stop.wait(RECONNECT_SECONDS)
