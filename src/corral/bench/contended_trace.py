"""The Alibaba openb trace made contended, honestly: what the policy benchmark replays as ``alibaba``.

At its recorded pace the trace's cluster is nearly idle (peak demand ~65 of 6212 GPUs), so a replay
must compress arrivals onto a smaller cluster. Three choices make that a measurement rather than a
figure decided by a handful of pods:

- **Run times are capped at** ``TRACE_MAX_RUN_HOURS``. 34 pods were still running when the trace was cut
  (their deletion time is the cut, so their recorded run is only a lower bound, up to 144 days), and 22
  more ran over 3 days: services, not batch work. Uncapped, the censored pods alone are 56% of the
  trace's GPU-time and one of them sets the makespan. Capped, a service is a day-long job: the cap is
  exact for censored pods as "ran at least that long", and it touches 86 of 7255 pods.
- **The cluster is cut to** ``TRACE_CLUSTER_SHARE`` of each pool (at least one node of every shape, so
  every pod still fits somewhere): ~100 GPUs, the size of the generated lab cluster.
- **Arrivals are compressed per window** by the factor that makes the window's offered load over its
  arrival span ``TRACE_OFFERED_LOAD``, counting each job's work only up to the last arrival
  (``load_within_arrivals``). The trace's work is heavy-tailed (median run 10 min, a few day-long ones),
  so most of a window's GPU-time would otherwise run after the last arrival, and a load of 125% counted
  over all the work leaves no queue at all. Run times are never compressed: they are what the trace
  recorded.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Sequence
from pathlib import Path

from corral.bench.contended import capacity_gpus
from corral.core.workloads import Workload
from corral.scenario.io import load_cluster_file, load_workload
from corral.scenario.models import ClusterFile
from corral.traces.alibaba import import_openb, qos_queues

TRACE_MAX_RUN_HOURS = 24.0
TRACE_CLUSTER_SHARE = 0.01
TRACE_OFFERED_LOAD = 1.25
"""Work inside the arrival span over the cluster's GPU-time in it (the generated families offer 100%)."""
SPEEDUP_RANGE = (1.0, 4096.0)


def contended_trace(trace_dir: Path, tenants: bool) -> tuple[ClusterFile, list[Workload]]:
    """The trace with run times capped and every pool cut to ``TRACE_CLUSTER_SHARE``, arrivals as
    recorded; with ``tenants``, its qos classes as queues whose quotas follow the capped GPU-time."""
    with tempfile.TemporaryDirectory() as scratch:
        imported = import_openb(trace_dir, Path(scratch), tenants=tenants)
        cluster_file = load_cluster_file(imported.cluster_path)
        workloads = load_workload(imported.workload_path)
    clusters = [
        c.model_copy(
            update={
                "pools": [
                    p.model_copy(update={"count": max(1, round(p.count * TRACE_CLUSTER_SHARE))})
                    for p in c.pools
                ]
            }
        )
        for c in cluster_file.clusters
    ]
    cap = TRACE_MAX_RUN_HOURS * 3600
    capped = [job.model_copy(update={"duration": min(job.duration, cap)}) for job in workloads]
    cut = ClusterFile(clusters=clusters)
    queues = qos_queues(capped, round(capacity_gpus(cut))) if tenants else None
    return ClusterFile(clusters=clusters, queues=queues), capped


def trace_window(
    workloads: Sequence[Workload], jobs: int, seed: int, capacity: float
) -> tuple[list[Workload], float]:
    """``jobs`` consecutive arrivals from a seeded start (the whole trace when it has no more), shifted
    to begin at 0 and compressed by the speed-up that offers ``TRACE_OFFERED_LOAD`` to ``capacity``
    GPUs; returns the window and that speed-up."""
    ordered = sorted(workloads, key=lambda job: job.submit)
    start = random.Random(seed).randrange(len(ordered) - jobs + 1) if jobs < len(ordered) else 0
    window = ordered[start : start + jobs]
    origin = window[0].submit
    recorded = [job.model_copy(update={"submit": job.submit - origin}) for job in window]
    speedup = arrival_speedup(recorded, capacity, TRACE_OFFERED_LOAD)
    return [job.model_copy(update={"submit": job.submit / speedup}) for job in recorded], speedup


def load_within_arrivals(workloads: Sequence[Workload], capacity: float, speedup: float = 1.0) -> float:
    """GPU-time the jobs could use between the first and the last arrival (each from its submission,
    at most its run time) over ``capacity`` GPUs' time in that span, arrivals ``speedup`` times faster."""
    first = min(job.submit for job in workloads) / speedup
    last = max(job.submit for job in workloads) / speedup
    if last <= first:
        return 0.0
    usable = sum(
        job.gpu_demand_milli / 1000 * min(job.duration, last - job.submit / speedup) for job in workloads
    )
    return usable / (capacity * (last - first))


def arrival_speedup(workloads: Sequence[Workload], capacity: float, load: float) -> float:
    """The arrival speed-up at which ``load_within_arrivals`` is ``load``, by bisection on its logarithm
    (the load grows with the speed-up), clamped to ``SPEEDUP_RANGE``; deterministic for one window."""
    low, high = SPEEDUP_RANGE
    if load_within_arrivals(workloads, capacity, high) < load:
        return high
    if load_within_arrivals(workloads, capacity, low) >= load:
        return low
    for _ in range(50):
        middle = (low * high) ** 0.5
        if load_within_arrivals(workloads, capacity, middle) < load:
            low = middle
        else:
            high = middle
    return high
