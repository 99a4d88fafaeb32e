"""Placement: filter plugins say which nodes can hold a pod, score plugins rank them, a gang places
all its pods or none.

Filters run cheapest first and each names the reason it rejects a node, so a pending job can be told
"0/12 nodes fit: 9 insufficient GPUs, 3 down", as kube-scheduler does. GPU choice inside a node is part of
placement, not an afterthought: whole GPUs come from one NVLink group when one has room, and shares are
packed onto the fullest GPU that still fits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from corral.core.nodes import Gpu, Node
from corral.core.units import MILLI_PER_GPU
from corral.core.workloads import PodRequest
from corral.scheduling.decisions import Placement

EPSILON = 1e-9

NodeFilter = Callable[[Node, PodRequest], bool]


def _is_up(node: Node, pod: PodRequest) -> bool:
    return node.up


def _model_matches(node: Node, pod: PodRequest) -> bool:
    return pod.models is None or node.gpu_model in pod.models


def _cpu_fits(node: Node, pod: PodRequest) -> bool:
    return node.cpu - node.used_cpu + EPSILON >= pod.cpu


def _memory_fits(node: Node, pod: PodRequest) -> bool:
    return node.memory_gib - node.used_memory_gib + EPSILON >= pod.memory_gib


def _gpus_fit(node: Node, pod: PodRequest) -> bool:
    if pod.gpus == 0:
        return True
    if pod.gpu_milli == MILLI_PER_GPU:
        return node.whole_free_gpus >= pod.gpus and node.gpus[0].memory_gib + EPSILON >= pod.gpu_memory_gib
    if node.max_free_share < pod.gpu_milli:
        return False
    return pod.gpu_memory_gib == 0 or any(_share_fits(gpu, pod) for gpu in node.gpus)


def _share_fits(gpu: Gpu, pod: PodRequest) -> bool:
    return (
        gpu.healthy
        and gpu.used_milli + pod.gpu_milli <= MILLI_PER_GPU
        and gpu.used_memory_gib + pod.gpu_memory_gib <= gpu.memory_gib + EPSILON
    )


FILTERS: tuple[tuple[str, NodeFilter], ...] = (
    ("down", _is_up),
    ("wrong GPU model", _model_matches),
    ("insufficient GPUs", _gpus_fit),
    ("insufficient CPU", _cpu_fits),
    ("insufficient memory", _memory_fits),
)
"""Filter plugins, cheapest and most selective first; the label is what a pending job is told."""


def needs_at_least(pod: PodRequest, other: PodRequest) -> bool:
    """True when ``pod`` asks at least what ``other`` does in every resource, on no more GPU models.

    Then wherever ``pod`` fits, ``other`` fits too; so if ``other`` found no room, neither will ``pod``,
    and a round need not scan the nodes again for it.
    """
    return (
        pod.gpus >= other.gpus
        and pod.gpu_milli >= other.gpu_milli
        and pod.gpu_memory_gib >= other.gpu_memory_gib
        and pod.cpu >= other.cpu
        and pod.memory_gib >= other.memory_gib
        and (other.models is None or (pod.models is not None and pod.models <= other.models))
    )


def choose_gpus(node: Node, pod: PodRequest, *, pack: bool = True) -> tuple[int, ...] | None:
    """The GPUs of ``node`` this pod should use, or None if it cannot have any.

    Whole GPUs: the smallest NVLink group that can hold all of them (keeps big groups whole for big
    jobs), else the fewest groups, fullest first. A share: the GPU with the least room that still fits
    (``pack``) or the most room (spread).
    """
    if pod.gpus == 0:
        return ()
    if pod.fractional:
        best = None
        best_key = 0
        for gpu in node.gpus:
            if _share_fits(gpu, pod):
                key = gpu.used_milli if pack else -gpu.used_milli
                if best is None or key > best_key:
                    best, best_key = gpu, key
        return (best.index,) if best is not None else None
    if not node.nvlink:
        free = [g.index for g in node.gpus if g.healthy and g.idle]
        return tuple(free[: pod.gpus]) if len(free) >= pod.gpus else None
    free_by_group: dict[int, list[int]] = {}
    for gpu in node.gpus:
        if gpu.healthy and gpu.idle:
            free_by_group.setdefault(gpu.nvlink_group, []).append(gpu.index)
    groups = sorted(free_by_group.values(), key=len)
    for group in groups:
        if len(group) >= pod.gpus:
            return tuple(group[: pod.gpus])
    chosen: list[int] = []
    for group in reversed(groups):
        chosen.extend(group[: pod.gpus - len(chosen)])
        if len(chosen) == pod.gpus:
            return tuple(sorted(chosen))
    return None


GANG_LOCALITY_WEIGHT = 2.0
"""A gang's pods go to the node that can take most of the rest of the gang, and stay with the pods already
placed: fewer nodes, less network."""


def pods_fitting(node: Node, pod: PodRequest) -> int:
    """How many more pods of this shape ``node`` can take right now."""
    limits = []
    if pod.cpu > 0:
        limits.append(int((node.cpu - node.used_cpu + EPSILON) // pod.cpu))
    if pod.memory_gib > 0:
        limits.append(int((node.memory_gib - node.used_memory_gib + EPSILON) // pod.memory_gib))
    if pod.gpus and not pod.fractional:
        limits.append(node.whole_free_gpus // pod.gpus)
    elif pod.gpus:
        limits.append(sum((MILLI_PER_GPU - g.used_milli) // pod.gpu_milli for g in node.gpus if g.healthy))
    return min(limits) if limits else 1_000_000


class Scorer(Protocol):
    """A score plugin: higher is better; scores are weighted and summed by the policy."""

    name: str

    def __call__(self, node: Node, pod: PodRequest, gpus: tuple[int, ...]) -> float: ...


@dataclass(frozen=True)
class BinPack:
    """Prefer the node that will be fullest: keeps whole nodes free for big gangs."""

    name: str = "binpack"

    def __call__(self, node: Node, pod: PodRequest, gpus: tuple[int, ...]) -> float:
        if node.gpus:
            return (node.used_gpu_milli + pod.gpu_total_milli) / (MILLI_PER_GPU * len(node.gpus))
        return (node.used_cpu + pod.cpu) / node.cpu


@dataclass(frozen=True)
class Spread:
    """Prefer the emptiest node: lowers interference and the blast radius of one node failing."""

    name: str = "spread"

    def __call__(self, node: Node, pod: PodRequest, gpus: tuple[int, ...]) -> float:
        return 1.0 - BinPack()(node, pod, gpus)


@dataclass(frozen=True)
class NvLink:
    """Prefer a node where the pod's GPUs share one NVLink group (matters from 2 GPUs up)."""

    name: str = "nvlink"

    def __call__(self, node: Node, pod: PodRequest, gpus: tuple[int, ...]) -> float:
        if len(gpus) < 2:
            return 1.0
        group = node.gpus[gpus[0]].nvlink_group
        return 1.0 if all(node.gpus[i].nvlink_group == group for i in gpus) else 0.0


@dataclass(frozen=True)
class GpuSparing:
    """Keep CPU-only pods off GPU nodes when CPU-only room exists elsewhere: idle GPUs stranded by a node
    whose CPU is gone are the commonest fragmentation in shared clusters."""

    name: str = "gpu-sparing"

    def __call__(self, node: Node, pod: PodRequest, gpus: tuple[int, ...]) -> float:
        if pod.gpus or not node.gpus:
            return 1.0
        return 1.0 - node.whole_free_gpus / len(node.gpus)


@dataclass(frozen=True)
class FitFailure:
    """Why a gang did not fit in a domain: how many nodes each filter turned away for the pod that failed."""

    pod: int
    nodes: int
    rejected_by: Counter[str]

    def describe(self) -> str:
        reasons = ", ".join(f"{count} {label}" for label, count in self.rejected_by.most_common())
        prefix = f"pod {self.pod}: " if self.pod else ""
        return f"{prefix}0/{self.nodes} nodes fit" + (f" ({reasons})" if reasons else "")


def place_gang(
    nodes: Sequence[Node],
    pod: PodRequest,
    pods: int,
    scorers: Sequence[tuple[Scorer, float]],
    *,
    pack_gpus: bool = True,
) -> list[Placement] | FitFailure:
    """Place ``pods`` identical pods on ``nodes``, all or none.

    Pods are placed one at a time on the best-scoring node, holding resources as they go so the next pod
    sees them, then everything is released again: the caller commits the result to the snapshot.
    """
    placements: list[Placement] = []
    held: list[Node] = []
    try:
        for index in range(pods):
            chosen = _best_node(
                nodes,
                pod,
                scorers,
                pack_gpus,
                remaining=pods - index,
                gang_nodes={p.node for p in placements},
            )
            if isinstance(chosen, Counter):
                return FitFailure(pod=index, nodes=len(nodes), rejected_by=chosen)
            node, gpus = chosen
            placement = Placement(
                pod=index,
                node=node.name,
                gpus=gpus,
                gpu_milli=pod.gpu_milli,
                gpu_memory_gib=pod.gpu_memory_gib,
                cpu=pod.cpu,
                memory_gib=pod.memory_gib,
            )
            node.hold(pod.cpu, pod.memory_gib, gpus, pod.gpu_milli, pod.gpu_memory_gib)
            placements.append(placement)
            held.append(node)
        return placements
    finally:
        for node, p in zip(held, placements, strict=True):
            node.release(p.cpu, p.memory_gib, p.gpus, p.gpu_milli, p.gpu_memory_gib)


def _best_node(
    nodes: Sequence[Node],
    pod: PodRequest,
    scorers: Sequence[tuple[Scorer, float]],
    pack_gpus: bool,
    remaining: int,
    gang_nodes: set[str],
) -> tuple[Node, tuple[int, ...]] | Counter[str]:
    rejected: Counter[str] = Counter()
    best: tuple[Node, tuple[int, ...]] | None = None
    best_score = float("-inf")
    for node in nodes:
        for label, accepts in FILTERS:
            if not accepts(node, pod):
                rejected[label] += 1
                break
        else:
            gpus = choose_gpus(node, pod, pack=pack_gpus)
            if gpus is None:
                rejected["insufficient GPUs"] += 1
                continue
            if not scorers:
                return node, gpus
            score = sum(weight * scorer(node, pod, gpus) for scorer, weight in scorers)
            if remaining > 1:
                score += GANG_LOCALITY_WEIGHT * min(1.0, pods_fitting(node, pod) / remaining)
            if node.name in gang_nodes:
                score += GANG_LOCALITY_WEIGHT
            if score > best_score:
                best, best_score = (node, gpus), score
    return best if best is not None else rejected
