"""The FGD fragmentation experiment (Weng et al., USENIX ATC'23) run through corral's own scheduler.

As the paper's artifact runs it: the 1213 GPU nodes of the openb trace in a per-seed shuffled order; the
pod list shuffled, then padded with pods drawn with replacement until the requested GPUs reach 1.3x the
cluster's; pods scheduled one at a time and never leaving; a pod that fits nowhere is dropped. After every
pod the cluster is measured against *arrived workload* (GPUs requested so far / GPU capacity), and the
curve is sampled at fixed marks. Every placement is one call of ``corral.scheduling.schedule``: the
experiment measures the scheduler users run, not a copy of it.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from corral.core.cluster import ClusterSpec, PoolSpec
from corral.core.nodes import Node, build_initial_nodes
from corral.core.units import MILLI_PER_GPU
from corral.core.workloads import Workload
from corral.scheduling import Allocation, Policy, Snapshot, schedule
from corral.scheduling.fragmentation import TypicalShape, node_fragmentation, typical_shapes
from corral.traces.alibaba import (
    GPU_NODE_FILE,
    POD_FILE_PREFIX,
    TraceNode,
    TracePod,
    find_csv_dir,
    node_template,
    pod_workload,
    read_nodes,
    read_pods,
)

ARRIVED_MARKS = (90, 95, 100, 110, 120, 130)
"""Arrived workload, % of GPU capacity, at which the curves are reported (the paper's x axis)."""

EXPERIMENT_POLICIES = (
    "random",
    "dot-product",
    "gpu-clustering",
    "gpu-packing",
    "best-fit",
    "fgd",
    "corral-fgd",
)
"""What ``--policies all`` runs: the paper's six, then corral's own."""

INFLATION = 1.3
FLAVOR = "gpu"


@dataclass(frozen=True)
class SeedResult:
    """One seed's curves, keyed by arrived-workload mark, and its wall time."""

    unallocated_pct: dict[int, float]
    frag_amount_pct: dict[int, float]
    frag_rate_pct: dict[int, float]
    seconds: float
    migrations: int = 0
    """GPU shares moved to other GPUs of their node to make room (policies that migrate only)."""


def load_trace(trace_dir: Path, variant: str) -> tuple[list[TraceNode], list[TracePod]]:
    csv_dir = find_csv_dir(trace_dir)
    return read_nodes(csv_dir / GPU_NODE_FILE), read_pods(csv_dir / f"{POD_FILE_PREFIX}{variant}.csv")


def arrival_sequence(pods: Sequence[TracePod], capacity_gpus: float, seed: int) -> list[TracePod]:
    """The pod list shuffled, padded by uniform draws with replacement up to 1.3x the GPU capacity."""
    rng = random.Random(seed)
    sequence = list(pods)
    rng.shuffle(sequence)
    requested = sum(_gpus(pod) for pod in sequence)
    while requested < INFLATION * capacity_gpus:
        pod = rng.choice(pods)
        sequence.append(pod)
        requested += _gpus(pod)
    return sequence


def hindsight_sequence(sequence: Sequence[TracePod], capacity_gpus: float) -> list[TracePod]:
    """The pods that arrive until 100% of the GPU capacity is requested, biggest first.

    An offline reference: knowing every pod in advance, place the hard ones (many GPUs, much CPU and
    memory) while the cluster is empty and fill the gaps with small ones, as first-fit decreasing does
    for bin packing. Only the 100% mark means anything for it.
    """
    prefix: list[TracePod] = []
    requested = 0.0
    for pod in sequence:
        if requested >= capacity_gpus:
            break
        prefix.append(pod)
        requested += _gpus(pod)
    return sorted(prefix, key=lambda p: (-_gpus(p), -p.num_gpu, -p.cpu, -p.memory_gib))


def run_seed(
    nodes: Sequence[TraceNode],
    pods: Sequence[TracePod],
    policy: Policy,
    seed: int,
    shapes: tuple[TypicalShape, ...] | None = None,
    *,
    hindsight: bool = False,
) -> SeedResult:
    """Schedule one seed's arrival sequence under ``policy`` and sample the curves at ``ARRIVED_MARKS``;
    with ``hindsight``, the pods up to 100% arrived, biggest first (``hindsight_sequence``)."""
    started = time.perf_counter()
    order = list(nodes)
    random.Random(seed).shuffle(order)
    # One pool per node keeps the shuffled node order; one flavor lets every node compete for every pod.
    pools = [PoolSpec(name=node.name, flavor=FLAVOR, count=1, node=node_template(node)) for node in order]
    cluster = ClusterSpec(name="openb", private=True, pools=pools)
    live = build_initial_nodes([cluster])
    snapshot = Snapshot([cluster], live)
    capacity = sum(len(node.gpus) for node in live) * MILLI_PER_GPU
    shapes = shapes if shapes is not None else typical_shapes(pod_workload(p, p.name).pod for p in pods)
    fragments = {node.name: node_fragmentation(node, shapes) for node in live}
    fragmented = sum(fragments.values())
    allocated = arrived = migrations = 0
    marks = list(ARRIVED_MARKS)
    curves: tuple[dict[int, float], dict[int, float], dict[int, float]] = ({}, {}, {})
    sequence = arrival_sequence(pods, capacity / MILLI_PER_GPU, seed)
    if hindsight:
        sequence = hindsight_sequence(sequence, capacity / MILLI_PER_GPU)
        marks = [mark for mark in marks if mark <= 100]
    for index, pod in enumerate(sequence):
        job = pod_workload(pod, f"{pod.name}#{index}")
        arrived += job.gpu_demand_milli
        placed = _place(snapshot, job, policy)
        if placed is not None:
            allocated += job.gpu_demand_milli
            touched, moved = placed
            migrations += moved
            for node in touched:
                fresh = node_fragmentation(node, shapes)
                fragmented += fresh - fragments[node.name]
                fragments[node.name] = fresh
        while marks and arrived * 100 >= marks[0] * capacity:
            idle = capacity - allocated
            curves[0][marks[0]] = 100 * idle / capacity
            curves[1][marks[0]] = 100 * fragmented / capacity
            curves[2][marks[0]] = 100 * fragmented / idle if idle else 0.0
            marks.pop(0)
    return SeedResult(*curves, seconds=time.perf_counter() - started, migrations=migrations)


def run_experiment(
    trace_dir: Path,
    variant: str,
    policies: Sequence[Policy],
    seeds: Sequence[int],
    on_seed: Callable[[str, int, SeedResult], None] | None = None,
    *,
    hindsight: bool = False,
) -> dict[str, object]:
    """Every policy on every seed; medians over seeds, in the JSON layout ``corral bench`` writes.

    With ``hindsight`` each policy also places the same pods offline, biggest first, reported as
    ``"<policy> (hindsight)"`` at the 100% mark only.
    """
    nodes, pods = load_trace(trace_dir, variant)
    shapes = typical_shapes(pod_workload(p, p.name).pod for p in pods)
    report: dict[str, object] = {"variant": variant, "seeds": list(seeds), "policies": {}}
    runs = [(policy, False) for policy in policies]
    runs += [(policy, True) for policy in policies] if hindsight else []
    for policy, offline in runs:
        policy = policy.for_workload(pod_workload(p, p.name).pod for p in pods)
        label = f"{policy.name} (hindsight)" if offline else policy.name
        results = []
        for seed in seeds:
            result = run_seed(nodes, pods, policy, seed, shapes, hindsight=offline)
            results.append(result)
            if on_seed is not None:
                on_seed(label, seed, result)
        report["policies"][label] = {  # type: ignore[index]
            "unallocated_pct": _medians([r.unallocated_pct for r in results]),
            "frag_amount_pct": _medians([r.frag_amount_pct for r in results]),
            "frag_rate_pct": _medians([r.frag_rate_pct for r in results]),
            "seconds": statistics.median(r.seconds for r in results),
            "migrations": statistics.median(r.migrations for r in results),
        }
    return report


def _place(snapshot: Snapshot, job: Workload, policy: Policy) -> tuple[list[Node], int] | None:
    """Place ``job`` (applying any share moves the policy made for it): the nodes touched, and the
    number of shares moved; None when it fits nowhere."""
    result = schedule(snapshot, [job], policy, now=0.0)
    if not result.starts:
        return None
    workloads = {job.id: job}
    for preempt in result.preemptions:
        workloads[preempt.job] = snapshot.release(preempt.job).workload
    for start in result.starts:
        allocation = Allocation(workloads[start.job], start.cluster, start.flavor, start.placements, 0.0)
        snapshot.allocate(allocation)
    snapshot.commit()
    return [snapshot.nodes[p.node] for start in result.starts for p in start.placements], len(
        result.preemptions
    )


def _medians(curves: list[dict[int, float]]) -> dict[str, float]:
    return {
        str(mark): statistics.median(c[mark] for c in curves if mark in c)
        for mark in ARRIVED_MARKS
        if any(mark in c for c in curves)
    }


def _gpus(pod: TracePod) -> float:
    return pod.num_gpu * pod.gpu_milli / MILLI_PER_GPU
