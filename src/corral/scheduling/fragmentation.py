"""GPU fragmentation as FGD (Weng et al., ATC'23) measures it: idle GPU share the typical jobs cannot use.

A cluster's idle GPUs are only worth something if the jobs that usually arrive can use them. For a node
and a typical job shape m, the *fragment* is the idle milli-GPU m cannot use: all of it when m cannot run
on the node at all (too little CPU, too few GPUs with room, wrong model, or m needs no GPU), otherwise the
idle share of the GPUs with less room than m needs. A node's fragmentation is the popularity-weighted sum
over the typical shapes. Main memory and GPU memory are left out, as in the paper's artifact, so the
numbers compare with the published ones. See docs/research/fgd-artifact.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from corral.core.nodes import Node
from corral.core.workloads import PodRequest

EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class TypicalShape:
    """A job shape that arrives often, with the share of arrivals it stands for (weights sum to 1)."""

    cpu: float
    gpus: int
    gpu_milli: int
    models: frozenset[str] | None
    weight: float


def typical_shapes(pods: Iterable[PodRequest], coverage: float = 0.95) -> tuple[TypicalShape, ...]:
    """The most frequent pod shapes that together cover ``coverage`` of ``pods``, weights renormalised.

    Shapes are (CPU, GPU count, per-GPU share, allowed models); ties in frequency keep first-seen order so
    the result is deterministic.
    """
    counts: Counter[tuple[float, int, int, frozenset[str] | None]] = Counter(
        (pod.cpu, pod.gpus, pod.gpu_milli, pod.models) for pod in pods
    )
    total = sum(counts.values())
    if not total:
        return ()
    kept: list[tuple[tuple[float, int, int, frozenset[str] | None], int]] = []
    covered = 0
    for shape, count in counts.most_common():
        if covered >= coverage * total:
            break
        kept.append((shape, count))
        covered += count
    return tuple(
        TypicalShape(cpu=cpu, gpus=gpus, gpu_milli=milli, models=models, weight=count / covered)
        for (cpu, gpus, milli, models), count in kept
    )


def shape_fragment(node: Node, shape: TypicalShape) -> int:
    """Idle milli-GPU of ``node`` that ``shape`` cannot use."""
    free = [gpu.free_milli for gpu in node.gpus]
    idle = sum(free)
    if not idle:
        return 0
    if shape.gpus == 0 or (shape.models is not None and node.gpu_model not in shape.models):
        return idle
    if node.cpu - node.used_cpu + EPSILON < shape.cpu:
        return idle
    roomy = sum(1 for f in free if f >= shape.gpu_milli)
    if roomy < shape.gpus:
        return idle
    return sum(f for f in free if f < shape.gpu_milli)


def node_fragmentation(node: Node, shapes: Iterable[TypicalShape]) -> float:
    """Expected idle milli-GPU of ``node`` that the next typical job could not use."""
    return sum(shape.weight * shape_fragment(node, shape) for shape in shapes)


def fragmentation_rate(nodes: Iterable[Node], shapes: tuple[TypicalShape, ...]) -> float:
    """Fragmented share of all idle GPU, in [0, 1]; 0 when nothing is idle."""
    fragmented = 0.0
    idle = 0
    for node in nodes:
        if node.up:
            fragmented += node_fragmentation(node, shapes)
            idle += sum(gpu.free_milli for gpu in node.gpus)
    return fragmented / idle if idle else 0.0
