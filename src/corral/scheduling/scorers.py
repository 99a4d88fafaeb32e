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


# -- the baselines of the FGD paper (Weng et al., ATC'23), scored as its artifact scores them ----------
# Integer scores in 0..100 computed from milli-CPU and milli-GPU against fixed maximum node specs, so
# they tie as often as the published runs do; see docs/research/fgd-artifact-policies.md.

MAX_SPEC_MILLI_CPU = 128_000
MAX_SPEC_MILLI_GPU = 8_000
DEFAULT_MILLI_CPU = 100
"""A pod asking no CPU is scored as asking 100m, as kube-scheduler's non-zero requests do."""


def _milli_cpu_left(node: Node) -> int:
    return round((node.cpu - node.used_cpu) * 1000)


def _milli_cpu_asked(pod: PodRequest) -> int:
    return round(pod.cpu * 1000) or DEFAULT_MILLI_CPU


def _milli_gpu_left(node: Node) -> int:
    return sum(gpu.free_milli for gpu in node.gpus)


@dataclass(frozen=True)
class BestFit:
    """The node left with the least CPU and GPU after the pod (equal weights, against max node specs)."""

    name: str = "best-fit"

    def __call__(self, node: Node, pod: PodRequest, gpus: tuple[int, ...]) -> float:
        left = (_milli_cpu_left(node) - _milli_cpu_asked(pod)) / MAX_SPEC_MILLI_CPU * 0.5
        left += (_milli_gpu_left(node) - pod.gpu_total_milli) / MAX_SPEC_MILLI_GPU * 0.5
        return int((1.0 - left) * 100)


@dataclass(frozen=True)
class DotProduct:
    """Tetris: the node whose free (CPU, GPU) vector aligns least with the pod's request."""

    name: str = "dot-product"

    def __call__(self, node: Node, pod: PodRequest, gpus: tuple[int, ...]) -> float:
        free = (_milli_cpu_left(node) / MAX_SPEC_MILLI_CPU, _milli_gpu_left(node) / MAX_SPEC_MILLI_GPU)
        asked = (_milli_cpu_asked(pod) / MAX_SPEC_MILLI_CPU, pod.gpu_total_milli / MAX_SPEC_MILLI_GPU)
        return int(100 * (1 - (free[0] * asked[0] + free[1] * asked[1]) / 2))


@dataclass(frozen=True)
class GpuPacking:
    """Shares onto partly used GPUs first, then free GPUs of used nodes, then idle nodes, smallest first."""

    name: str = "gpu-packing"

    def __call__(self, node: Node, pod: PodRequest, gpus: tuple[int, ...]) -> float:
        if not pod.gpus:
            return 0
        idle = node.whole_free_gpus
        if idle == len(node.gpus):
            return max(33 - idle, idle)
        by_room = sorted((gpu.free_milli for gpu in node.gpus), key=int)
        chosen = [left for left in by_room if left >= pod.gpu_milli][: pod.gpus]
        fresh = sum(1 for left in chosen if left == MILLI_PER_GPU)
        if fresh:
            return max(50 - fresh, 33)
        return max(100 - sum(left * 100 // MILLI_PER_GPU for left in chosen) // 10, 50)


@dataclass(frozen=True)
class GpuClustering:
    """Pods asking the same GPU size go together; within a band, fuller nodes first."""

    name: str = "gpu-clustering"

    def __call__(self, node: Node, pod: PodRequest, gpus: tuple[int, ...]) -> float:
        if not pod.gpus:
            return 0
        base = 25 * (MAX_SPEC_MILLI_GPU - _milli_gpu_left(node)) // MAX_SPEC_MILLI_GPU
        kind = 0 if pod.fractional else pod.gpus
        if kind in node.gpu_pods:
            return base + (75 if len(node.gpu_pods) == 1 else 50)
        return base + (25 if not node.gpu_pods else 0)
