"""Revisions and rollouts, as pure rules: which revision gets how much traffic and how many replicas, and
when a new revision is promoted or rolled back.

A service has at most two revisions taking traffic: the **stable** one and a **canary** (the newest, from
a changed spec). The canary gets ``canary`` percent of the requests once it has a ready replica (0 %:
none until promoted, as in a blue/green switch); it is promoted by command, at once when it is ready and
no canary percent is set, or after ``promote_after`` of health; it is rolled back when a replica fails
its readiness or exits, or when its error rate is clearly above the stable revision's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

MIN_REQUESTS_TO_JUDGE = 20
"""Requests a canary must have answered before its error rate is compared with the stable one's."""
ERROR_RATE_MARGIN = 0.05
"""A canary is rolled back when its error rate exceeds the stable revision's by more than this."""


@dataclass(frozen=True)
class RevisionHealth:
    number: int
    ready: int
    """Replicas that passed readiness and are serving."""
    failed: int
    """Replicas that exited or never became ready within the readiness timeout."""
    requests: int
    errors: int
    """Answers of 500 and above, and requests no replica answered."""
    ready_since: float | None
    """When its first replica became ready (None: not yet)."""

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


Verdict = Literal["promote", "rollback", "wait"]


@dataclass(frozen=True)
class Step:
    verdict: Verdict
    reason: str


def rollout_step(
    stable: RevisionHealth | None,
    canary: RevisionHealth,
    percent: float,
    promote_after: float | None,
    now: float,
) -> Step:
    """What to do with ``canary`` now."""
    if canary.failed:
        return Step(
            "rollback", f"revision {canary.number}: {canary.failed} replica(s) failed readiness or exited"
        )
    if stable is not None and canary.requests >= MIN_REQUESTS_TO_JUDGE:
        if canary.error_rate > stable.error_rate + ERROR_RATE_MARGIN:
            return Step(
                "rollback",
                f"revision {canary.number}: error rate {canary.error_rate:.0%} against "
                f"{stable.error_rate:.0%} of revision {stable.number}",
            )
    if canary.ready_since is None:
        return Step("wait", f"revision {canary.number} is not ready yet")
    if stable is None or percent == 0:
        return Step("promote", f"revision {canary.number} is ready")
    if promote_after is not None and now - canary.ready_since >= promote_after:
        return Step("promote", f"revision {canary.number} was healthy for {promote_after:g}s")
    return Step("wait", f"revision {canary.number} takes {percent:g}% of the traffic")


def traffic_split(stable_ready: int, canary_ready: int, percent: float) -> tuple[float, float]:
    """Shares of the requests (stable, canary): the canary's percent once both have a ready replica; all
    to whichever has one otherwise (a request is never held for a revision while the other can answer)."""
    if canary_ready and not stable_ready:
        return 0.0, 1.0
    if stable_ready and not canary_ready:
        return 1.0, 0.0
    return 1.0 - percent / 100, percent / 100


def split_replicas(total: int, percent: float, has_canary: bool) -> tuple[int, int]:
    """Replicas (stable, canary) out of the ``total`` the autoscaler wants: the canary gets its share of
    them, and always one (it must pass readiness before it takes traffic); the stable revision keeps
    its share, at least one while the service has traffic."""
    if not has_canary:
        return total, 0
    canary = max(1, math.ceil(total * percent / 100)) if percent else 1
    stable = max(math.ceil(total * (100 - percent) / 100), 1 if total else 0)
    return stable, canary


@dataclass(frozen=True)
class ReplicaView:
    job_id: str
    started: bool
    """Its job is running (placed); False: still waiting for capacity."""
    ready: bool
    created_at: float


def choose_removals(replicas: Sequence[ReplicaView], keep: int) -> list[str]:
    """The replicas to stop so that ``keep`` remain: those still waiting for capacity first (they serve
    nobody), newest first, then started ones that are not ready, then ready ones, newest first. So the
    oldest waiting replica, the one a held request waits for, goes last: the autoscaler keeps at least one
    replica while a request is held, and scale-down never removes it in favour of a newer one."""
    surplus = len(replicas) - keep
    if surplus <= 0:
        return []
    order = sorted(replicas, key=lambda r: (r.ready, r.started, -r.created_at))
    return [r.job_id for r in order[:surplus]]
