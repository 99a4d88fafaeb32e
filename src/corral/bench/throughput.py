"""Scheduler speed: placements per second for one round of 100,000 pending pods on 1k to 10k nodes.

Clusters are the openb node mix replicated to the size asked (every trace node shape in its proportion)
or DGX H100 boxes only (8 NVLink-connected GPUs each, so 10,000 nodes are 80,000 GPUs). Pending pods are
drawn with replacement from the openb default pod list, GPU-model constraints dropped on DGX clusters.
Each run is one ``schedule`` call in a fresh process, so its peak memory (RSS) is its own.
"""

from __future__ import annotations

import multiprocessing
import random
import resource
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from corral.core.cluster import ClusterSpec, NodeTemplate, PoolSpec
from corral.core.nodes import build_initial_nodes
from corral.core.workloads import Workload
from corral.scheduling import Snapshot, get_policy, schedule
from corral.traces.alibaba import (
    GPU_NODE_FILE,
    POD_FILE_PREFIX,
    find_csv_dir,
    node_template,
    pod_workload,
    read_nodes,
    read_pods,
)

CLUSTER_KINDS = ("openb", "dgx")
DGX_H100 = NodeTemplate(
    cpu=224, memory_gib=2048, gpus=8, gpu_model="H100-80GB", gpu_memory_gib=80, nvlink_groups=[list(range(8))]
)


@dataclass(frozen=True)
class Run:
    cluster: str
    nodes: int
    pods: int
    policy: str
    seed: int = 42


@dataclass(frozen=True)
class RunResult:
    placed: int
    seconds: float
    peak_rss_mib: float

    @property
    def placements_per_second(self) -> float:
        return self.placed / self.seconds if self.seconds else 0.0


def build_cluster(trace_dir: Path, kind: str, nodes: int) -> ClusterSpec:
    """``nodes`` nodes of the openb mix (largest remainders keep the proportions) or of DGX H100s."""
    if kind == "dgx":
        return ClusterSpec(
            name="dgx", private=True, pools=[PoolSpec(name="dgx", flavor="gpu", count=nodes, node=DGX_H100)]
        )
    shapes = Counter(node_template(node) for node in read_nodes(find_csv_dir(trace_dir) / GPU_NODE_FILE))
    total = sum(shapes.values())
    exact = {shape: count * nodes / total for shape, count in shapes.items()}
    counts = {shape: int(share) for shape, share in exact.items()}
    for shape in sorted(exact, key=lambda s: exact[s] - counts[s], reverse=True)[
        : nodes - sum(counts.values())
    ]:
        counts[shape] += 1
    pools = [
        PoolSpec(name=f"mix{i}", flavor="gpu", count=count, node=shape)
        for i, (shape, count) in enumerate(counts.items())
        if count
    ]
    return ClusterSpec(name="openb", private=True, pools=pools)


def pending_pods(trace_dir: Path, kind: str, pods: int, seed: int) -> list[Workload]:
    trace_pods = read_pods(find_csv_dir(trace_dir) / f"{POD_FILE_PREFIX}default.csv")
    rng = random.Random(seed)
    jobs = []
    for index in range(pods):
        job = pod_workload(rng.choice(trace_pods), f"p{index}", submit=float(index))
        jobs.append(job.model_copy(update={"gpu_model": None}) if kind == "dgx" else job)
    return jobs


def measure(trace_dir: Path, run: Run) -> RunResult:
    """One round; run it in a fresh process (``run_isolated``) for a meaningful peak RSS."""
    cluster = build_cluster(trace_dir, run.cluster, run.nodes)
    jobs = pending_pods(trace_dir, run.cluster, run.pods, run.seed)
    policy = get_policy(run.policy, (job.pod for job in jobs))
    snapshot = Snapshot([cluster], build_initial_nodes([cluster]), seed=run.seed)
    started = time.perf_counter()
    result = schedule(snapshot, jobs, policy, now=0.0)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return RunResult(placed=len(result.starts), seconds=seconds, peak_rss_mib=peak)


def _child(trace_dir: Path, run: Run, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put(measure(trace_dir, run))


def run_isolated(trace_dir: Path, run: Run) -> RunResult:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(trace_dir, run, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def run_benchmark(
    trace_dir: Path,
    runs: Sequence[Run],
    on_run: Callable[[Run, RunResult], None] | None = None,
) -> dict[str, object]:
    """Every run in its own process; JSON rows per cluster and policy."""
    report: dict[str, dict[str, list[dict[str, float]]]] = {}
    for run in runs:
        result = run_isolated(trace_dir, run)
        if on_run is not None:
            on_run(run, result)
        report.setdefault(run.cluster, {}).setdefault(run.policy, []).append(
            {
                "nodes": run.nodes,
                "pods": run.pods,
                "placed": result.placed,
                "seconds": round(result.seconds, 3),
                "placements_per_second": round(result.placements_per_second, 1),
                "peak_rss_mib": round(result.peak_rss_mib, 1),
            }
        )
    return {"runs": report}
