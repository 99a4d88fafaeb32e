"""A step the reconcile loop asks for after its rounds but need not wait for, run on a thread of its own.

Ending the MLflow runs of jobs that ended (``JobTracking.sweep``) is a transaction in MLflow's store and
one in corral's per job: in a burst of short jobs that was a tenth of the loop thread's time, during which
no exit was recorded and no GPU handed on. Nothing a round decides depends on it, so the loop only pokes
it. Pokes made while the step runs are folded into one more run: the step always runs after the last
poke, never twice at once, and a slow step never holds a round back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class BackgroundStep:
    def __init__(self, step: Callable[[], None], name: str) -> None:
        """``step``: what to run after each poke (its errors are logged; the next poke runs it again);
        ``name``: its thread's (a daemon: the step must be one a stop may cut short and a restart
        redoes, as a sweep is), as py-spy and logs show it."""
        self.step = step
        self._wanted = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Run the step soon (now if it is idle, else once more after the run in progress)."""
        with self._lock:
            self._idle.clear()
            self._wanted.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Until every poke so far has been followed by a finished run (tests, shutdown)."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            try:
                self.step()
            except Exception:
                log.exception("%s failed; running it again after the next round", self._thread.name)
            with self._lock:
                if not self._wanted.is_set():
                    self._idle.set()
