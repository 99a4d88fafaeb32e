"""Forecasts in the control plane: the same replay the simulator uses (``corral.forecasting``), fed from the
store. The replay itself is the simulator, which the server's wiring hands in (``replay``): the control
plane does not import the simulator.

A round that may burst early (a deadline at risk, a wait worth more than its cost) needs each waiting
job's forecast private start; ``corral why`` shows it too. Run-time estimates learn from jobs as they
finish, read from the store (so a restarted server learns again from its history), and a forecast is
made again only when new jobs wait (at most every ``MIN_GAP_SECONDS``, and less often when replays are
long: ``TIME_SHARE``) or ``REFRESH_SECONDS`` passed: a round every 0.2 s must not replay the queue every
time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core.workloads import Workload
from corral.forecasting.replay import Replay, forecast_private_starts
from corral.forecasting.runtimes import RuntimeEstimates
from corral.scheduling import Policy, Snapshot
from corral.scheduling.bursting import Forecast
from corral.spec.job import JobSpec
from corral.store.schema import JobRow

REFRESH_SECONDS = 10.0
"""A forecast is reused for this long unless new jobs wait."""

MIN_GAP_SECONDS = 2.0
"""Least time between two forecasts, however fast jobs arrive: a replay of thousands of waiting jobs takes
a good part of a second, and rounds come every 0.2 s under load. A job that arrives in between waits for
the next forecast to get one."""

TIME_SHARE = 0.1
"""Most of the loop's time forecasts take: after a replay that took ``t`` seconds, the next waits at least
``t / TIME_SHARE`` (a replay of a long queue took a fifth of every 2 s, rounds then start later, and jobs
end to end slowed down by as much)."""

HISTORY_JOBS = 5000
"""Finished jobs read when the server starts: the most recent ones."""


@dataclass
class Forecasting:
    """What the reconcile loop keeps between rounds to forecast private starts."""

    replay: Replay
    estimates: RuntimeEstimates = field(default_factory=RuntimeEstimates)
    learned_until: float | None = None
    made_at: float = float("-inf")
    last: Forecast | None = None
    took: float = 0.0
    """Seconds the last replay took."""
    on_forecast: Callable[[float], None] | None = None
    """Told the seconds each forecast took (the ``/metrics`` forecast histogram), apart from the round."""

    def forecast(
        self,
        session: Session,
        snapshot: Snapshot,
        pending: Sequence[Workload],
        policy: Policy,
        now: float,
        saved: dict[str, float],
    ) -> Forecast | None:
        """The forecast for this round: made now if one is due (``due``), else the last one."""
        if not pending:  # however many wait, the replay looks at the first 200 (``FORECAST_JOBS``)
            return None
        if not self.due(pending, now):
            return self.last
        started = time.perf_counter()
        self.learn(session)
        self.last = forecast_private_starts(
            snapshot, pending, policy, now, self.estimates, saved, replay=self.replay
        )
        self.made_at, self.took = now, time.perf_counter() - started
        if self.on_forecast is not None:
            self.on_forecast(self.took)
        return self.last

    def due(self, pending: Sequence[Workload], now: float) -> bool:
        """Whether a new forecast should be made: new jobs wait (but ``MIN_GAP_SECONDS`` and
        ``TIME_SHARE`` passed since the last) or the last is ``REFRESH_SECONDS`` old."""
        known = self.last.private_start.keys() | self.last.runtime.keys() if self.last is not None else set()
        fresh = now - self.made_at < REFRESH_SECONDS and all(job.id in known for job in pending)
        return not fresh and now - self.made_at >= max(MIN_GAP_SECONDS, self.took / TIME_SHARE)

    def learn(self, session: Session) -> list[tuple[Workload, float]]:
        """Observe the run times of jobs that finished since the last look; returns what it observed
        (job, run time), in order, for a copy of the estimates kept elsewhere (``BackgroundForecasting``)."""
        query = select(JobRow).where(JobRow.status == "finished", JobRow.started_at.is_not(None))
        if self.learned_until is None:
            query = query.order_by(JobRow.ended_at.desc()).limit(HISTORY_JOBS)
        else:
            query = query.where(JobRow.ended_at > self.learned_until)
        rows = sorted(session.scalars(query), key=lambda row: row.ended_at or 0.0)
        observed = []
        for row in rows:
            assert row.ended_at is not None and row.started_at is not None
            workload = JobSpec.model_validate(row.spec).to_workload(row.id, submit=row.submitted_at)
            observed.append((workload, row.ended_at - row.started_at + row.checkpointed_seconds))
        for workload, runtime in observed:
            self.estimates.observe(workload, runtime)
        if rows:
            self.learned_until = rows[-1].ended_at
        elif self.learned_until is None:
            self.learned_until = float("-inf")
        return observed
