"""How the waiting jobs of one kind are told to wait when each has a forecast of its own.

A round tells a waiting job of a kind that another job just waited as the same explanation without
trying it (``_Round.waiting_kinds``), but not when the job has a forecast start of its own: its
explanation ends with that forecast (``forecast: starts on private clusters in 40 min``). The control
plane forecasts the first couple of hundred waiting jobs, so each of them was tried on its own, every
round: most of what a round at 10,000 jobs waiting spent beyond one at 100. Everything else such a
try finds is the kind's: the same quota answers, the same remembered placement failures, no
reservation to make, no preemption, no nodes to ask for. So the round keeps that part
(``OutlookWait``) and gives each job of the kind the explanation its own try would have built, with
its own forecast, until the round changes what a try would find (it is forgotten with
``waiting_kinds``).
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.scheduling.decisions import BehindReservation
from corral.scheduling.placement import FitFailure
from corral.scheduling.snapshot import Domain


@dataclass(frozen=True, slots=True)
class OutlookWait:
    """What a try of a job of one kind found, but for its own forecast: why each domain refused it,
    the note its feasibility adds, and the domains where only its queue's borrowing limit did."""

    failures: tuple[tuple[Domain, str | FitFailure | BehindReservation], ...]
    kept_private: str | None
    held_by_limits: tuple[Domain, ...]
