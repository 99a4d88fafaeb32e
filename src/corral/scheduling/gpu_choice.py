"""Which GPUs of a node a pod gets: part of placement, and a policy's choice.

Whole GPUs come from one NVLink group when one has room. For a GPU share the policy decides: the fullest
GPU that still fits (packing), the emptiest (spreading), any at random, or the one that leaves the node
least fragmented (``corral.scheduling.fragmentation``). A chooser is ``pure`` when its answer depends only
on the node's state, so placement may remember it per node state.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from corral.core.nodes import Gpu, Node
from corral.core.units import MILLI_PER_GPU
from corral.core.workloads import PodRequest

EPSILON = 1e-9


def share_fits(gpu: Gpu, pod: PodRequest) -> bool:
    """Whether one GPU has the share and GPU memory ``pod`` asks for."""
    return (
        gpu.healthy
        and gpu.used_milli + pod.gpu_milli <= MILLI_PER_GPU
        and gpu.used_memory_gib + pod.gpu_memory_gib <= gpu.memory_gib + EPSILON
    )


def choose_gpus(node: Node, pod: PodRequest, *, pack: bool = True) -> tuple[int, ...] | None:
    """The GPUs of ``node`` this pod should use, or None if it cannot have any.

    Whole GPUs: the smallest NVLink group that can hold all of them (keeps big groups whole for big
    jobs), else the fewest groups, fullest first. A share: the GPU with the least room that still fits
    (``pack``) or the most room (spread); the first such GPU on equal room.
    """
    if pod.gpus == 0:
        return ()
    if pod.fractional:
        best = None
        best_key = 0
        for gpu in node.gpus:
            if share_fits(gpu, pod):
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


class GpuChoice(Protocol):
    """Picks the GPUs for one pod on one node that passed the filters; None when none can take it."""

    name: str
    pure: bool

    def __call__(self, node: Node, pod: PodRequest, rng: random.Random) -> tuple[int, ...] | None: ...


@dataclass(frozen=True)
class PackGpus:
    """A share goes to the fullest GPU it fits on: keeps whole GPUs free for whole-GPU jobs."""

    name: str = "pack"
    pure: bool = True

    def __call__(self, node: Node, pod: PodRequest, rng: random.Random) -> tuple[int, ...] | None:
        return choose_gpus(node, pod, pack=True)


@dataclass(frozen=True)
class SpreadGpus:
    """A share goes to the emptiest GPU: less interference between co-located shares."""

    name: str = "spread"
    pure: bool = True

    def __call__(self, node: Node, pod: PodRequest, rng: random.Random) -> tuple[int, ...] | None:
        return choose_gpus(node, pod, pack=False)


@dataclass(frozen=True)
class RandomGpu:
    """A share goes to any GPU it fits on, uniformly (the Random baseline of the FGD paper)."""

    name: str = "random"
    pure: bool = False

    def __call__(self, node: Node, pod: PodRequest, rng: random.Random) -> tuple[int, ...] | None:
        if not pod.fractional:
            return choose_gpus(node, pod)
        fitting = [gpu.index for gpu in node.gpus if share_fits(gpu, pod)]
        return (rng.choice(fitting),) if fitting else None
