"""Live nodes and GPUs: declared capacity plus what is allocated now and whether it is healthy.

Nodes keep running totals (free CPU, memory, whole free GPUs, the largest free GPU share) so a filter can
reject a node in O(1) before looking at its GPUs: placement touches every candidate node for every pod,
so these counters are the difference between a toy and a scheduler for 10,000 nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.core.cluster import ClusterSpec, PoolSpec
from corral.core.units import MILLI_PER_GPU


@dataclass(slots=True)
class Gpu:
    index: int
    nvlink_group: int
    memory_gib: float
    healthy: bool = True
    used_milli: int = 0
    used_memory_gib: float = 0.0

    @property
    def idle(self) -> bool:
        return self.used_milli == 0 and self.used_memory_gib == 0

    @property
    def free_milli(self) -> int:
        return MILLI_PER_GPU - self.used_milli if self.healthy else 0


@dataclass(slots=True)
class Node:
    name: str
    cluster: str
    pool: str
    flavor: str
    private: bool
    gpu_model: str | None
    cpu: float
    memory_gib: float
    gpus: list[Gpu]
    gpu_hour_cost: float = 0.0
    up: bool = True
    used_cpu: float = 0.0
    used_memory_gib: float = 0.0
    whole_free_gpus: int = field(default=0)
    used_gpu_milli: int = field(default=0)
    max_free_share: int = field(default=0)
    nvlink: bool = field(default=False)
    idle_since: float | None = None
    """When the node last became empty (set by the caller that applies decisions); None while in use."""
    gpu_pods: dict[int, int] = field(default_factory=dict, init=False)
    """GPU pods running here by kind: 0 for a GPU share, k for k whole GPUs (GPU-clustering scores it)."""
    version: int = field(default=0, init=False)
    """Bumped by every change of usage or health: a cached score of this node is valid while it holds."""
    _hardware: tuple[object, ...] = field(default=(), init=False, repr=False, compare=False)
    interned: tuple[int, int] = field(default=(-1, -1), init=False, repr=False, compare=False)
    """(version, id) of this node's state in its snapshot's table of states (``Snapshot.state_id``)."""

    def __post_init__(self) -> None:
        self.nvlink = len({g.nvlink_group for g in self.gpus}) < len(self.gpus)
        self._hardware = (
            self.gpu_model,
            self.cpu,
            self.memory_gib,
            tuple((g.nvlink_group, g.memory_gib) for g in self.gpus),
        )
        self.refresh_gpu_counters()

    def state_key(self) -> tuple[object, ...]:
        """Hardware plus current usage and health: two nodes with equal keys score alike for any pod.

        Lets placement score a node state once, not once per node: 10,000 empty nodes of five kinds are
        five evaluations.
        """
        usage = tuple((g.used_milli, g.used_memory_gib, g.healthy) for g in self.gpus)
        pods = tuple(sorted(self.gpu_pods.items()))
        return (self._hardware, self.up, self.used_cpu, self.used_memory_gib, usage, pods)

    @property
    def empty(self) -> bool:
        return self.used_gpu_milli == 0 and abs(self.used_cpu) < 1e-9 and abs(self.used_memory_gib) < 1e-9

    def refresh_gpu_counters(self) -> None:
        """Recompute the per-node GPU counters after GPU usage or health changed."""
        self.version += 1
        self.whole_free_gpus = sum(1 for g in self.gpus if g.healthy and g.idle)
        self.used_gpu_milli = sum(g.used_milli for g in self.gpus)
        self.max_free_share = max((g.free_milli for g in self.gpus), default=0)

    def hold(
        self, cpu: float, memory_gib: float, gpus: tuple[int, ...], gpu_milli: int, gpu_memory_gib: float
    ) -> None:
        """Take resources for one pod; ``release`` with the same arguments gives them back."""
        self.version += 1
        self.used_cpu = _snap(self.used_cpu + cpu)
        self.used_memory_gib = _snap(self.used_memory_gib + memory_gib)
        for index in gpus:
            gpu = self.gpus[index]
            gpu.used_milli += gpu_milli
            gpu.used_memory_gib = _snap(gpu.used_memory_gib + gpu_memory_gib)
        if gpus and gpu_milli:
            kind = len(gpus) if abs(gpu_milli) >= MILLI_PER_GPU else 0
            count = self.gpu_pods.get(kind, 0) + (1 if gpu_milli > 0 else -1)
            if count:
                self.gpu_pods[kind] = count
            else:
                self.gpu_pods.pop(kind, None)
        if gpus:
            self.refresh_gpu_counters()

    def release(
        self, cpu: float, memory_gib: float, gpus: tuple[int, ...], gpu_milli: int, gpu_memory_gib: float
    ) -> None:
        self.hold(-cpu, -memory_gib, gpus, -gpu_milli, -gpu_memory_gib)


def _snap(value: float) -> float:
    """Round float dust to zero: 0.1 + 0.2 - 0.1 - 0.2 must leave a GPU idle, not 2.8e-17 GiB busy."""
    return 0.0 if abs(value) < 1e-9 else value


def build_node(cluster: ClusterSpec, pool: PoolSpec, index: int) -> Node:
    """Make node ``{pool}-{index}`` from its pool's template, empty and up."""
    template = pool.node
    groups = template.nvlink_group_of()
    gpus = [
        Gpu(index=i, nvlink_group=groups[i], memory_gib=template.gpu_memory_gib) for i in range(template.gpus)
    ]
    return Node(
        name=f"{pool.name}-{index}",
        cluster=cluster.name,
        pool=pool.name,
        flavor=pool.flavor,
        private=cluster.private,
        gpu_model=template.gpu_model,
        cpu=template.cpu,
        memory_gib=template.memory_gib,
        gpus=gpus,
        gpu_hour_cost=pool.gpu_hour_cost,
    )


def build_initial_nodes(clusters: list[ClusterSpec]) -> list[Node]:
    """All nodes present at time 0 (``count`` per pool), in file order."""
    return [
        build_node(cluster, pool, i)
        for cluster in clusters
        for pool in cluster.pools
        for i in range(pool.count)
    ]
