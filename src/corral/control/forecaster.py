"""Forecasts made on a thread of their own, so that no round waits for a replay.

A forecast replays up to 200 waiting jobs through the simulator (``corral.forecasting.replay``), a good
part of a second under load. Made inside the round (``Forecasting``: what direct callers of ``reconcile``
get), it delayed every start of that round. ``BackgroundForecasting`` asks for one when the same
conditions say so (``Forecasting.due``: new jobs wait, or ``REFRESH_SECONDS`` passed), hands it to one
worker thread, at most one in flight, and gives each round the latest finished forecast without waiting.
The simulator keeps forecasting inline: its replays must repeat exactly.

The thread gets data no one else touches: a copy of the round's snapshot (``detached_copy``), since the
round goes on to try placements on its own, which change its nodes in place; the waiting workloads; and
the run times learned since the last request. The store is read on the loop's thread (a session is not
thread-safe), and the thread keeps its own ``RuntimeEstimates`` fed the same observations in the same
order as the loop's (which the scheduler reads meanwhile), so both estimate alike.

A forecast the round uses is older than the round by up to one replay more than before (it was already
reused for up to ``REFRESH_SECONDS``), and that is harmless for the burst rules
(``corral.scheduling.bursting``): a job that started since keeps its predicted start, but the rules and
``corral why`` look up waiting jobs only, and its run time is still the estimate that burst costs and
budgets use; a job that arrived since has no prediction, so the forecast rules pass it by until the
next forecast (its queue's threshold still applies), as between two forecasts before; a predicted start
that has passed saves no wait (rule c) and misses no deadline the job would not miss anyway (rule b),
so age alone makes no burst. The one early burst a fresh forecast would not make is after the work
ahead shrank (a cancel, a job that ended before its estimate), as with a reused forecast before.

The thread shares the interpreter (and its lock) with the loop: a replay running beside a round slows
it about twofold. So in the loop the replay begins once the round that asked for it has ended and its
starts went to the backends (``after_round``, ``round_done``); it then runs while the loop waits for
the next round, and shares the interpreter only with rounds that come before it ends (``TIME_SHARE``
still bounds its share of the time).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from corral.control.forecasting import REFRESH_SECONDS, Forecasting
from corral.core.workloads import Workload
from corral.forecasting.replay import Replay, empty_copy, forecast_private_starts
from corral.forecasting.runtimes import RuntimeEstimates
from corral.scheduling import Policy, Snapshot
from corral.scheduling.bursting import Forecast

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Request:
    """One forecast to make, as data the loop no longer touches."""

    snapshot: Snapshot
    pending: tuple[Workload, ...]
    policy: Policy
    now: float
    saved: dict[str, float]
    observed: tuple[tuple[Workload, float], ...]
    """Run times learned since the last request: the thread's estimates learn them first."""


@dataclass(frozen=True)
class _Outcome:
    forecast: Forecast | None
    """None: the replay failed."""
    took: float


class BackgroundForecasting(Forecasting):
    """``Forecasting`` whose replays run on a thread: ``forecast`` never waits for one."""

    def __init__(
        self,
        replay: Replay,
        on_forecast: Callable[[float], None] | None = None,
        name: str = "corral-forecast",
        *,
        after_round: bool = False,
    ) -> None:
        """``on_forecast`` is told each replay's seconds, from the thread; ``name`` is the thread's.
        ``after_round``: a replay asked for begins only at ``round_done`` (the loop's), not at once."""
        super().__init__(replay, on_forecast=on_forecast)
        self.name = name
        self.after_round = after_round
        self._parked: _Request | None = None
        self._thread_estimates = RuntimeEstimates()
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._outcome: _Outcome | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._in_flight = False
        self._failed = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def forecast(
        self,
        session: Session,
        snapshot: Snapshot,
        pending: Sequence[Workload],
        policy: Policy,
        now: float,
        saved: dict[str, float],
    ) -> Forecast | None:
        """The latest finished forecast; asks for a new one (from this round's state) when one is due
        and none is in flight."""
        self._collect()
        if not pending:
            return None
        if not self._in_flight and not self._closed and self.due(pending, now):
            observed = tuple(self.learn(session))
            copy = detached_copy(snapshot)
            self._ask(_Request(copy, tuple(pending), policy, now, dict(saved), observed))
            self.made_at = now
        return self.last

    def due(self, pending: Sequence[Workload], now: float) -> bool:
        """As ``Forecasting.due``, but after a failed replay not before ``REFRESH_SECONDS``: a replay
        that fails fails again soon, and each failure logs its traceback."""
        if self._failed and now - self.made_at < REFRESH_SECONDS:
            return False
        return super().due(pending, now)

    def round_done(self) -> None:
        """The round that asked for a forecast ended and its starts went to the backends: its replay
        begins now, so that it did not share the interpreter with them (with ``after_round``)."""
        request, self._parked = self._parked, None
        if request is not None:
            self._requests.put(request)

    def wait(self, timeout: float | None = None) -> bool:
        """Until no forecast is in flight (tests, benchmarks); False if ``timeout`` passed first."""
        return self._idle.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread once the replay in progress, if any, ends (at most ``timeout`` seconds; it
        is a daemon, so a replay cut short by the process's exit is only a forecast lost)."""
        self._closed = True
        if self._thread is not None:
            self._requests.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _ask(self, request: _Request) -> None:
        self._in_flight = True
        self._idle.clear()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        if self.after_round:
            self._parked = request
        else:
            self._requests.put(request)

    def _collect(self) -> None:
        """Take the forecast the thread finished, if any (on the loop's thread)."""
        with self._lock:
            outcome, self._outcome = self._outcome, None
        if outcome is None:
            return
        self._in_flight = False
        self.took = outcome.took
        self._failed = outcome.forecast is None
        self.last = outcome.forecast  # after a failure, none: no early bursts until a replay succeeds

    def _run(self) -> None:
        while (request := self._requests.get()) is not None:
            started = time.perf_counter()
            forecast = None
            try:
                for workload, runtime in request.observed:
                    self._thread_estimates.observe(workload, runtime)
                forecast = forecast_private_starts(
                    request.snapshot,
                    request.pending,
                    request.policy,
                    request.now,
                    self._thread_estimates,
                    request.saved,
                    replay=self.replay,
                )
                if self.on_forecast is not None:
                    self.on_forecast(time.perf_counter() - started)
            except Exception:
                log.exception("forecast failed; rounds go on without one until the next succeeds")
            took = time.perf_counter() - started
            with self._lock:
                self._outcome = _Outcome(forecast, took)
            self._idle.set()


def detached_copy(snapshot: Snapshot) -> Snapshot:
    """What a forecast reads of a snapshot, copied: the clusters and queues, each node's hardware,
    health and usage, and the running allocations (frozen, so shared). Caches, reservations and spend
    are left behind: a replay starts its own."""
    queues = list(snapshot.queues.values()) if snapshot.queues is not None else None
    nodes = [empty_copy(node) for node in snapshot.nodes.values()]
    copy = Snapshot(list(snapshot.clusters.values()), nodes, queues, nodes_may_join=snapshot.nodes_may_join)
    for allocation in snapshot.running.values():
        copy.allocate(allocation)
    copy.commit()
    return copy
