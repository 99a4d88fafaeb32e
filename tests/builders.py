"""Small builders for scheduler unit tests: pools, clusters, snapshots, jobs and running allocations.

Import them as ``from builders import ...``: ``tests/conftest.py`` puts this folder on ``sys.path``, so
that works however pytest is started from the repository root (``python -m pytest``, ``pytest tests/x.py``,
``--import-mode=importlib``).

Defaults describe one private cluster ``c`` whose nodes have 8 x A100 (80 GiB each), 64 CPU, 512 GiB;
jobs default to one pod of one whole GPU and no CPU or memory, so only GPUs matter unless a test says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from corral.backends.pods import DesiredPod
from corral.core.cluster import ClusterSpec, NodeTemplate, ObjectStoreSpec, PoolSpec
from corral.core.nodes import Node, build_initial_nodes, build_node
from corral.core.queues import QueueSpec
from corral.core.workloads import Workload
from corral.scheduling.decisions import Placement
from corral.scheduling.placement import place_gang
from corral.scheduling.scorers import Scoring
from corral.scheduling.snapshot import Allocation, Snapshot
from corral.spec.job import JobSpec

NVLINK_2X4 = [[0, 1, 2, 3], [4, 5, 6, 7]]
"""The usual 8-GPU NVLink layout: two groups of four."""


def make_template(
    gpus: int = 8,
    model: str | None = "A100",
    cpu: float = 64,
    mem: float = 512,
    gpu_mem: float = 80,
    nvlink: list[list[int]] | None = None,
) -> NodeTemplate:
    return NodeTemplate(
        cpu=cpu,
        memory_gib=mem,
        gpus=gpus,
        gpu_model=model if gpus else None,
        gpu_memory_gib=gpu_mem if gpus else 0.0,
        nvlink_groups=nvlink,
    )


def make_pool(
    name: str = "p",
    flavor: str = "f",
    count: int = 1,
    gpus: int = 8,
    model: str | None = "A100",
    cpu: float = 64,
    mem: float = 512,
    nvlink: list[list[int]] | None = None,
    tier: str = "silver",
    cost: float = 0.0,
    gpu_mem: float = 80,
    max_count: int | None = None,
) -> PoolSpec:
    """A pool of ``count`` identical nodes named ``{name}-0`` ... (``max_count`` makes it elastic)."""
    return PoolSpec(
        name=name,
        flavor=flavor,
        tier=tier,
        gpu_hour_cost=cost,
        count=count,
        max_count=max_count,
        node=make_template(gpus=gpus, model=model, cpu=cpu, mem=mem, gpu_mem=gpu_mem, nvlink=nvlink),
    )


def make_cluster(
    name: str = "c",
    pools: Sequence[PoolSpec] = (),
    private: bool = True,
    object_store: ObjectStoreSpec | None = None,
) -> ClusterSpec:
    return ClusterSpec(name=name, private=private, pools=list(pools), object_store=object_store)


def make_queue(
    name: str = "a",
    quota: dict[str, float] | None = None,
    cohort: str | None = None,
    borrowing_limit: dict[str, float] | None = None,
    weight: float = 1.0,
) -> QueueSpec:
    return QueueSpec(
        name=name, cohort=cohort, quota=quota or {}, borrowing_limit=borrowing_limit, weight=weight
    )


def make_snapshot(
    pools: Sequence[PoolSpec] | None = None,
    queues: Sequence[QueueSpec] | None = None,
    private: bool = True,
    clusters: Sequence[ClusterSpec] | None = None,
) -> Snapshot:
    """A snapshot of empty, up nodes: ``clusters`` as given, else one cluster ``c`` holding ``pools``.

    ``queues=None`` means no quota at all (every queue unlimited), as in the scenario format.
    """
    if clusters is None:
        clusters = [make_cluster("c", pools if pools is not None else [make_pool()], private=private)]
    return Snapshot(clusters, build_initial_nodes(list(clusters)), queues)


def make_nodes(
    count: int = 1, pool: str = "n", flavor: str = "f", private: bool = True, **template: Any
) -> list[Node]:
    """Live nodes ``{pool}-0`` ... built from ``make_template(**template)``, for placement tests."""
    spec = PoolSpec(name=pool, flavor=flavor, count=count, node=make_template(**template))
    cluster = make_cluster("c", [spec], private=private)
    return [build_node(cluster, spec, i) for i in range(count)]


def make_node(**template: Any) -> Node:
    """One live node ``n-0``; keyword arguments as ``make_template``."""
    return make_nodes(1, **template)[0]


def use_gpu(node: Node, index: int, milli: int = 1000, mem: float = 0.0) -> Node:
    """Mark ``milli`` of GPU ``index`` (and ``mem`` GiB of its memory) as used, as a running pod would."""
    node.hold(0.0, 0.0, (index,), milli, mem)
    return node


def fail_gpu(node: Node, index: int) -> Node:
    """Mark GPU ``index`` unhealthy (and refresh the node's counters, as the engine does)."""
    node.gpus[index].healthy = False
    node.refresh_gpu_counters()
    return node


def job(
    id: str,
    queue: str = "a",
    gpus: int = 1,
    pods: int = 1,
    milli: int = 1000,
    priority: int = 0,
    cpu: float = 0.0,
    mem: float = 0.0,
    gpu_mem: float = 0.0,
    model: str | None = None,
    submit: float = 0.0,
    duration: float = 100.0,
    **fields: Any,
) -> Workload:
    """A workload of ``pods`` pods x ``gpus`` GPUs (``milli`` < 1000: a share of one GPU)."""
    return Workload(
        id=id,
        queue=queue,
        gpus_per_pod=gpus,
        pods=pods,
        gpu_milli=milli if gpus else 0,
        priority=priority,
        cpu=cpu,
        memory_gib=mem,
        gpu_memory_gib=gpu_mem,
        gpu_model=model,
        submit=submit,
        duration=duration,
        **fields,
    )


def run_job(
    snapshot: Snapshot,
    workload: Workload,
    nodes: str | Iterable[str] | None = None,
    *,
    gpus: Sequence[tuple[int, ...]] | None = None,
    started_at: float = 0.0,
    progress: float = 0.0,
) -> Allocation:
    """Make ``workload`` a running job of ``snapshot`` (committed, as if started in an earlier round).

    ``nodes`` limits where it goes (first fit, in that order); ``gpus`` fixes the GPUs of each pod, all on
    the single node named by ``nodes``. The node's cluster and flavor become the allocation's domain.
    """
    names = [nodes] if isinstance(nodes, str) else list(nodes) if nodes is not None else list(snapshot.nodes)
    candidates = [snapshot.nodes[n] for n in names]
    pod = workload.pod
    if gpus is not None:
        [node] = candidates
        placements: list[Placement] | object = [
            Placement(i, node.name, tuple(g), pod.gpu_milli, pod.gpu_memory_gib, pod.cpu, pod.memory_gib)
            for i, g in enumerate(gpus)
        ]
    else:
        placements = place_gang(candidates, pod, workload.pods, Scoring())
    assert isinstance(placements, list), f"test setup: {workload.id} does not fit: {placements}"
    first = snapshot.nodes[placements[0].node]
    allocation = Allocation(
        workload=workload,
        cluster=first.cluster,
        flavor=first.flavor,
        placements=tuple(placements),
        started_at=started_at,
        progress_at_start=progress,
    )
    snapshot.allocate(allocation)
    snapshot.commit()
    return allocation


def node_state(snapshot: Snapshot) -> dict[str, Any]:
    """Everything a round could change, as plain values: per-node and per-GPU usage, running jobs, quota use.

    Counters are compared without their zero entries (reading a defaultdict is not a change).
    """
    return {
        "nodes": {
            name: (
                n.used_cpu,
                n.used_memory_gib,
                n.whole_free_gpus,
                n.used_gpu_milli,
                tuple((g.used_milli, g.used_memory_gib, g.healthy) for g in n.gpus),
            )
            for name, n in snapshot.nodes.items()
        },
        "running": dict(snapshot.running),
        "queue_gpu": {k: v for k, v in snapshot.queue_gpu.items() if v},
        "queue_cpu": {k: v for k, v in snapshot.queue_cpu.items() if v},
        "cohort_gpu": {k: v for k, v in snapshot.cohort_gpu.items() if v},
        "priorities": {k: dict(v) for k, v in snapshot.priorities.items() if v},
    }


def gpus_of(result_start: Any) -> dict[str, list[tuple[int, ...]]]:
    """{node: [gpus of each pod there]} of a ``Start`` decision."""
    where: dict[str, list[tuple[int, ...]]] = {}
    for p in result_start.placements:
        where.setdefault(p.node, []).append(p.gpus)
    return where


@dataclass(frozen=True)
class TextLog:
    """A pod's output held in memory (a ``corral.logs.LogSource``), for routes that read logs."""

    data: bytes
    kept_from: int = 0

    @property
    def length(self) -> int:
        return len(self.data)

    def read(self, start: int, stop: int) -> bytes:
        return self.data[start:stop]


def make_desired_pod(
    job_id: str, spec: dict[str, Any], tenant: str = "default", node: str = "n"
) -> DesiredPod:
    """Pod 0 of attempt 1 of a job of ``spec`` with no GPU: what a ``PodRunner`` is asked to run."""
    return DesiredPod(
        job_id=job_id,
        attempt=1,
        pod=0,
        node=node,
        gpus=(),
        gpu_milli=0,
        gpu_memory_gib=0.0,
        cpu=1.0,
        memory_gib=1.0,
        spec=JobSpec.model_validate({"name": "pod"} | spec),
        tenant=tenant,
    )
