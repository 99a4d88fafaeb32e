"""What forecasts cost on a deep queue: one replay with 20,000 jobs waiting, with forecasts on and off.

Forecasts (``corral.forecasting.replay``) replay the waiting queue forward, so their cost grows with its depth
while a scheduling round's does not as fast; this measures the ratio on a queue deep enough to show it.
The scenario is synthetic and seeded: a private lab of 4 DGX nodes (32 GPUs) beside one public node at an
on-demand price, one queue that bursts after 6 hours (and early when a forecast says a deadline would be
missed, or that the wait is worth more than the burst), and ``jobs`` jobs arriving in ``batches`` batches
over the first 10 minutes: far more than the lab runs in a day, so they wait. At ``window_seconds`` every
node goes down for good, so the replay ends with the queue still deep: what is measured is a window of a
deep queue, not the hours it would take to drain it.

"Forecasts off" is the same policy without the two forecast rules (``Bursting(deadlines=False,
wait_value=False)``): the same replay, bursting by threshold alone.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, replace

from corral.core.cluster import ClusterSpec, NodeTemplate, PoolSpec
from corral.core.queues import QueueSpec
from corral.core.workloads import Workload
from corral.scenario.models import ClusterFile, Event, Summary
from corral.scheduling import Policy, get_policy
from corral.scheduling.bursting import Bursting
from corral.sim.engine import Simulator

NODE = NodeTemplate(cpu=128, memory_gib=1024, gpus=8, gpu_model="A100", gpu_memory_gib=80)
SHAPES = (1, 1, 2, 4, 8)
"""GPUs per job, drawn uniformly: a few shapes, as real queues have."""


@dataclass(frozen=True)
class DeepQueue:
    cluster_file: ClusterFile
    workloads: list[Workload]
    node_events: list[Event]


def build_deep_queue(
    jobs: int = 20_000, batches: int = 20, window_seconds: float = 4 * 3600.0, seed: int = 0
) -> DeepQueue:
    rng = random.Random(seed)
    cluster_file = ClusterFile(
        clusters=[
            ClusterSpec(
                name="lab", private=True, pools=[PoolSpec(name="dgx", flavor="a100", count=4, node=NODE)]
            ),
            ClusterSpec(
                name="cloud",
                private=False,
                pools=[
                    PoolSpec(name="cloud", flavor="a100", tier="gold", gpu_hour_cost=3.0, count=1, node=NODE)
                ],
            ),
        ],
        queues=[
            QueueSpec(name="research", quota=None, burst_after_seconds=6 * 3600.0, wait_usd_per_hour=0.5)
        ],
    )
    workloads = []
    for i in range(jobs):
        duration = rng.uniform(300.0, 3600.0)
        submit = float(rng.randrange(batches)) * 600.0 / batches
        workloads.append(
            Workload(
                id=f"j{i:05d}",
                queue="research",
                submit=submit,
                duration=duration,
                gpus_per_pod=rng.choice(SHAPES),
                cpu=4,
                memory_gib=32,
                time_limit=duration * rng.uniform(1.0, 3.0),
                deadline=submit + duration * rng.uniform(4.0, 40.0) if rng.random() < 0.1 else None,
                sensitive=rng.random() < 0.2,
            )
        )
    nodes = [f"dgx-{i}" for i in range(4)] + ["cloud-0"]
    events = [Event(t=window_seconds, event="node_down", node=name) for name in nodes]
    return DeepQueue(cluster_file, workloads, events)


@dataclass(frozen=True)
class ReplayCost:
    seconds: float
    scheduler_seconds: float
    forecast_seconds: float
    forecasts: int
    rounds: int
    waiting_at_end: int
    started: int


def replay_cost(scenario: DeepQueue, policy: Policy) -> ReplayCost:
    started = time.perf_counter()
    summary: Summary = (
        Simulator(scenario.cluster_file, scenario.workloads, policy, cluster_events=scenario.node_events)
        .run()
        .summary
    )
    return ReplayCost(
        seconds=time.perf_counter() - started,
        scheduler_seconds=summary.scheduler_seconds,
        forecast_seconds=summary.forecast_seconds,
        forecasts=summary.forecasts,
        rounds=summary.scheduling_rounds,
        waiting_at_end=summary.waiting,
        started=summary.jobs - summary.waiting - summary.rejected,
    )


def forecast_overhead(scenario: DeepQueue) -> dict[str, object]:
    """Both replays and the ratio of their wall times (forecasts on over off)."""
    on = get_policy("default")
    off = replace(on, bursting=Bursting(deadlines=False, wait_value=False))
    without = replay_cost(scenario, off)
    with_forecasts = replay_cost(scenario, on)
    return {
        "jobs": len(scenario.workloads),
        "off": asdict(without),
        "on": asdict(with_forecasts),
        "ratio": with_forecasts.seconds / without.seconds,
    }
