"""Elastic pools: when to ask for new nodes and when to give idle ones back.

A job that fits nowhere now, but would fit on fresh nodes of an elastic pool its quota and privacy allow,
asks for just enough of them (pool by pool, cheapest first) and waits for them. Nodes added beyond a pool's
base ``count`` are given back after being empty for the policy's idle delay. When to *prefer* bursting
over waiting (wait thresholds, budgets, deadlines) is the federation planner's job; this module only knows
what is possible.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from corral.core.workloads import Workload
from corral.scheduling.decisions import ScaleDown, ScaleUp
from corral.scheduling.feasibility import pods_per_node
from corral.scheduling.quota import quota_shortfall
from corral.scheduling.snapshot import Domain, Snapshot


def plan_scale_up(
    snapshot: Snapshot,
    job: Workload,
    domains: Sequence[Domain],
    requested: Counter[str],
    promised: Counter[tuple[str, str]],
) -> ScaleUp | None:
    """New nodes that would let ``job`` start, or None.

    ``requested`` counts nodes and ``promised`` the GPU quota per (queue, flavor) that earlier jobs of the
    same round are waiting for, so two jobs never count on the same new node or the same quota.
    """
    for domain in domains:
        pools = snapshot.elastic_pools.get(domain)
        if not pools:
            continue
        flavor = domain[1]
        demand = job.gpu_demand_milli + promised[(job.queue, flavor)]
        if quota_shortfall(snapshot, job.queue, flavor, demand) is not None:
            continue
        for pool in pools:
            per_node = pods_per_node(pool.node, job.pod)
            if per_node == 0:
                continue
            needed = math.ceil(job.pods / per_node)
            room = pool.capacity_count - snapshot.pool_nodes[pool.name] - snapshot.provisioning[pool.name]
            if needed <= room - requested[pool.name]:
                requested[pool.name] += needed
                promised[(job.queue, flavor)] += job.gpu_demand_milli
                return ScaleUp(pool=pool.name, nodes=needed, job=job.id)
    return None


def plan_scale_down(snapshot: Snapshot, now: float, idle_seconds: float) -> list[ScaleDown]:
    """Nodes above their pool's base count that have been empty for at least ``idle_seconds``."""
    surplus = {
        name: snapshot.pool_nodes[name] - pool.count for name, pool in snapshot.pools.items() if pool.elastic
    }
    decisions: list[ScaleDown] = []
    if not any(count > 0 for count in surplus.values()):
        return decisions
    for node in snapshot.nodes.values():
        if surplus.get(node.pool, 0) <= 0 or not node.empty or node.idle_since is None:
            continue
        if now >= node.idle_since + idle_seconds:  # the same sum the caller scheduled its wake-up for
            decisions.append(ScaleDown(node.name))
            surplus[node.pool] -= 1
    return decisions
