"""The reconcile loop: a round every ``interval`` seconds, at once when something changed, and when the
clock alone changes a waiting job's options (the last round's ``wake_at``: a queue's burst threshold).

"Something changed" is a poke: a submission or cancel through this process's API, an agent's exit
report, a local pod's exit (the local backend's watcher). A round first lets the backends record what
ended (``before_round``), then decides, then lets them act on the decisions (``after_round``), so a pod's
exit frees its GPUs and starts the next job in one round.

Runs in a thread beside the API. The loop keeps the pending and running jobs between rounds and each
round reads only the rows the store's event log says changed (``corral.control.active``); a round that
fails is logged and retried on the next tick from a full read of the store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine

from corral.control.active import ActiveJobs
from corral.control.changes import Changes
from corral.control.forecaster import BackgroundForecasting
from corral.control.metrics import ControlPlaneMetrics
from corral.control.reconcile import Inventory, RoundConflict, reconcile
from corral.forecasting.replay import Replay
from corral.scheduling import Policy

log = logging.getLogger(__name__)


MIN_GAP_SECONDS = 0.02
MAX_GAP_SECONDS = 0.2
"""Time between two rounds: as long as the last round took, between these bounds. A burst of submissions
or exits is scheduled together, not one round each, and rounds take at most about half the loop's time,
however long the queue; yet when rounds are cheap an exit's GPUs are handed on within tens of ms (a fixed
0.2 s gap was what bounded jobs/s end to end once exits woke the loop)."""
WATCH_SECONDS = 0.2
"""How often ``watch`` reads the store."""


class ReconcileLoop:
    def __init__(
        self,
        engine: Engine,
        inventory: Inventory,
        policy: Policy,
        interval: float = 2.0,
        after_round: Callable[[], None] | None = None,
        metrics: ControlPlaneMetrics | None = None,
        watch: Callable[[], object] | None = None,
        before_round: Callable[[], None] | None = None,
        replay: Replay | None = None,
    ) -> None:
        """``watch``: for a loop that nobody pokes (the API runs in other processes), a cheap reading of
        the store that changes when work arrives; a new value starts a round within 0.2 s. ``replay``:
        what forecasts replay the queue with (the simulator's ``replay_first_starts``); without it the
        loop makes no forecasts (no early bursts, none in ``corral why``); with it they are made on a
        thread of their own (``corral.control.forecaster``), which ``stop`` stops."""
        self.metrics = metrics
        self.watch = watch
        self._seen: object = None
        self.engine = engine
        self.after_round = after_round
        """Called after every round, e.g. a backend's sync: the decisions are committed by then."""
        self.before_round = before_round
        """Called before every round, e.g. to record the jobs whose pods exited, so the round frees their
        resources and hands them on."""
        self.inventory = inventory
        self.policy = policy
        self.interval = interval
        self.rounds = 0
        self.last_round_at: float | None = None
        """Unix seconds of the last round that committed: what waiting jobs' reasons describe."""
        self.decided = Changes()
        """Bumped after every committed round: what agents' long-polls for their pods wait on."""
        self.jobs = ActiveJobs()
        """The pending and running jobs, kept between rounds: a round reads only what the event log says
        changed (and everything on the first round and as a periodic check)."""
        observe = metrics.observe_forecast if metrics is not None else None
        self._forecasting = (
            BackgroundForecasting(replay, observe, after_round=True) if replay is not None else None
        )
        """Forecasts made on a thread of their own: a round uses the latest and never waits for one."""
        self._wake_at: float | None = None
        """Unix seconds when the last round said a waiting job may start by the clock alone (it may burst),
        so the next round runs then rather than up to ``interval`` later."""
        self._gap = MAX_GAP_SECONDS
        """How long to wait before the next round (see ``MIN_GAP_SECONDS``)."""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="corral-reconcile", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._forecasting is not None:
            self._forecasting.close()

    def _wait_for_work(self) -> None:
        """Until poked, the interval passed, the last round's ``wake_at`` came, or (with ``watch``) the
        store says something changed."""
        timeout = self.interval
        if self._wake_at is not None:
            timeout = min(timeout, max(0.0, self._wake_at - time.time()))
        if self.watch is None:
            self._wake.wait(timeout)
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._wake.wait(WATCH_SECONDS):
            try:
                seen = self.watch()
            except Exception:  # the store is away: the round will say so
                return
            if seen != self._seen:
                self._seen = seen
                return

    def poke(self) -> None:
        """Something changed (a submission, a cancel, a pod's exit): run a round now rather than at the
        next tick. Safe from any thread."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wait_for_work()
            if self._stop.wait(self._gap):
                return
            self._wake.clear()
            self._wake_at = None  # a failed round says nothing about when to wake: retry at the next tick
            try:
                started = time.perf_counter()
                if self.before_round is not None:
                    self.before_round()
                now = time.time()
                result = reconcile(
                    self.engine, self.inventory, self.policy, now, self.jobs, self._forecasting
                )
                self.last_round_at = now
                self._wake_at = result.wake_at
                self.decided.bump()
                if self.metrics is not None:
                    self.metrics.observe(result, time.perf_counter() - started)
                if self.after_round is not None:
                    self.after_round()
                self.rounds += 1
                self._gap = min(MAX_GAP_SECONDS, max(MIN_GAP_SECONDS, time.perf_counter() - started))
            except RoundConflict as conflict:  # a cancel or an exit came in mid-round: decide again now
                log.info("reconcile round rolled back: %s", conflict)
                self._wake.set()
            except Exception:  # the next round reads everything again from the store
                log.exception("reconcile round failed; retrying at the next tick")
            finally:
                if self._forecasting is not None:
                    self._forecasting.round_done()
