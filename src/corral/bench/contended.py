"""Seeded contended scenarios for comparing policies (issue 13): a shared lab cluster under bursty load.

The cluster is a pool of 4-GPU workstations without NVLink next to 8-GPU NVLink DGX nodes, each pool its
own quota flavor; four teams hold nominal quota in both, in one cohort that lends idle quota, and two of
them may borrow only so much. Jobs are single-GPU, multi-GPU single-pod and gangs (several pods that
start together); some are urgent (higher priority, so they may preempt), some checkpoint, all declare a
time limit that over-estimates their run time as users do, and run times are heavy-tailed (log-normal).
Arrivals alternate between calm stretches and bursts, scaled so that the work offered over the arrival
span is ``load`` times what the cluster can do: bursts offer several times the capacity, so queues form,
quota is borrowed and reclaimed, and urgent jobs preempt.

Everything is drawn from one ``random.Random(seed)``: the same family, seed and job count give the same
scenario on every machine.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from corral.core.cluster import ClusterSpec, NodeTemplate, PoolSpec
from corral.core.queues import QueueSpec
from corral.core.workloads import Workload
from corral.scenario.models import ClusterFile

FAMILIES = ("mixed", "gangs", "tenants")
"""``mixed``: mostly single- and multi-GPU jobs with some gangs; ``gangs``: mostly gangs of 2-4 pods x 4-8
GPUs, the shapes that need whole nodes to drain and so suffer most from a scheduler that cannot reserve;
``tenants``: ``mixed``'s shapes from ten teams of unequal quota, half of them with borrowing limits, where
fair share decides more of the order than the shapes do."""

WORKSTATION = NodeTemplate(cpu=64, memory_gib=256, gpus=4, gpu_model="L40S", gpu_memory_gib=48)
DGX = NodeTemplate(
    cpu=128, memory_gib=1024, gpus=8, gpu_model="A100", gpu_memory_gib=80, nvlink_groups=[list(range(8))]
)
WORKSTATIONS, DGX_NODES = 16, 8
"""64 workstation GPUs and 64 DGX GPUs: 128 in all."""

CPU_PER_GPU, MEMORY_GIB_PER_GPU = 8.0, 32.0
"""Per GPU a pod asks half of what either node has per GPU, so GPUs, not CPU or memory, run out first."""

COHORT = "lab"
PEAK_WINDOW_SECONDS = 6 * 3600.0


@dataclass(frozen=True)
class Team:
    name: str
    quota: dict[str, float]
    borrowing_limit: dict[str, float] | None
    job_share: float
    """The share of the jobs this team submits."""
    nvlink_share: float
    """The share of its multi-GPU jobs that must run on NVLink nodes (``gpu_model: A100``)."""


TEAMS = (
    Team("vision", {"ws": 24, "dgx": 16}, None, 0.30, 0.2),
    Team("nlp", {"ws": 8, "dgx": 32}, {"ws": 8, "dgx": 8}, 0.35, 0.7),
    Team("speech", {"ws": 16, "dgx": 8}, {"ws": 8, "dgx": 4}, 0.20, 0.3),
    Team("robotics", {"ws": 16, "dgx": 8}, None, 0.15, 0.2),
)
"""Quotas add up to the cluster in each flavor; nlp and speech have borrowing limits, and nlp submits more
than its nominal share, so whether lent quota is reclaimed promptly shows in every run."""

MANY_TEAMS = (
    Team("cv", {"ws": 12, "dgx": 8}, None, 0.14, 0.2),
    Team("llm", {"ws": 4, "dgx": 16}, {"ws": 4, "dgx": 8}, 0.16, 0.7),
    Team("asr", {"ws": 8, "dgx": 4}, {"ws": 4, "dgx": 4}, 0.10, 0.3),
    Team("robotics", {"ws": 8, "dgx": 4}, None, 0.08, 0.2),
    Team("rl", {"ws": 8, "dgx": 8}, {"ws": 8, "dgx": 8}, 0.10, 0.3),
    Team("recsys", {"ws": 4, "dgx": 8}, None, 0.08, 0.4),
    Team("bio", {"ws": 4, "dgx": 4}, {"ws": 4, "dgx": 4}, 0.08, 0.5),
    Team("search", {"ws": 8, "dgx": 4}, None, 0.10, 0.2),
    Team("infra", {"ws": 4, "dgx": 0}, None, 0.06, 0.1),
    Team("research", {"ws": 4, "dgx": 8}, {"ws": 0, "dgx": 16}, 0.10, 0.6),
)
"""Ten teams whose quotas add up to the cluster in each flavor, from 4 to 20 GPUs each. Five have
borrowing limits, each leaving room for at least one 8-GPU pod (quota plus limit), so every gang the
generator caps to what its team could ever hold is still a gang or an 8-GPU pod. llm and research submit
more than their quota share; infra owns no DGX quota and borrows every DGX GPU it uses."""

TEAMS_OF = {"mixed": TEAMS, "gangs": TEAMS, "tenants": MANY_TEAMS}


@dataclass(frozen=True)
class Mix:
    """What a family's jobs look like."""

    single: float
    """Share of 1-GPU jobs."""
    multi: float
    """Share of one-pod jobs of 2, 4 or 8 GPUs; the rest are gangs."""
    gang_gpus: tuple[int, ...]
    median_seconds: float
    """Median run time of a 1-GPU job; multi-GPU jobs and gangs run twice as long at the median."""


MIXES = {
    "mixed": Mix(single=0.55, multi=0.25, gang_gpus=(4, 8), median_seconds=1800.0),
    "gangs": Mix(single=0.25, multi=0.10, gang_gpus=(4, 8), median_seconds=1800.0),
    "tenants": Mix(single=0.55, multi=0.25, gang_gpus=(4, 8), median_seconds=1800.0),
}

DURATION_SIGMA = 1.4
"""Log-normal spread of run times: the mean is 2.7x the median and one job in a hundred runs 26x it."""
MIN_SECONDS, MAX_SECONDS = 120.0, 4 * 86_400.0
URGENT_SHARE, URGENT_PRIORITY = 0.08, 10
CHECKPOINTED_SHARE = 0.6
CHECKPOINT_SECONDS = (600.0, 900.0, 1800.0, 3600.0)
ROUND_LIMIT_SHARE = 0.2
"""Users who declare a round maximum (a day, or three) instead of a guess near their run time."""
LIMIT_SLACK = (1.2, 4.0)
BURST_LOAD, CALM_LOAD = 3.0, 0.5
"""Arrival intensity of a burst and of a calm stretch, relative to each other (then scaled to ``load``)."""
BURST_HOURS, CALM_HOURS = 2.0, 4.0
"""Mean length of a burst and of a calm stretch (drawn exponentially)."""


@dataclass(frozen=True)
class ContendedScenario:
    family: str
    seed: int
    cluster_file: ClusterFile
    workloads: list[Workload]
    offered_load: float
    """Work submitted over the arrival span as a share of the cluster's GPU-time over that span."""
    peak_offered_load: float
    """The same over the busiest ``PEAK_WINDOW_SECONDS`` of arrivals."""


def lab_cluster(teams: Sequence[Team] = TEAMS) -> ClusterFile:
    """The lab's 128 GPUs, with a queue per team in one cohort."""
    pools = [
        PoolSpec(name="ws", flavor="ws", count=WORKSTATIONS, node=WORKSTATION),
        PoolSpec(name="dgx", flavor="dgx", count=DGX_NODES, node=DGX),
    ]
    queues = [
        QueueSpec(name=t.name, cohort=COHORT, quota=t.quota, borrowing_limit=t.borrowing_limit) for t in teams
    ]
    return ClusterFile(clusters=[ClusterSpec(name="lab", private=True, pools=pools)], queues=queues)


def capacity_gpus(cluster_file: ClusterFile) -> int:
    return sum(p.count * p.node.gpus for c in cluster_file.clusters for p in c.pools)


def generate(family: str, seed: int, jobs: int = 2000, load: float = 1.0) -> ContendedScenario:
    """``jobs`` jobs of ``family`` whose arrivals offer ``load`` times the cluster's capacity on average."""
    if family not in MIXES:
        raise ValueError(f"unknown family {family!r}; families: {', '.join(FAMILIES)}")
    draw = random.Random(f"{family}-{seed}")
    teams = TEAMS_OF[family]
    cluster_file = lab_cluster(teams)
    capacity = capacity_gpus(cluster_file)
    shapes = [_job(draw, MIXES[family], teams, index) for index in range(jobs)]
    work = sum(job.gpu_demand_milli / 1000 * job.duration for job in shapes)
    span = work / (load * capacity)
    arrivals = _bursty_arrivals(draw, jobs, span)
    workloads = [job.model_copy(update={"submit": t}) for job, t in zip(shapes, arrivals, strict=True)]
    return ContendedScenario(
        family,
        seed,
        cluster_file,
        workloads,
        load,
        peak_offered_load(workloads, capacity, PEAK_WINDOW_SECONDS),
    )


def _job(draw: random.Random, mix: Mix, teams: Sequence[Team], index: int) -> Workload:
    team = draw.choices(teams, weights=[t.job_share for t in teams])[0]
    kind = draw.random()
    pods, gpus, model = 1, 1, None
    if kind >= mix.single:
        if kind < mix.single + mix.multi:
            gpus = draw.choices((2, 4, 8), weights=(0.4, 0.4, 0.2))[0]
        else:
            pods, gpus = draw.randint(2, 4), draw.choice(mix.gang_gpus)
        if draw.random() < team.nvlink_share:
            model = DGX.gpu_model
        pods = min(pods, _most_gpus(team, gpus, model) // gpus)
    median = mix.median_seconds * (1 if gpus * pods == 1 else 2)
    duration = min(MAX_SECONDS, max(MIN_SECONDS, draw.lognormvariate(math.log(median), DURATION_SIGMA)))
    if draw.random() < ROUND_LIMIT_SHARE:
        limit = 86_400.0 if duration < 0.9 * 86_400 else 3 * 86_400.0
        limit = max(limit, duration)
    else:
        limit = math.ceil(duration * draw.uniform(*LIMIT_SLACK) / 900) * 900.0
    checkpoint = draw.choice(CHECKPOINT_SECONDS) if draw.random() < CHECKPOINTED_SHARE else None
    urgent = draw.random() < URGENT_SHARE
    return Workload(
        id=f"{team.name}-{index}",
        queue=team.name,
        duration=round(duration, 1),
        pods=pods,
        gpus_per_pod=gpus,
        cpu=CPU_PER_GPU * gpus,
        memory_gib=MEMORY_GIB_PER_GPU * gpus,
        gpu_model=model,
        priority=URGENT_PRIORITY if urgent else 0,
        checkpoint_seconds=checkpoint,
        time_limit=limit,
    )


def _most_gpus(team: Team, gpus_per_pod: int, model: str | None) -> int:
    """The most GPUs the team could ever hold in one flavor its pods fit: a bigger gang would be rejected,
    which measures the generator, not the scheduler."""
    flavors = ["dgx"] + (["ws"] if model is None and gpus_per_pod <= WORKSTATION.gpus else [])
    limits = team.borrowing_limit or {}
    total = {"dgx": DGX_NODES * DGX.gpus, "ws": WORKSTATIONS * WORKSTATION.gpus}
    return max(int(min(total[f], team.quota[f] + limits[f])) if f in limits else total[f] for f in flavors)


def _bursty_arrivals(draw: random.Random, jobs: int, span: float) -> list[float]:
    """``jobs`` sorted arrival times over about ``span`` seconds, from alternating burst and calm stretches:
    the arrival rate is piecewise constant, and each arrival is a uniform draw of its cumulative rate."""
    edges, cumulative, rates = [0.0], [0.0], []
    t, burst = 0.0, draw.random() < 0.5
    while t < span:
        length = draw.expovariate(1 / ((BURST_HOURS if burst else CALM_HOURS) * 3600.0))
        rate = BURST_LOAD if burst else CALM_LOAD
        t += length
        edges.append(t)
        cumulative.append(cumulative[-1] + rate * length)
        rates.append(rate)
        burst = not burst
    scale = span / edges[-1]
    arrivals = []
    for mass in sorted(draw.uniform(0, cumulative[-1]) for _ in range(jobs)):
        stretch = min(bisect.bisect_right(cumulative, mass) - 1, len(rates) - 1)
        at = edges[stretch] + (mass - cumulative[stretch]) / rates[stretch]
        arrivals.append(round(at * scale, 1))
    return arrivals


def peak_offered_load(workloads: Sequence[Workload], capacity: float, window: float) -> float:
    """The most work submitted in any ``window`` seconds (starting at an arrival), over the capacity's."""
    ordered = sorted(workloads, key=lambda job: job.submit)
    work = [job.gpu_demand_milli / 1000 * job.duration for job in ordered]
    peak, total, end = 0.0, 0.0, 0
    for start, job in enumerate(ordered):
        while end < len(ordered) and ordered[end].submit < job.submit + window:
            total += work[end]
            end += 1
        peak = max(peak, total)
        total -= work[start]
    return peak / (capacity * window)
