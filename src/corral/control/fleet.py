"""The nodes a round schedules onto: the cluster file's, plus the machines agents registered.

A registered name the cluster file already declares keeps its declared shape (the file is the admin's
word) and takes only its GPUs' health from the agent; a new name becomes a node of its own, in the pool
and cluster the agent named (made up from the node's shape when the file has no such pool).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from corral.api_models import NodeRegistration
from corral.core.cluster import ClusterSpec, NodeTemplate, PoolSpec
from corral.core.nodes import Gpu, Node, build_initial_nodes
from corral.core.units import MILLI_PER_GPU
from corral.errors import CorralError


class RegistrationConflict(CorralError):
    """An agent's report contradicts the cluster file's declaration of the same node."""


def fleet(
    clusters: Sequence[ClusterSpec], registrations: Mapping[str, NodeRegistration]
) -> tuple[list[ClusterSpec], list[Node]]:
    """Clusters (with made-up pools for registered machines) and every node, GPU health applied.

    A pool's ``count`` includes the machines registered into it, so "could this ever fit?" sees them."""
    declared = build_initial_nodes(list(clusters))
    by_name = {node.name: node for node in declared}
    pools: dict[str, dict[str, PoolSpec]] = {c.name: {p.name: p for p in c.pools} for c in clusters}
    privacy = {c.name: c.private for c in clusters}
    added: list[Node] = []
    for name, registration in sorted(registrations.items()):
        node = by_name.get(name)
        if node is not None:
            for gpu, report in zip(node.gpus, registration.gpus, strict=False):
                gpu.healthy = report.healthy
            node.refresh_gpu_counters()
            continue
        pool = pools.setdefault(registration.cluster, {}).setdefault(
            registration.pool_name, pool_for(registration)
        )
        privacy.setdefault(registration.cluster, registration.private)
        added.append(_node(name, registration, pool, privacy[registration.cluster]))
    joined = Counter((node.cluster, node.pool) for node in added)
    specs = {c.name: c for c in clusters}
    merged = []
    for cluster, members in pools.items():
        grown = [
            pool.model_copy(update={"count": pool.count + joined[(cluster, pool.name)]})
            if joined[(cluster, pool.name)]
            else pool
            for pool in members.values()
        ]
        declared_cluster = specs.get(cluster)
        if declared_cluster is not None:  # keeps what the file says about it (its backend)
            merged.append(declared_cluster.model_copy(update={"pools": grown}))
        else:
            merged.append(ClusterSpec(name=cluster, private=privacy[cluster], pools=grown))
    return merged, declared + added


def check_registration(clusters: Sequence[ClusterSpec], name: str, registration: NodeRegistration) -> None:
    """Refuse a report that contradicts the cluster file (a different GPU count for a declared node)."""
    for node in build_initial_nodes(list(clusters)):
        if node.name == name and len(node.gpus) != len(registration.gpus):
            raise RegistrationConflict(
                f"node {name} is declared with {len(node.gpus)} GPU(s) in the cluster file; the agent "
                f"reports {len(registration.gpus)}: fix the file or start the agent under another --node name"
            )


def pool_for(registration: NodeRegistration, count: int = 0) -> PoolSpec:
    """A pool of ``count`` nodes shaped like the registered machine."""
    first = registration.gpus[0] if registration.gpus else None
    template = NodeTemplate(
        cpu=registration.cpu,
        memory_gib=registration.memory_gib,
        gpus=len(registration.gpus),
        gpu_model=first.model if first else None,
        gpu_memory_gib=first.memory_gib if first else 0.0,
    )
    return PoolSpec(name=registration.pool_name, flavor=registration.flavor_name, count=count, node=template)


def _node(name: str, registration: NodeRegistration, pool: PoolSpec, private: bool) -> Node:
    count = len(registration.gpus)
    gpus = [  # as NodeTemplate numbers them: an ungrouped GPU is a group of its own
        Gpu(
            index=g.index,
            nvlink_group=count + g.nvlink_group if g.nvlink_group is not None else g.index,
            memory_gib=g.memory_gib,
            healthy=g.healthy,
            used_milli=MILLI_PER_GPU if g.held_by else 0,  # held outside corral: never placed on
            used_memory_gib=g.memory_gib if g.held_by else 0.0,
        )
        for g in registration.gpus
    ]
    return Node(
        name=name,
        cluster=registration.cluster,
        pool=pool.name,
        flavor=pool.flavor,
        private=private,
        gpu_model=registration.gpus[0].model if registration.gpus else None,
        cpu=registration.cpu,
        memory_gib=registration.memory_gib,
        gpus=gpus,
        gpu_hour_cost=pool.gpu_hour_cost,
    )
