"""Placement: filter plugins say which nodes can hold a pod, score plugins rank them, a gang places
all its pods or none.

Filters run cheapest first and each names the reason it rejects a node, so a pending job can be told
"0/12 nodes fit: 9 insufficient GPUs, 3 down", as kube-scheduler does. GPU choice inside a node is part of
placement, not an afterthought: whole GPUs come from one NVLink group when one has room, and shares are
packed onto the fullest GPU that still fits.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from corral.core.nodes import Node
from corral.core.units import MILLI_PER_GPU
from corral.core.workloads import PodRequest
from corral.scheduling.decisions import Placement
from corral.scheduling.gpu_choice import share_fits
from corral.scheduling.scorers import Scoring

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
    return pod.gpu_memory_gib == 0 or any(share_fits(gpu, pod) for gpu in node.gpus)


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


@dataclass(frozen=True)
class FitFailure:
    """Why a gang did not fit in a domain: how many nodes each filter turned away for the pod that failed."""

    pod: int
    nodes: int
    rejected_by: Counter[str]

    def describe(self) -> str:
        reasons = ", ".join(f"{count} {label}" for label, count in self.rejected_by.most_common())
        # A gang's later pod fails where its earlier pods took the room: the limit is how many fit at once.
        prefix = (
            f"only {self.pod} pod{'s' if self.pod > 1 else ''} fit at once; pod {self.pod}: "
            if self.pod
            else ""
        )
        return f"{prefix}0/{self.nodes} nodes fit" + (f" ({reasons})" if reasons else "")


def largest_free_block(nodes: Sequence[Node]) -> str:
    """The most whole idle GPUs on one node that is up, with its CPU and memory: what a user asks for
    to start now. Said as ``largest free block: 3 GPUs, 20 CPU, 96 GiB on p-1``."""
    best: Node | None = None
    for node in nodes:
        if node.up and (best is None or node.whole_free_gpus > best.whole_free_gpus):
            best = node
    if best is None:
        return "no node is up"
    if best.whole_free_gpus == 0:
        return "no whole GPU is free on any node"
    return (
        f"largest free block: {best.whole_free_gpus} GPU{'s' if best.whole_free_gpus > 1 else ''}, "
        f"{best.cpu - best.used_cpu:g} CPU, "
        f"{best.memory_gib - best.used_memory_gib:g} GiB on {best.name}"
    )


def evaluate(node: Node, pod: PodRequest, scoring: Scoring, rng: random.Random) -> Evaluation | str:
    """One pod on one node: the GPUs it would get and the node's score, or the label of the filter that
    turned the node away."""
    for label, accepts in FILTERS:
        if not accepts(node, pod):
            return label
    gpus = scoring.gpus(node, pod, rng)
    if gpus is None:
        return "insufficient GPUs"
    return Evaluation(sum(weight * scorer(node, pod, gpus) for scorer, weight in scoring.scorers), gpus)


@dataclass(frozen=True, slots=True)
class Evaluation:
    score: float
    gpus: tuple[int, ...]


def placement_of(index: int, node: Node, pod: PodRequest, gpus: tuple[int, ...]) -> Placement:
    return Placement(
        pod=index,
        node=node.name,
        gpus=gpus,
        gpu_milli=pod.gpu_milli,
        gpu_memory_gib=pod.gpu_memory_gib,
        cpu=pod.cpu,
        memory_gib=pod.memory_gib,
    )


def place_gang(
    nodes: Sequence[Node],
    pod: PodRequest,
    pods: int,
    scoring: Scoring,
    rng: random.Random | None = None,
) -> list[Placement] | FitFailure:
    """Place ``pods`` identical pods on ``nodes``, all or none, scanning every node for each pod.

    Pods are placed one at a time on the best-scoring node, holding resources as they go so the next pod
    sees them, then everything is released again: the caller commits the result to the snapshot. Equal
    scores go to the first node, or to one drawn at random when the policy says so.
    """
    rng = rng or random.Random(0)
    placements: list[Placement] = []
    held: list[Node] = []
    try:
        for index in range(pods):
            chosen = _best_node(
                nodes, pod, scoring, rng, remaining=pods - index, gang_nodes={p.node for p in placements}
            )
            if isinstance(chosen, Counter):
                return FitFailure(pod=index, nodes=len(nodes), rejected_by=chosen)
            node, gpus = chosen
            node.hold(pod.cpu, pod.memory_gib, gpus, pod.gpu_milli, pod.gpu_memory_gib)
            placements.append(placement_of(index, node, pod, gpus))
            held.append(node)
        return placements
    finally:
        for node, p in zip(held, placements, strict=True):
            node.release(p.cpu, p.memory_gib, p.gpus, p.gpu_milli, p.gpu_memory_gib)


def _best_node(
    nodes: Sequence[Node],
    pod: PodRequest,
    scoring: Scoring,
    rng: random.Random,
    remaining: int,
    gang_nodes: set[str],
) -> tuple[Node, tuple[int, ...]] | Counter[str]:
    rejected: Counter[str] = Counter()
    best: tuple[Node, tuple[int, ...]] | None = None
    best_score = float("-inf")
    ties = 0
    first_fit = not scoring.scorers and not scoring.random_ties
    for node in nodes:
        outcome = evaluate(node, pod, scoring, rng)
        if isinstance(outcome, str):
            rejected[outcome] += 1
            continue
        if first_fit:
            return node, outcome.gpus
        score = outcome.score
        if remaining > 1:
            score += GANG_LOCALITY_WEIGHT * min(1.0, pods_fitting(node, pod) / remaining)
        if node.name in gang_nodes:
            score += GANG_LOCALITY_WEIGHT
        if score > best_score:
            best, best_score, ties = (node, outcome.gpus), score, 1
        elif score == best_score and scoring.random_ties:
            ties += 1
            if rng.randrange(ties) == 0:
                best = (node, outcome.gpus)
    return best if best is not None else rejected
