"""GPU fragmentation as FGD (Weng et al., ATC'23) measures it: idle GPU share the typical jobs cannot use.

A cluster's idle GPUs are only worth something if the jobs that usually arrive can use them. For a node
and a typical job shape m, the *fragment* is the idle milli-GPU m cannot use: all of it when m cannot run
on the node at all (too little CPU, too few GPUs with room, wrong model, or m needs no GPU), otherwise the
idle share of the GPUs with less room than m needs. A node's fragmentation is the popularity-weighted sum
over the typical shapes. Main memory and GPU memory are left out, as in the paper's artifact, so the
numbers compare with the published ones. See docs/research/fgd-artifact.md.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from corral.core.nodes import Node
from corral.core.workloads import PodRequest
from corral.scheduling.gpu_choice import choose_gpus, share_fits

EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class TypicalShape:
    """A job shape that arrives often, with the share of arrivals it stands for (weights sum to 1)."""

    cpu: float
    gpus: int
    gpu_milli: int
    models: frozenset[str] | None
    weight: float
    memory_gib: float = 0.0
    """Main memory the shape needs: 0 in FGD, which ignores memory; see ``typical_shapes``."""


def typical_shapes(
    pods: Iterable[PodRequest], coverage: float = 0.95, *, memory: bool = False
) -> tuple[TypicalShape, ...]:
    """The most frequent pod shapes that together cover ``coverage`` of ``pods``, weights renormalised.

    Shapes are (CPU, GPU count, per-GPU share, allowed models), as in FGD; ties in frequency keep
    first-seen order so the result is deterministic. With ``memory`` a shape also needs the median main
    memory of its pods: a node whose memory is gone strands its idle GPUs as surely as one whose CPU is.
    """
    groups: dict[tuple[float, int, int, frozenset[str] | None], list[float]] = {}
    for pod in pods:
        groups.setdefault((pod.cpu, pod.gpus, pod.gpu_milli, pod.models), []).append(pod.memory_gib)
    total = sum(len(members) for members in groups.values())
    if not total:
        return ()
    kept: list[tuple[tuple[float, int, int, frozenset[str] | None], list[float]]] = []
    covered = 0
    for shape, members in sorted(groups.items(), key=lambda item: -len(item[1])):
        if covered >= coverage * total:
            break
        kept.append((shape, members))
        covered += len(members)
    return tuple(
        TypicalShape(
            cpu=cpu,
            gpus=gpus,
            gpu_milli=milli,
            models=models,
            weight=len(members) / covered,
            memory_gib=statistics.median(members) if memory else 0.0,
        )
        for (cpu, gpus, milli, models), members in kept
    )


def shape_fragment(node: Node, shape: TypicalShape) -> int:
    """Idle milli-GPU of ``node`` that ``shape`` cannot use."""
    room = _Room(node.gpu_model, node.cpu - node.used_cpu, node.memory_gib - node.used_memory_gib)
    return _fragment(room, [g.free_milli for g in node.gpus], shape)


@dataclass(frozen=True, slots=True)
class _Room:
    model: str | None
    cpu: float
    memory_gib: float


def _fragment(room: _Room, free: Sequence[int], shape: TypicalShape) -> int:
    idle = sum(free)
    if not idle:
        return 0
    if shape.gpus == 0 or (shape.models is not None and room.model not in shape.models):
        return idle
    if room.cpu + EPSILON < shape.cpu or room.memory_gib + EPSILON < shape.memory_gib:
        return idle
    roomy = sum(1 for f in free if f >= shape.gpu_milli)
    if roomy < shape.gpus:
        return idle
    return sum(f for f in free if f < shape.gpu_milli)


def node_fragmentation(node: Node, shapes: Iterable[TypicalShape]) -> float:
    """Expected idle milli-GPU of ``node`` that the next typical job could not use."""
    return sum(shape.weight * shape_fragment(node, shape) for shape in shapes)


class FragmentationModel:
    """Node fragmentation for node states, remembered: a cluster has far fewer states than placements.

    A state is (GPU model, free CPU, free milli-GPU per GPU in any order); fragmentation does not depend on
    which GPU is which.
    """

    def __init__(self, shapes: tuple[TypicalShape, ...]) -> None:
        self.shapes = shapes
        self._known: dict[tuple[str | None, float, tuple[int, ...]], float] = {}

    def of(self, room: _Room, free: Sequence[int]) -> float:
        key = (room.model, round(room.cpu, 6), round(room.memory_gib, 6), tuple(sorted(free)))
        known = self._known.get(key)
        if known is None:
            if len(self._known) >= MAX_REMEMBERED_STATES:
                self._known.clear()
            known = self._known[key] = self._compute(room, free)
        return known

    def _compute(self, room: _Room, free: Sequence[int]) -> float:
        """``sum(weight * _fragment(...))`` over the shapes, in the same order (so the same float), with
        each GPU-share threshold's counts worked out once rather than once per shape."""
        idle = sum(free)
        if not idle:
            return 0.0
        by_threshold: dict[int, tuple[int, int]] = {}
        total = 0
        for shape in self.shapes:
            fragment = idle
            if (
                shape.gpus
                and (shape.models is None or room.model in shape.models)
                and room.cpu + EPSILON >= shape.cpu
                and room.memory_gib + EPSILON >= shape.memory_gib
            ):
                counts = by_threshold.get(shape.gpu_milli)
                if counts is None:
                    roomy = sum(1 for f in free if f >= shape.gpu_milli)
                    counts = by_threshold[shape.gpu_milli] = (
                        roomy,
                        sum(f for f in free if f < shape.gpu_milli),
                    )
                if counts[0] >= shape.gpus:
                    fragment = counts[1]
            total += shape.weight * fragment
        return total

    def growth(self, node: Node, pod: PodRequest, gpus: tuple[int, ...]) -> float:
        """How much the node's fragmentation grows if ``pod`` takes ``gpus`` (negative: it shrinks)."""
        free = [g.free_milli for g in node.gpus]
        cpu, memory = node.cpu - node.used_cpu, node.memory_gib - node.used_memory_gib
        before = self.of(_Room(node.gpu_model, cpu, memory), free)
        for index in gpus:
            free[index] -= pod.gpu_milli
        return self.of(_Room(node.gpu_model, cpu - pod.cpu, memory - pod.memory_gib), free) - before


MAX_REMEMBERED_STATES = 500_000


def gradient_score(growth: float) -> int:
    """FGD's score: 0..100, 50 when fragmentation does not change, truncated to an integer as in the
    paper's artifact (so growths within about 40 milli-GPU of each other tie)."""
    return int(100 / (1 + math.exp(growth / 1000)))


@dataclass(frozen=True)
class FragmentationGradient:
    """FGD's score plugin: the node where placing the pod grows fragmentation least."""

    model: FragmentationModel = field(compare=False)
    name: str = "fgd"

    def __call__(self, node: Node, pod: PodRequest, gpus: tuple[int, ...]) -> float:
        return gradient_score(self.model.growth(node, pod, gpus))


@dataclass(frozen=True)
class LeastFragmentingGpu:
    """FGD's GPU choice: a share goes to the GPU whose use grows the node's fragmentation least (by
    FGD's integer score, first GPU on ties); whole GPUs are the first free ones."""

    model: FragmentationModel = field(compare=False)
    name: str = "fgd"
    pure: bool = True

    def __call__(self, node: Node, pod: PodRequest, rng: random.Random) -> tuple[int, ...] | None:
        if not pod.fractional:
            return choose_gpus(node, pod)
        best: tuple[int, ...] | None = None
        best_score = -1
        for gpu in node.gpus:
            if share_fits(gpu, pod):
                score = gradient_score(self.model.growth(node, pod, (gpu.index,)))
                if score > best_score:
                    best, best_score = (gpu.index,), score
        return best


def fragmentation_rate(nodes: Iterable[Node], shapes: tuple[TypicalShape, ...]) -> float:
    """Fragmented share of all idle GPU, in [0, 1]; 0 when nothing is idle."""
    fragmented = 0.0
    idle = 0
    for node in nodes:
        if node.up:
            fragmented += node_fragmentation(node, shapes)
            idle += sum(gpu.free_milli for gpu in node.gpus)
    return fragmented / idle if idle else 0.0
