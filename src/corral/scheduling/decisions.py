"""What the scheduler decides: the only output of a scheduling round.

Every job the round looked at and did not start gets a ``Pending`` with a reason code and a sentence,
because "why is my job pending?" is the question users ask most.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from corral.core.units import spoken_span


class PendingReason(StrEnum):
    """Machine-readable cause of a pending or rejected job."""

    QUOTA = "quota"  # the queue (and its cohort) has no quota left for the job's flavor
    NO_FIT = "no_fit"  # quota allows it, but no set of nodes has room now
    BLOCKED = "blocked"  # StrictFIFO: waits behind its queue's head job
    UNKNOWN_QUEUE = "unknown_queue"
    NEVER_FITS = "never_fits"  # no node the cluster can ever have could hold it
    OVER_QUOTA_LIMIT = "over_quota_limit"  # asks more than its queue could ever be lent
    PRIVATE_ONLY = "private_only"  # sensitive/non-burstable and no private cluster can hold it
    PROVISIONING = "provisioning"  # waits for new nodes of an elastic pool
    RESERVED = "reserved"  # the free room is held for a job that comes first, and this one would overrun it
    NO_NODE_YET = "no_node_yet"  # no node holds it yet, and nodes may still join (agents, Ray)


@dataclass(frozen=True, slots=True)
class Placement:
    """One pod on one node: the GPUs it uses and what it holds there."""

    pod: int
    node: str
    gpus: tuple[int, ...]
    gpu_milli: int
    gpu_memory_gib: float
    cpu: float
    memory_gib: float

    def fields(self) -> dict[str, object]:
        """The placement as plain fields (GPUs as a list), for event logs and store rows."""
        return {
            "pod": self.pod,
            "node": self.node,
            "gpus": list(self.gpus),
            "gpu_milli": self.gpu_milli,
            "gpu_memory_gib": self.gpu_memory_gib,
            "cpu": self.cpu,
            "memory_gib": self.memory_gib,
        }


@dataclass(frozen=True, slots=True)
class Start:
    job: str
    cluster: str
    flavor: str
    placements: tuple[Placement, ...]


@dataclass(frozen=True, slots=True)
class Preempt:
    """Stop ``job`` so ``by`` can start; the job requeues and resumes from its last checkpoint."""

    job: str
    by: str
    reason: str


@dataclass(frozen=True, slots=True)
class ScaleUp:
    """Grow elastic ``pool`` by ``nodes`` nodes so ``job`` can start once they are ready."""

    pool: str
    nodes: int
    job: str


@dataclass(frozen=True, slots=True)
class ScaleDown:
    """Give back ``node`` of an elastic pool: it has been idle longer than the policy allows."""

    node: str


@dataclass(frozen=True, slots=True)
class Reservation:
    """Room held for ``job`` in ``domain``: the GPUs it is expected to get at ``until``."""

    job: str
    domain: tuple[str, str]
    until: float
    placements: tuple[Placement, ...]
    """Where the job's pods would go at ``until``."""

    @property
    def gpus(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """(node, GPU indices) the job's pods would use at ``until``."""
        return tuple((p.node, p.gpus) for p in self.placements)

    def describe(self, now: float, *, timed: bool = True) -> str:
        """What the job's explanation says; ``timed`` False: the moment rests on run times nobody
        learned (a default time limit of a day), so it is not told."""
        nodes = ", ".join(node for node, _ in self.gpus[:3]) + (" ..." if len(self.gpus) > 3 else "")
        if not timed:
            return f"reserved: room held on {nodes} (when it frees is unknown until run times are learned)"
        return f"reserved: expected to start in {spoken_span(self.until - now)} on {nodes}"


@dataclass(frozen=True, slots=True)
class BehindReservation:
    """Room exists, but only on idle GPUs reserved for ``holder``, and the job would still run when the
    holder needs them (``corral.scheduling.backfill``)."""

    holder: str
    starts_in: float
    bound: str
    """What the job's end was judged by: "time limit" or "estimated run time"."""
    runs_for: float

    def describe(self) -> str:
        return (
            f"backfill: the free GPUs are reserved for {self.holder}, expected to start in "
            f"{spoken_span(self.starts_in)}, and this job's {self.bound} ({spoken_span(self.runs_for)}) "
            "runs past that"
        )


@dataclass(frozen=True, slots=True)
class Reject:
    job: str
    reason: PendingReason
    message: str


class Describable(Protocol):
    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Pending:
    """Why a job waits (``SchedulingResult.pending`` says which job): alike jobs that the round told the
    same share one object, so a deep queue of one kind is explained once, not once per job."""

    reason: PendingReason
    note: str = ""
    causes: tuple[tuple[tuple[str, str], str | Describable], ...] = ()
    """Per placement domain tried, (cluster, flavor), why it did not work there."""
    at: float | None = None
    """The time of the round whose final state the explanation describes."""
    free: dict[tuple[str, str], str] = field(default_factory=dict)
    """Per domain without room, its largest free block when the round ended (``largest_free_block``),
    filled in as the round ends."""

    @property
    def message(self) -> str:
        """The explanation as a sentence; built only when read, since most rounds' reasons never are."""
        parts = [self.note] if self.note else []
        for domain, cause in self.causes:
            text = cause if isinstance(cause, str) else cause.describe()
            if not isinstance(cause, str) and domain in self.free:
                text += f"; {self.free[domain]}"
            parts.append(f"{domain[0]}/{domain[1]}: {text}")
        return "; ".join(parts) or "waiting for the next scheduling round"


@dataclass(slots=True)
class SchedulingResult:
    """Decisions of one round, in the order a caller must apply them: preemptions, then starts, then
    scaling."""

    preemptions: list[Preempt] = field(default_factory=list)
    starts: list[Start] = field(default_factory=list)
    scale_ups: list[ScaleUp] = field(default_factory=list)
    scale_downs: list[ScaleDown] = field(default_factory=list)
    rejections: list[Reject] = field(default_factory=list)
    pending: dict[str, Pending] = field(default_factory=dict)
    reservations: list[Reservation] = field(default_factory=list)
    """Room held for jobs that found none (``corral.scheduling.backfill``): a caller that
    keeps state between rounds passes their jobs back in ``Snapshot.reserved``, so they go first."""
    wake_at: float | None = None
    """The earliest time a waiting job's options change by the clock alone (a queue's burst threshold
    passes): a caller that schedules only on events (the simulator) must run a round then."""
    held_by_limits: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    """Per waiting job, the domains where only its queue's borrowing limit refused it (its cohort had
    the quota to lend): what lets a caller tell GPUs a limit left idle from GPUs nobody asked for."""
