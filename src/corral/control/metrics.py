"""Prometheus metrics of the control plane, served at ``/metrics``.

Counters, the round-latency histogram and the forecast-latency histogram (a forecast replays the queue,
on a thread of its own in the loop, so its cost is shown apart from the rounds) are updated by the reconcile loop; queue depth, allocated GPUs
per node and pool, and each node's heartbeat age are read from the store when Prometheus scrapes, so
they are never stale.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from corral.control.fleet import fleet
from corral.core.cluster import ClusterSpec
from corral.scheduling import SchedulingResult
from corral.store.jobs import read_allocated_gpus, read_queue_depths
from corral.store.nodes import read_registrations
from corral.store.schema import NodeRow


class ControlPlaneMetrics:
    def __init__(self, engine: Engine, clusters: Sequence[ClusterSpec] = ()) -> None:
        """``clusters``: the cluster file's, to which registered machines are added (GPUs per pool).

        Under ``PROMETHEUS_MULTIPROC_DIR`` (a server with several API workers) the loop's counters live
        in files there, written by the loop's process and summed by whichever worker is scraped."""
        self.registry = CollectorRegistry()
        shared = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        own = None if shared else self.registry
        if shared:
            MultiProcessCollector(self.registry)
        self.rounds = Histogram(
            "corral_reconcile_round_seconds",
            "Time of one reconcile round (store read, forecast if one is made, scheduling, store write).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=own,
        )
        self.forecasts = Histogram(
            "corral_forecast_seconds",
            "Time of one forecast of private starts (replaying the queue; the loop makes it on a thread).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=own,
        )
        self.admissions = Counter("corral_admissions", "Jobs started by the scheduler.", registry=own)
        self.preemptions = Counter("corral_preemptions", "Jobs preempted (requeued).", registry=own)
        self.rejections = Counter("corral_rejections", "Jobs rejected as never runnable.", registry=own)
        self.registry.register(_StoreCollector(engine, clusters))

    def observe_forecast(self, seconds: float) -> None:
        self.forecasts.observe(seconds)

    def observe(self, result: SchedulingResult, seconds: float) -> None:
        self.rounds.observe(seconds)
        self.admissions.inc(len(result.starts))
        self.preemptions.inc(len(result.preemptions))
        self.rejections.inc(len(result.rejections))


class _StoreCollector(Collector):
    def __init__(self, engine: Engine, clusters: Sequence[ClusterSpec]) -> None:
        self.engine = engine
        self.clusters = clusters

    def collect(self):  # type: ignore[no-untyped-def]
        depth = GaugeMetricFamily("corral_queue_depth", "Pending jobs per queue.", labels=["queue"])
        running = GaugeMetricFamily("corral_running_jobs", "Running jobs per queue.", labels=["queue"])
        node_gpus = GaugeMetricFamily(
            "corral_allocated_gpus", "GPUs allocated to running pods, per node.", labels=["node"]
        )
        pool_gpus = GaugeMetricFamily(
            "corral_pool_gpus", "GPUs per pool: allocated, and in total.", labels=["cluster", "pool", "state"]
        )
        heartbeat = GaugeMetricFamily(
            "corral_node_heartbeat_age_seconds",
            "Seconds since the node's agent was last heard.",
            labels=["node"],
        )
        now = time.time()
        with Session(self.engine) as session:
            for (queue, status), count in read_queue_depths(session).items():
                (depth if status == "pending" else running).add_metric([queue], count)
            per_node = read_allocated_gpus(session)
            _, nodes = fleet(self.clusters, read_registrations(session))
            heard = {name: t for name, t in session.execute(select(NodeRow.name, NodeRow.last_heartbeat))}
        per_pool: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        for node in nodes:
            per_pool[(node.cluster, node.pool)][0] += per_node.get(node.name, 0.0)
            per_pool[(node.cluster, node.pool)][1] += len(node.gpus)
        for node_name, allocated in sorted(per_node.items()):
            node_gpus.add_metric([node_name], allocated)
        for (cluster, pool), (allocated, total) in sorted(per_pool.items()):
            pool_gpus.add_metric([cluster, pool, "allocated"], allocated)
            pool_gpus.add_metric([cluster, pool, "total"], total)
        for node_name, last in sorted(heard.items()):
            heartbeat.add_metric([node_name], max(0.0, now - last))
        yield from (depth, running, node_gpus, pool_gpus, heartbeat)
