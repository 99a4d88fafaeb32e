"""Score plugins: rank the nodes that passed the filters for one pod; higher is better.

A policy weights and sums them. Every scorer here is a function of the node's state, the pod and the GPUs
chosen for it, nothing else, so placement may keep nodes ranked per pod shape and rescore only the nodes
that changed (``corral.scheduling.ranking``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from corral.core.nodes import Node
from corral.core.units import MILLI_PER_GPU
from corral.core.workloads import PodRequest
from corral.scheduling.gpu_choice import GpuChoice, PackGpus


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
class Scoring:
    """How a policy ranks nodes for a pod: weighted scorers, the GPU choice inside a node, and whether
    equal scores are settled by a draw (as kube-scheduler does) or by node order."""

    scorers: tuple[tuple[Scorer, float], ...] = ()
    gpus: GpuChoice = PackGpus()
    random_ties: bool = False
