"""The scheduler: a pure function from a cluster snapshot and pending workloads to decisions.

The simulator, and later the control plane's reconcile loop and the backends, all call
``schedule(snapshot, pending, policy, now)``; nothing here does I/O or reads a clock.
"""

from corral.scheduling.decisions import (
    Pending,
    PendingReason,
    Placement,
    Preempt,
    Reject,
    ScaleDown,
    ScaleUp,
    SchedulingResult,
    Start,
)
from corral.scheduling.policies import POLICIES, Policy, get_policy
from corral.scheduling.scheduler import schedule
from corral.scheduling.snapshot import Allocation, Snapshot

__all__ = [
    "POLICIES",
    "Allocation",
    "Pending",
    "PendingReason",
    "Placement",
    "Policy",
    "Preempt",
    "Reject",
    "ScaleDown",
    "ScaleUp",
    "SchedulingResult",
    "Snapshot",
    "Start",
    "get_policy",
    "schedule",
]
