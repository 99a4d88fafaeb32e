"""Hypothesis strategies for small random scenarios: clusters, queues, jobs and injected node failures.

Used by ``test_properties.py``. Everything is kept small (a few nodes, a couple of dozen jobs) so that a
replay takes milliseconds and hypothesis can try many shapes; the point is variety of *shape* (gangs,
shares, NVLink groups, private/public clusters, cohorts, borrowing limits, priorities, checkpoints,
failures), not scale.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from hypothesis import strategies as st

from corral.core.cluster import ClusterSpec, NodeTemplate, PoolSpec
from corral.core.queues import QueueSpec
from corral.core.workloads import Workload
from corral.scenario.models import ClusterFile, Event

# GPU models and the memory of each GPU; a node with 0 GPUs has no model.
GPU_MODELS: dict[str, float] = {"A100": 80.0, "T4": 16.0}
FLAVORS = ("a100", "t4", "cpu")
FLAVOR_OF_MODEL = {"A100": "a100", "T4": "t4"}


@dataclass(frozen=True)
class Scenario:
    """A cluster file, a workload and injected node failures, as the simulator takes them."""

    cluster_file: ClusterFile
    workloads: list[Workload]
    cluster_events: list[Event] = field(default_factory=list)

    @property
    def node_names(self) -> list[str]:
        return [
            f"{pool.name}-{i}"
            for cluster in self.cluster_file.clusters
            for pool in cluster.pools
            for i in range(pool.count)
        ]

    @property
    def failures_heal(self) -> bool:
        """True when every node that goes down is up again at the end (at one instant the simulator
        handles ``node_down`` before ``node_up``)."""
        up: dict[str, bool] = {}
        for event in sorted(self.cluster_events, key=lambda e: (e.t, e.event != "node_down")):
            up[event.node or ""] = event.event == "node_up"
        return all(up.values())

    def describe(self) -> str:
        """The scenario as JSON a person can paste into a regression test."""
        return json.dumps(
            {
                "cluster_file": self.cluster_file.model_dump(mode="json", exclude_none=True),
                "workloads": [w.model_dump(mode="json", exclude_none=True) for w in self.workloads],
                "cluster_events": [e.to_json_dict() for e in self.cluster_events],
            },
            indent=None,
        )


# -- clusters -------------------------------------------------------------------------------------------


@st.composite
def nvlink_groups(draw: st.DrawFn, gpus: int) -> list[list[int]] | None:
    """None, or disjoint groups over a subset of ``range(gpus)``."""
    if gpus < 2 or not draw(st.booleans()):
        return None
    order = draw(st.permutations(list(range(gpus))))
    used = draw(st.integers(min_value=2, max_value=gpus))
    members = order[:used]
    groups: list[list[int]] = []
    while members:
        size = draw(st.integers(min_value=1, max_value=len(members)))
        groups.append(sorted(members[:size]))
        members = members[size:]
    return groups


@st.composite
def node_templates(draw: st.DrawFn) -> NodeTemplate:
    gpus = draw(st.integers(min_value=0, max_value=8))
    model = draw(st.sampled_from(sorted(GPU_MODELS))) if gpus else None
    return NodeTemplate(
        cpu=draw(st.sampled_from([8, 16, 32, 64])),
        memory_gib=draw(st.sampled_from([32, 64, 128, 256, 512])),
        gpus=gpus,
        gpu_model=model,
        gpu_memory_gib=GPU_MODELS[model] if model else 0.0,
        nvlink_groups=draw(nvlink_groups(gpus)),
    )


@st.composite
def pool_specs(draw: st.DrawFn, name: str) -> PoolSpec:
    node = draw(node_templates())
    # Mostly the flavor follows the model, sometimes not (two models in one flavor, GPUs in "cpu").
    natural = FLAVOR_OF_MODEL.get(node.gpu_model or "", "cpu")
    flavor = draw(st.sampled_from([natural, natural, natural, *FLAVORS]))
    return PoolSpec(
        name=name,
        flavor=flavor,
        tier=draw(st.sampled_from(["bronze", "silver", "gold"])),
        gpu_hour_cost=draw(st.sampled_from([0.0, 1.0, 2.5])),
        count=draw(st.integers(min_value=1, max_value=4)),
        node=node,
    )


@st.composite
def cluster_specs(draw: st.DrawFn, index: int, private: bool) -> ClusterSpec:
    pools = draw(st.integers(min_value=1, max_value=3))
    return ClusterSpec(
        name=f"c{index}",
        private=private,
        pools=[draw(pool_specs(f"c{index}p{j}")) for j in range(pools)],
    )


# -- queues ---------------------------------------------------------------------------------------------

QUOTA = st.sampled_from([0, 0.5, 1, 2, 3, 4, 6, 8, 12, 16])


@st.composite
def queue_specs(draw: st.DrawFn) -> list[QueueSpec] | None:
    """None (every queue unlimited) or 1-3 queues, some sharing one cohort."""
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        return None
    count = draw(st.integers(min_value=1, max_value=3))
    queues = []
    for i in range(count):
        if draw(st.integers(min_value=0, max_value=2)):
            flavors = list(FLAVORS)
        else:
            flavors = draw(st.lists(st.sampled_from(FLAVORS), unique=True, max_size=3))
        cohort = draw(st.sampled_from([None, "research", "research"]))
        limit = None
        if cohort is not None and draw(st.booleans()):
            limited = draw(st.lists(st.sampled_from(FLAVORS), unique=True, max_size=3))
            limit = {f: draw(st.sampled_from([0, 1, 2, 4, 8])) for f in limited}
        queues.append(
            QueueSpec(
                name=f"q{i}",
                cohort=cohort,
                quota={f: draw(QUOTA) for f in flavors},
                borrowing_limit=limit,
                weight=draw(st.sampled_from([0.5, 1.0, 2.0])),
            )
        )
    return queues


@st.composite
def cluster_files(draw: st.DrawFn) -> ClusterFile:
    clusters = [draw(cluster_specs(0, private=True))]
    if draw(st.booleans()):
        clusters.append(draw(cluster_specs(1, private=draw(st.booleans()))))
    return ClusterFile(clusters=clusters, queues=draw(queue_specs()))


# -- jobs -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """How times are drawn: whole seconds mostly, else multiples of ``1 / fraction`` seconds, and which
    checkpoint intervals jobs may have.

    Quarters are exact in binary, so every sum and floor the simulator and the checker take is exact too;
    tenths are not, and test the float tolerances of the log (and, with checkpoints, the float floor of
    the checkpointed progress).
    """

    fraction: int = 4
    checkpoints: tuple[float | None, ...] = (None, None, None, 10.0, 60.0, 250.0, 0.25, 0.5, 7.5)

    def times(self, high: int) -> st.SearchStrategy[float]:
        return st.one_of(
            st.integers(min_value=0, max_value=high).map(float),
            st.integers(min_value=0, max_value=high * self.fraction).map(lambda x: x / self.fraction),
        )

    def durations(self, high: int) -> st.SearchStrategy[float]:
        return st.one_of(
            st.integers(min_value=1, max_value=high).map(float),
            st.integers(min_value=1, max_value=high * self.fraction).map(lambda x: x / self.fraction),
        )


QUARTERS = Grid()
TENTHS = Grid(fraction=10, checkpoints=(None,))
TENTHS_WITH_CHECKPOINTS = Grid(fraction=10, checkpoints=(None, 0.1, 0.3, 7.5, 10.0, 60.0))


@st.composite
def workloads(draw: st.DrawFn, job_id: str, queues: list[str], grid: Grid = QUARTERS) -> Workload:
    shape = draw(st.sampled_from(["whole", "whole", "share", "cpu"]))
    gpu: dict[str, object]
    if shape == "whole":
        gpu = {"gpus_per_pod": draw(st.integers(min_value=1, max_value=4)), "gpu_milli": 1000}
    elif shape == "share":
        gpu = {
            "gpus_per_pod": 1,
            "gpu_milli": draw(st.integers(min_value=1, max_value=9)) * 100,
            "gpu_memory_gib": draw(st.sampled_from([0.0, 0.0, 4.0, 8.0, 16.0, 40.0])),
        }
    else:
        gpu = {"gpus_per_pod": 0, "gpu_milli": 1000}
    return Workload(
        id=job_id,
        queue=draw(st.sampled_from(queues)),
        # Bursts at a few instants make jobs contend (and preempt); the rest spread out.
        submit=draw(st.one_of(st.sampled_from([0.0, 0.0, 5.0, 100.0]), grid.times(1000))),
        duration=draw(grid.durations(500)),
        pods=draw(st.integers(min_value=1, max_value=3)),
        cpu=draw(st.sampled_from([0, 0.5, 1, 2, 4, 8])),
        memory_gib=draw(st.sampled_from([0, 1, 4, 16, 64])),
        gpu_model=draw(st.sampled_from([None, None, None, None, None, "A100", "T4", "A100|T4"])),
        priority=draw(st.integers(min_value=0, max_value=3)),
        sensitive=draw(st.integers(min_value=0, max_value=4)) == 0,
        burstable=draw(st.integers(min_value=0, max_value=4)) != 0,
        checkpoint_seconds=draw(st.sampled_from(grid.checkpoints)),
        **gpu,
    )


# -- failures -------------------------------------------------------------------------------------------


@st.composite
def node_failures(draw: st.DrawFn, nodes: list[str], heal: bool = True, grid: Grid = QUARTERS) -> list[Event]:
    """Pairs of ``node_down`` at t and ``node_up`` at t + d (the up left out sometimes unless ``heal``)."""
    events: list[Event] = []
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        node = draw(st.sampled_from(nodes))
        t = draw(st.one_of(st.sampled_from([0.0, 5.0, 100.0]), grid.times(1200)))
        events.append(Event(t=t, event="node_down", node=node))
        if heal or draw(st.integers(min_value=0, max_value=3)) > 0:
            d = draw(grid.durations(600))
            events.append(Event(t=t + d, event="node_up", node=node))
    events.sort(key=lambda e: e.t)
    return events


@st.composite
def node_churn(draw: st.DrawFn, cluster_file: ClusterFile, grid: Grid = QUARTERS) -> list[Event]:
    """A valid sequence of node_down / node_up / node_removed / node_added at strictly increasing times
    (the simulator orders kinds at one instant itself, so distinct times keep the sequence as drawn)."""
    pools = [pool for cluster in cluster_file.clusters for pool in cluster.pools]
    present = {f"{pool.name}-{i}" for pool in pools for i in range(pool.count)}
    next_index = {pool.name: pool.count for pool in pools}
    down: set[str] = set()
    removed: list[str] = []
    events: list[Event] = []
    t = 0.0
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        t += draw(grid.durations(300))
        op = draw(st.sampled_from(["node_down", "node_down", "node_up", "node_removed", "node_added"]))
        if op == "node_down" and present - down:
            node = draw(st.sampled_from(sorted(present - down)))
            down.add(node)
        elif op == "node_up" and down:
            node = draw(st.sampled_from(sorted(down)))
            down.discard(node)
        elif op == "node_removed" and present:
            node = draw(st.sampled_from(sorted(present)))
            present.discard(node)
            down.discard(node)
            removed.append(node)
        elif op == "node_added":
            if removed and draw(st.booleans()):
                node = removed.pop(draw(st.integers(min_value=0, max_value=len(removed) - 1)))
            else:
                pool = draw(st.sampled_from(pools))
                node = f"{pool.name}-{next_index[pool.name]}"
                next_index[pool.name] += 1
            present.add(node)
        else:
            continue
        events.append(Event(t=t, event=op, node=node))
    return events


@st.composite
def scenarios(
    draw: st.DrawFn,
    *,
    max_jobs: int = 25,
    failures: bool | None = None,
    heal: bool = True,
    churn: bool = False,
    grid: Grid = QUARTERS,
) -> Scenario:
    """A random small scenario. ``failures``: True always, False never, None sometimes inject node
    failures; ``heal``: every failed node comes back up (after its last failure); ``churn``: the failures
    may instead be any valid mix of nodes going down, coming up, being removed and being added; ``grid``:
    how times and checkpoint intervals are drawn."""
    cluster_file = draw(cluster_files())
    if cluster_file.queues is None:
        queue_names = ["default", "team-a"]
    else:
        queue_names = [q.name for q in cluster_file.queues]
        if draw(st.integers(min_value=0, max_value=4)) == 0:
            queue_names.append("ghost")  # a queue the cluster file does not list
    count = draw(st.integers(min_value=1, max_value=max_jobs))
    jobs = [draw(workloads(f"j{i}", queue_names, grid)) for i in range(count)]
    scenario = Scenario(cluster_file, jobs)
    inject = draw(st.booleans()) if failures is None else failures
    if inject:
        if churn and draw(st.booleans()):
            events = draw(node_churn(cluster_file, grid))
        else:
            events = draw(node_failures(scenario.node_names, heal=heal, grid=grid))
        scenario = Scenario(cluster_file, jobs, events)
    return scenario


# -- held-out shapes (benchmarks/heldout.py) ------------------------------------------------------------

PRIORITY_LADDER = st.sampled_from([-5, 0, 1, 2, 3, 50, 1000])
LIMIT_FACTORS = st.sampled_from([None, 0.1, 1.0, 50.0])


@st.composite
def held_out_scenarios(draw: st.DrawFn) -> Scenario:
    """``scenarios`` reshaped as the held-out families are: 3-8 more queues with tiny or zero quotas and
    limits (some in a second cohort, some in none), priorities on seven levels from -5 to 1000, declared
    time limits a tenth of the run time, equal to it or fifty times it, and a quarter of the jobs at t=0."""
    base = draw(scenarios(churn=True, max_jobs=30))
    cluster_file, queues = base.cluster_file, base.cluster_file.queues
    if queues is not None and draw(st.booleans()):
        tiny = [
            QueueSpec(
                name=f"x{i}",
                cohort=draw(st.sampled_from(["research", "other", None])),
                quota={f: draw(st.sampled_from([0, 0, 0.25, 0.5, 1, 2])) for f in FLAVORS},
                borrowing_limit={f: draw(st.sampled_from([0, 1])) for f in FLAVORS}
                if draw(st.booleans())
                else None,
            )
            for i in range(draw(st.integers(min_value=3, max_value=8)))
        ]
        queues = [*queues, *tiny]
        cluster_file = cluster_file.model_copy(update={"queues": queues})
    names = [q.name for q in queues] if queues else None
    jobs = []
    for job in base.workloads:
        factor = draw(LIMIT_FACTORS)
        update: dict[str, object] = {
            "priority": draw(PRIORITY_LADDER),
            "time_limit": None if factor is None else job.duration * factor,
        }
        if names:
            update["queue"] = draw(st.sampled_from(names))
        if draw(st.integers(min_value=0, max_value=3)) == 0:
            update["submit"] = 0.0
        jobs.append(job.model_copy(update=update))
    return Scenario(cluster_file, jobs, base.cluster_events)
