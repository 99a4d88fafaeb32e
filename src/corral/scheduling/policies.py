"""Named scheduling policies: how jobs are ordered, whether they may preempt, how nodes are scored.

A policy is data, not code: every caller runs the same ``schedule`` with a different ``Policy`` value, so
the simulator measures exactly what the control plane would do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from corral.core.workloads import PodRequest
from corral.errors import CorralError
from corral.scheduling.bursting import Bursting
from corral.scheduling.fragmentation import (
    FragmentationGradient,
    FragmentationModel,
    LeastFragmentingGpu,
    typical_shapes,
)
from corral.scheduling.gpu_choice import RandomGpu, SpreadGpus
from corral.scheduling.ordering import JobOrder
from corral.scheduling.preemption import PreemptionCost
from corral.scheduling.scorers import (
    BestFit,
    BinPack,
    DotProduct,
    GpuClustering,
    GpuPacking,
    GpuSparing,
    NvLink,
    Scoring,
    Spread,
)


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
    job_order: JobOrder = JobOrder.SUBMISSION
    """How jobs of one queue and priority are ordered: by submission (FIFO), or highest response ratio
    first (``corral.scheduling.ordering``)."""
    preemption: bool = True
    backfill: bool = True
    """Backfill with reservations: the first jobs that find no room in a domain get a reservation there
    (``reservations_per_domain``), and later jobs may use their idle GPUs only if they end before the
    holders need them (``corral.scheduling.backfill``)."""
    reservations_per_domain: int = 1
    """How many blocked jobs of a round get a reservation in one domain, first come first held: 1 is
    EASY backfill; more goes towards conservative backfill (each later reservation counts the earlier
    ones' GPUs as taken)."""
    preemption_cost: PreemptionCost = PreemptionCost()
    """When a running job may be a victim, and what a preemption must save to be worth its lost work."""
    scoring: Scoring = Scoring(scorers=((BinPack(), 1.0), (NvLink(), 1.0), (GpuSparing(), 0.5)))
    scale_down_idle_seconds: float = (
        600.0  # elastic nodes above the pool's base count go after this idle time
    )
    shaped: Callable[[FragmentationModel], Scoring] | None = None
    """For fragmentation-aware policies: the scoring, given the typical pod shapes of the workload."""
    migrate_shares: bool = False
    """A pod that fits nowhere may have GPU shares moved within one node to make room for it."""
    memory_shapes: bool = False
    """Whether the typical shapes also need main memory (FGD's do not)."""
    bursting: Bursting = Bursting()
    """When jobs may use public clusters: by default after their queue's threshold, or early when the
    forecast says they would miss their deadline."""

    def for_workload(self, pods: Iterable[PodRequest]) -> Policy:
        """This policy made ready for a workload: fragmentation-aware scoring learns its typical shapes."""
        if self.shaped is None:
            return self
        shapes = typical_shapes(pods, memory=self.memory_shapes)
        return replace(self, scoring=self.shaped(FragmentationModel(shapes)), shaped=None)


def _as_default(name: str, description: str, scoring: Scoring) -> Policy:
    """A placement variant: default's queues, fair share, backfill and preemption, in submission order
    inside a queue with one reservation per domain (``Policy``'s defaults), scored its own way."""
    return Policy(
        name=name,
        description=f"As default in submission order with one reservation per domain, but {description}",
        scoring=scoring,
    )


def _fgd(model: FragmentationModel) -> Scoring:
    return Scoring(((FragmentationGradient(model), 1.0),), gpus=LeastFragmentingGpu(model))


POLICIES: dict[str, Policy] = {
    policy.name: policy
    for policy in (
        Policy(
            name="default",
            description="Fair share between queues, priority then highest response ratio inside a queue "
            "(best effort), backfill, preemption, bin-packing with NVLink-aware GPU choice.",
            job_order=JobOrder.RESPONSE_RATIO,
            reservations_per_domain=2,
        ),
        Policy(
            name="strict-fifo",
            description="As default in submission order, but a queue's head job blocks the jobs behind it "
            "(StrictFIFO), and no backfill.",
            ordering=Ordering.STRICT_FIFO,
            backfill=False,
        ),
        Policy(
            name="spread",
            description="As default in submission order with one reservation per domain, but pods go to the "
            "emptiest node and GPU (spreading).",
            scoring=Scoring(scorers=((Spread(), 1.0), (NvLink(), 1.0)), gpus=SpreadGpus()),
        ),
        Policy(
            name="fifo",
            description="Baseline: all jobs in one queue in submission order (best effort), first node that "
            "fits, no preemption, no fair share.",
            fair_share=False,
            priority=False,
            preemption=False,
            backfill=False,
            scoring=Scoring(),
        ),
        _as_default(
            "random",
            "any node that fits, drawn uniformly (the FGD paper's Random).",
            Scoring(gpus=RandomGpu(), random_ties=True),
        ),
        _as_default(
            "dot-product",
            "nodes scored by Tetris's alignment of free and asked (CPU, GPU) (the paper's DotProd).",
            Scoring(((DotProduct(), 1.0),)),
        ),
        _as_default(
            "gpu-clustering",
            "pods of one GPU size kept together (the paper's GpuClustering).",
            Scoring(((GpuClustering(), 1.0),)),
        ),
        _as_default(
            "gpu-packing",
            "shares packed onto used GPUs, then used nodes (the paper's GpuPacking).",
            Scoring(((GpuPacking(), 1.0),)),
        ),
        _as_default(
            "best-fit",
            "the node left with least CPU and GPU (the paper's BestFit).",
            Scoring(((BestFit(), 1.0),)),
        ),
        replace(
            _as_default(
                "corral-fgd",
                "FGD whose typical pods also need main memory, so GPUs stranded by exhausted memory count "
                "as fragmented (FGD looks at CPU and GPU only).",
                Scoring(),
            ),
            shaped=_fgd,
            memory_shapes=True,
        ),
        replace(
            _as_default(
                "corral-defrag",
                "corral-fgd, and a pod that fits nowhere may have GPU shares moved to other GPUs of one "
                "node (restarted from their checkpoint) to make room for it.",
                Scoring(),
            ),
            shaped=_fgd,
            memory_shapes=True,
            migrate_shares=True,
        ),
        replace(
            _as_default(
                "fgd",
                "fragmentation gradient descent (Weng et al., ATC'23): the node and GPU where the "
                "workload's typical pods lose least idle GPU.",
                Scoring(),
            ),
            shaped=_fgd,
        ),
    )
}

DEFAULT_POLICY = "default"


def get_policy(name: str | None, pods: Iterable[PodRequest] | None = None) -> Policy:
    """The named policy (``default`` when None); the error lists the names that exist.

    Given the workload's ``pods``, a fragmentation-aware policy learns their typical shapes; without
    them it is returned unready, and the caller must call ``Policy.for_workload``.
    """
    name = name or DEFAULT_POLICY
    try:
        policy = POLICIES[name]
    except KeyError:
        raise CorralError(f"unknown policy {name!r}; choose one of: {', '.join(POLICIES)}") from None
    return policy if pods is None else policy.for_workload(pods)
