"""Prometheus metrics of the control plane, served at ``/metrics``.

Counters and the round-latency histogram are updated by the reconcile loop; queue depth and allocated
GPUs are read from the store when Prometheus scrapes, so they are never stale.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from corral.scheduling import SchedulingResult
from corral.store.schema import JobRow, PlacementRow


class ControlPlaneMetrics:
    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.rounds = Histogram(
            "corral_reconcile_round_seconds",
            "Time of one reconcile round (store read, scheduling, store write).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.admissions = Counter(
            "corral_admissions", "Jobs started by the scheduler.", registry=self.registry
        )
        self.preemptions = Counter("corral_preemptions", "Jobs preempted (requeued).", registry=self.registry)
        self.rejections = Counter(
            "corral_rejections", "Jobs rejected as never runnable.", registry=self.registry
        )
        self.registry.register(_StoreCollector(engine))

    def observe(self, result: SchedulingResult, seconds: float) -> None:
        self.rounds.observe(seconds)
        self.admissions.inc(len(result.starts))
        self.preemptions.inc(len(result.preemptions))
        self.rejections.inc(len(result.rejections))


class _StoreCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self):  # type: ignore[no-untyped-def]
        depth = GaugeMetricFamily("corral_queue_depth", "Pending jobs per queue.", labels=["queue"])
        running = GaugeMetricFamily("corral_running_jobs", "Running jobs per queue.", labels=["queue"])
        gpus = GaugeMetricFamily(
            "corral_allocated_gpus", "GPUs allocated to running pods, per node.", labels=["node"]
        )
        with Session(self.engine) as session:
            counts = session.execute(
                select(JobRow.queue, JobRow.status, func.count()).group_by(JobRow.queue, JobRow.status)
            )
            for queue, status, count in counts:
                if status == "pending":
                    depth.add_metric([queue], count)
                elif status == "running":
                    running.add_metric([queue], count)
            per_node: dict[str, float] = {}
            for placement in session.scalars(select(PlacementRow)):
                share = len(placement.gpus) * placement.gpu_milli / 1000
                per_node[placement.node] = per_node.get(placement.node, 0.0) + share
            for node, allocated in sorted(per_node.items()):
                gpus.add_metric([node], allocated)
        yield depth
        yield running
        yield gpus
