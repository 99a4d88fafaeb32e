"""Static feasibility: which placement domains could ever hold a job, and rejection of jobs none can.

Answers depend only on declared pools (their largest size, elastic pools included) and quotas, never on
what runs now, so they are cached on the snapshot per job shape: checking them is O(1) per pending job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from corral.core.cluster import NodeTemplate
from corral.core.units import MILLI_PER_GPU
from corral.core.workloads import PodRequest, Workload
from corral.scheduling.decisions import PendingReason, Reject
from corral.scheduling.quota import max_admissible_milli
from corral.scheduling.snapshot import Domain, Snapshot

TIER_RANK = {"bronze": 0, "silver": 1, "gold": 2}
"""Cheaper tiers are tried first: a job that fits a workstation should not take a DGX."""


@dataclass(frozen=True, slots=True)
class Feasibility:
    """Domains worth trying for a job, best first, or why it can never run."""

    domains: tuple[Domain, ...]
    rejection: tuple[PendingReason, str] | None = None
    awaiting_nodes: str | None = None
    """Why no node can hold the job yet, when nodes may still join: it waits (pending), not rejected."""
    kept_private: str | None = None
    """Why public clusters that could hold the job are not tried (it is sensitive or not burstable), for
    its explanation while it waits: otherwise it would name only the busy private clusters, and a user
    who sees free public GPUs could not tell why it does not take them."""


def pods_per_node(template: NodeTemplate, pod: PodRequest) -> int:
    """How many such pods an empty node of ``template`` holds."""
    if pod.models is not None and template.gpu_model not in pod.models:
        return 0
    limits = []
    if pod.cpu > 0:
        limits.append(math.floor(template.cpu / pod.cpu + 1e-9))
    if pod.memory_gib > 0:
        limits.append(math.floor(template.memory_gib / pod.memory_gib + 1e-9))
    if pod.gpus:
        if pod.fractional:
            per_gpu = MILLI_PER_GPU // pod.gpu_milli
            if pod.gpu_memory_gib > 0:
                per_gpu = min(per_gpu, math.floor(template.gpu_memory_gib / pod.gpu_memory_gib + 1e-9))
            limits.append(per_gpu * template.gpus)
        elif template.gpu_memory_gib + 1e-9 < pod.gpu_memory_gib:
            return 0
        else:
            limits.append(template.gpus // pod.gpus)
    return min(limits) if limits else 1_000_000


def feasibility(snapshot: Snapshot, workload: Workload, pod: PodRequest) -> Feasibility:
    """Cached per (queue, shape, privacy): where ``workload`` could ever run, in preference order."""
    key = (workload.queue, pod, workload.pods, workload.sensitive, workload.burstable)
    cached = snapshot.feasibility_cache.get(key)
    if cached is None:
        cached = _compute(snapshot, workload, pod)
        snapshot.feasibility_cache[key] = cached
    return cached  # type: ignore[return-value]


def rejection_of(workload: Workload, verdict: Feasibility) -> Reject | None:
    if verdict.rejection is None:
        return None
    reason, message = verdict.rejection
    return Reject(job=workload.id, reason=reason, message=message)


def _compute(snapshot: Snapshot, workload: Workload, pod: PodRequest) -> Feasibility:
    if snapshot.queues is not None and workload.queue not in snapshot.queues:
        known = ", ".join(sorted(snapshot.queues)) or "none"
        return Feasibility(
            (), (PendingReason.UNKNOWN_QUEUE, f"queue {workload.queue!r} does not exist (queues: {known})")
        )
    capacity: dict[Domain, int] = {}
    cost: dict[Domain, tuple[int, float]] = {}
    private: dict[Domain, bool] = {}
    has_gpus: dict[Domain, bool] = {}
    largest: dict[Domain, int] = {}
    for pool_name, pool in snapshot.pools.items():
        cluster = snapshot.pool_cluster[pool_name]
        domain = (cluster.name, pool.flavor)
        per_node = pods_per_node(pool.node, pod)
        capacity[domain] = capacity.get(domain, 0) + pool.capacity_count * per_node
        private[domain] = cluster.private
        has_gpus[domain] = has_gpus.get(domain, False) or pool.node.gpus > 0
        if per_node == 0:
            continue
        rank = (TIER_RANK.get(pool.tier.lower(), len(TIER_RANK)), pool.gpu_hour_cost)
        cost[domain] = min(cost.get(domain, rank), rank)
        largest[domain] = max(largest.get(domain, 0), pool.node.gpus)
    fitting = [d for d, c in capacity.items() if c >= workload.pods]
    if not fitting:
        most = max(capacity.values(), default=0)
        if snapshot.nodes_may_join:
            return Feasibility((), awaiting_nodes=_awaiting_nodes_message(workload, pod, most))
        templates = [pool.node for pool in snapshot.pools.values() if pool.capacity_count]
        return Feasibility(
            (), (PendingReason.NEVER_FITS, _never_fits_message(workload, pod, most, templates))
        )
    allowed = [d for d in fitting if private[d] or not workload.must_stay_private]
    why = "sensitive" if workload.sensitive else "not burstable"
    if not allowed:
        return Feasibility(
            (),
            (
                PendingReason.PRIVATE_ONLY,
                f"job is {why}, so it runs only on private clusters, and none can hold it",
            ),
        )
    demand = workload.gpu_demand_milli
    within_quota = []
    for domain in allowed:
        ceiling = max_admissible_milli(snapshot, workload.queue, domain[1])
        if ceiling is None or demand <= ceiling:
            within_quota.append(domain)
    if not within_quota:
        ceilings = "; ".join(
            _ceiling(snapshot, workload.queue, flavor) for flavor in sorted({d[1] for d in allowed})
        )
        return Feasibility(
            (),
            (
                PendingReason.OVER_QUOTA_LIMIT,
                f"job needs {demand / MILLI_PER_GPU:g} GPUs, more than queue {workload.queue!r} could ever hold: "
                f"{ceilings}",
            ),
        )
    # Private first; a CPU-only pod then prefers nodes without GPUs, so it strands no GPU; then tier and
    # price; then the domain whose biggest node that holds the pod has the fewest GPUs, so work that fits a
    # workstation leaves the 8-GPU nodes to the pods only they can hold (a one-GPU job on a DGX node keeps
    # an 8-GPU pod off it); then name.
    within_quota.sort(key=lambda d: (not private[d], pod.gpus == 0 and has_gpus[d], cost[d], largest[d], d))
    public = sorted({cluster for cluster, flavor in fitting if not private[(cluster, flavor)]})
    kept_private = None
    if workload.must_stay_private and public:
        kept_private = f"job is {why}, so it runs only on private clusters (not on {', '.join(public)})"
    return Feasibility(tuple(within_quota), kept_private=kept_private)


def _ceiling(snapshot: Snapshot, queue: str, flavor: str) -> str:
    """``a100 at most 12 (quota 8 + borrowing limit 4)``: the queue's ceiling in a flavor and what sets it,
    so the user knows whether to ask for quota, a higher limit, or a cohort with more to lend."""
    spec = snapshot.queues[queue]  # type: ignore[index]
    ceiling = max_admissible_milli(snapshot, queue, flavor) or 0
    nominal = spec.nominal_milli(flavor)
    limit = spec.borrow_limit_milli(flavor)
    if not spec.cohort:
        why = f"quota {_gpus(nominal)}, no cohort to borrow from"
    elif limit is not None and nominal + limit <= snapshot.cohort_nominal[(spec.cohort, flavor)]:
        why = f"quota {_gpus(nominal)} + borrowing limit {_gpus(limit)}"
    else:
        why = f"quota {_gpus(nominal)} + {_gpus(ceiling - nominal)} its cohort {spec.cohort!r} could lend"
    return f"{flavor} at most {_gpus(ceiling)} ({why})"


def _gpus(milli: int) -> str:
    return f"{milli / MILLI_PER_GPU:g}"


def _awaiting_nodes_message(workload: Workload, pod: PodRequest, most: int) -> str:
    """Why the job waits for nodes to join: what no registered node (set) can hold yet."""
    what = f"{workload.pods} pods of {_shape(pod)} at once" if most > 0 else f"a pod of {_shape(pod)}"
    return (
        f"no node registered yet can hold {what}; it starts when one that can joins "
        "(an agent registers: corral agent --server URL --node NAME)"
    )


def _never_fits_message(workload: Workload, pod: PodRequest, most: int, templates: list[NodeTemplate]) -> str:
    """Why no node set can ever hold the job; ``most`` is how many of its pods the largest domain could
    ever hold at once, so a gang that is too wide is told so, not to shrink its pods."""
    shape = _shape(pod)
    if most > 0:
        return (
            f"the job needs {workload.pods} pods of {shape} at once, and the nodes of any one cluster and "
            f"flavor can ever hold at most {most} such pods together; ask for fewer pods or add nodes"
        )
    return (
        f"no node this cluster can ever have holds a pod of {shape} ({_short_of(templates, pod)}); "
        "ask for less per pod or add a pool that fits"
    )


def _short_of(templates: list[NodeTemplate], pod: PodRequest) -> str:
    """What no node has enough of for one pod: the real limit, not a list of everything the pod asks."""
    models = sorted({t.gpu_model for t in templates if t.gpu_model})
    if pod.models is not None:
        templates = [t for t in templates if t.gpu_model in pod.models]
        if not templates:
            return (
                f"no pool has GPU model {'|'.join(sorted(pod.models))}; models: {', '.join(models) or 'none'}"
            )
    if not templates:
        return "the cluster file declares no node"
    gpus = pod.gpus if not pod.fractional else 1
    checks = (
        (gpus, [t.gpus for t in templates], "GPUs"),
        (pod.gpu_memory_gib, [t.gpu_memory_gib for t in templates], "GiB of memory per GPU"),
        (pod.cpu, [t.cpu for t in templates], "CPU"),
        (pod.memory_gib, [t.memory_gib for t in templates], "GiB of memory"),
    )
    for need, have, what in checks:
        if need > max(have) + 1e-9:
            return f"no node has more than {max(have):g} {what}"
    return "no one node has all of it at once"


def _shape(pod: PodRequest) -> str:
    """``1 GPUs, model A100, 4 CPU, 16 GiB memory``: what one pod needs."""
    need = []
    if pod.gpus:
        share = f"{pod.gpu_milli} milli-GPU share" if pod.fractional else f"{pod.gpus} GPUs"
        need.append(share + (f" with {pod.gpu_memory_gib:g} GiB of GPU memory" if pod.gpu_memory_gib else ""))
    if pod.models:
        need.append("model " + "|".join(sorted(pod.models)))
    need.append(f"{pod.cpu:g} CPU, {pod.memory_gib:g} GiB memory")
    return ", ".join(need)
