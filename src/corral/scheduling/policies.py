"""Named scheduling policies: how jobs are ordered, whether they may preempt, how nodes are scored.

A policy is data, not code: every caller runs the same ``schedule`` with a different ``Policy`` value, so
the simulator measures exactly what the control plane would do.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from corral.errors import CorralError
from corral.scheduling.gpu_choice import SpreadGpus
from corral.scheduling.scorers import BinPack, GpuSparing, NvLink, Scoring, Spread


class Ordering(StrEnum):
    STRICT_FIFO = "strict-fifo"  # a queue's head job that cannot start blocks the jobs behind it
    BEST_EFFORT_FIFO = "best-effort-fifo"  # a head job that cannot start lets the next ones try


@dataclass(frozen=True)
class Policy:
    name: str
    description: str
    ordering: Ordering = Ordering.BEST_EFFORT_FIFO
    fair_share: bool = True  # order queues by weighted dominant resource share (DRF)
    priority: bool = True  # higher priority first inside a queue
    preemption: bool = True
    scoring: Scoring = Scoring(scorers=((BinPack(), 1.0), (NvLink(), 1.0), (GpuSparing(), 0.5)))
    scale_down_idle_seconds: float = (
        600.0  # elastic nodes above the pool's base count go after this idle time
    )


POLICIES: dict[str, Policy] = {
    policy.name: policy
    for policy in (
        Policy(
            name="default",
            description="DRF between queues, priority then FIFO inside a queue (best effort), preemption, "
            "bin-packing with NVLink-aware GPU choice.",
        ),
        Policy(
            name="strict-fifo",
            description="As default, but a queue's head job blocks the jobs behind it (StrictFIFO).",
            ordering=Ordering.STRICT_FIFO,
        ),
        Policy(
            name="spread",
            description="As default, but pods go to the emptiest node and GPU (spreading).",
            scoring=Scoring(scorers=((Spread(), 1.0), (NvLink(), 1.0)), gpus=SpreadGpus()),
        ),
        Policy(
            name="fifo",
            description="Baseline: all jobs in one queue in submission order (best effort), first node that "
            "fits, no preemption, no fair share.",
            fair_share=False,
            priority=False,
            preemption=False,
            scoring=Scoring(),
        ),
    )
}

DEFAULT_POLICY = "default"


def get_policy(name: str | None) -> Policy:
    """The named policy (``default`` when None); the error lists the names that exist."""
    name = name or DEFAULT_POLICY
    try:
        return POLICIES[name]
    except KeyError:
        raise CorralError(f"unknown policy {name!r}; choose one of: {', '.join(POLICIES)}") from None
