"""The scheduler's view of the world: nodes, running allocations and quota usage, with undo.

A scheduling round tries placements on the snapshot itself (so later jobs in the round see them) and
rolls everything back before it returns: the caller's snapshot is unchanged, and applying the round's
decisions is the caller's job. This follows Kueue's snapshot and its "simulate, then restore" idiom, and
avoids copying 10,000 nodes every round.
"""

from __future__ import annotations

import random
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from corral.core.cluster import ClusterSpec, PoolSpec
from corral.core.nodes import Node
from corral.core.queues import QueueSpec
from corral.core.units import MILLI_PER_GPU
from corral.core.workloads import PodRequest, Workload
from corral.scheduling.bursting import Forecast
from corral.scheduling.decisions import Placement

MAX_REMEMBERED_STATES = 500_000
"""Distinct node states numbered before the table starts afresh."""

MAX_RECORDED_CHANGES = 1_000_000
"""Node changes remembered for incremental rankings before the record starts afresh."""

Domain = tuple[str, str]
"""A placement domain: (cluster, flavor). A gang is placed inside one domain."""


@dataclass(frozen=True, slots=True)
class Allocation:
    """A running job: where its pods are, and what it had achieved when this run started."""

    workload: Workload
    cluster: str
    flavor: str
    placements: tuple[Placement, ...]
    started_at: float
    progress_at_start: float = 0.0

    @property
    def gpu_milli(self) -> int:
        return sum(p.gpu_milli * len(p.gpus) for p in self.placements)

    def progress(self, now: float) -> float:
        """Seconds of useful work done by ``now``, counting what earlier runs checkpointed."""
        return self.progress_at_start + (now - self.started_at)

    @property
    def cpu(self) -> float:
        return sum(p.cpu for p in self.placements)


class Snapshot:
    """Cluster state for one scheduling round; ``allocate``/``release`` are undoable via ``mark``/``rollback``."""

    def __init__(
        self,
        clusters: Sequence[ClusterSpec],
        nodes: Iterable[Node],
        queues: Sequence[QueueSpec] | None = None,
        seed: int = 0,
        *,
        nodes_may_join: bool = False,
    ) -> None:
        self.rng = random.Random(seed)
        """Draws for policies that settle equal scores at random: seeded, so replays repeat."""
        self.clusters = {c.name: c for c in clusters}
        self.pools: dict[str, PoolSpec] = {p.name: p for c in clusters for p in c.pools}
        self.pool_cluster: dict[str, ClusterSpec] = {p.name: c for c in clusters for p in c.pools}
        self.queues: dict[str, QueueSpec] | None = {q.name: q for q in queues} if queues is not None else None
        self.nodes_may_join = nodes_may_join
        """The fleet is what registers (agents' machines, a Ray cluster's nodes), so a job that no node
        can hold yet waits for one to join instead of being rejected as never fitting."""
        elastic: dict[Domain, list[PoolSpec]] = defaultdict(list)
        for cluster in clusters:
            for pool in sorted(cluster.pools, key=lambda p: (p.gpu_hour_cost, p.name)):
                if pool.elastic:
                    elastic[(cluster.name, pool.flavor)].append(pool)
        self.elastic_pools: dict[Domain, list[PoolSpec]] = dict(elastic)
        """Pools that can grow, per placement domain, cheapest first: scale-up looks only here."""
        self.nodes: dict[str, Node] = {}
        self.domains: dict[Domain, list[Node]] = defaultdict(list)
        self.running: dict[str, Allocation] = {}
        self.queue_gpu: dict[tuple[str, str], int] = defaultdict(int)
        self.queue_cpu: dict[str, float] = defaultdict(float)
        self.cohort_gpu: dict[tuple[str, str], int] = defaultdict(int)
        self.cohort_nominal: dict[tuple[str, str], int] = defaultdict(int)
        self.cohort_borrowed: dict[tuple[str, str], int] = defaultdict(int)
        """Milli-GPU per (cohort, flavor) that members hold beyond their nominal quota: reclaimable."""
        for queue in (self.queues or {}).values():
            if queue.cohort:
                for flavor in queue.quota or {}:
                    self.cohort_nominal[(queue.cohort, flavor)] += queue.nominal_milli(flavor)
        self.pool_nodes: Counter[str] = Counter()
        self.provisioning: Counter[str] = Counter()
        """Nodes requested per elastic pool and not ready yet (kept by the caller)."""
        self.awaiting_nodes: dict[str, str] = {}
        """Jobs waiting for nodes being provisioned for them: job -> pool (kept by the caller)."""
        self.public_spend: dict[str, float] = {}
        """USD each queue has spent on public clusters in its budget's current period, up to now (kept by
        the caller); only queues with a budget need an entry."""
        self.forecast: Forecast | None = None
        """Predicted private starts and run times (kept by the caller, ``corral.forecasting.replay``)."""
        self.time_left: tuple[float, dict[tuple[str, float], float]] = (float("nan"), {})
        """(instant, running jobs' estimated seconds left then, by job and start): kept by
        ``corral.scheduling.backfill`` for the instant, since a round asks once per blocked job."""
        self.reserved: tuple[str, ...] = ()
        """Jobs that held a backfill reservation after the last round (kept by the caller): tried first."""
        self.runtime_estimate: Callable[[Workload, float], float] | None = None
        """A running job's estimated total run time given what it has run (learned by the caller from
        finished jobs); preemption weighs what it saves with it. None: time limits, else a guess."""
        self.priorities: dict[str, Counter[int]] = defaultdict(Counter)
        self.feasibility_cache: dict[object, object] = {}
        self.rankings: OrderedDict[object, Any] = OrderedDict()
        """Per (domain, pod shape, scoring) node rankings, kept by ``corral.scheduling.ranking``."""
        self.evaluations: dict[int, tuple[object, dict[object, dict[int, Any]]]] = {}
        """Per scoring and pod shape, node evaluations by state id (``corral.scheduling.ranking``)."""
        self._state_ids: dict[tuple[object, ...], int] = {}
        self._next_state = 0
        self.node_jobs: dict[str, dict[str, None]] = defaultdict(dict)
        """Running jobs per node (an ordered set), kept with the allocations."""
        self.position: dict[str, int] = {}
        """Order in which nodes joined: equal scores go to the earlier node."""
        self._changes: list[str] = []
        self._changes_base = 0
        self._undo: list[tuple[str, Allocation]] = []
        self._capacity: tuple[dict[str, int], float] | None = None
        for node in nodes:
            self.add_node(node)

    # -- cluster changes (applied by the caller between rounds; not undoable) --

    def add_node(self, node: Node) -> None:
        if node.name in self.nodes:
            raise ValueError(f"node {node.name} is already in the snapshot")
        self.nodes[node.name] = node
        self.domains[(node.cluster, node.flavor)].append(node)
        self.position[node.name] = len(self.position)
        self._record(node.name)
        self.pool_nodes[node.pool] += 1
        self._capacity = None

    def remove_node(self, name: str) -> Node:
        node = self.nodes.pop(name)
        members = self.domains[(node.cluster, node.flavor)]
        del members[next(i for i, member in enumerate(members) if member is node)]
        self.pool_nodes[node.pool] -= 1
        self._capacity = None
        self._record(name)
        return node

    def set_node_up(self, name: str, up: bool) -> None:
        node = self.nodes[name]
        node.up = up
        node.version += 1
        self._capacity = None
        self._record(name)

    def node_changed(self, name: str) -> None:
        """Tell the snapshot a node changed outside it (a GPU's health): its cached scores are stale."""
        node = self.nodes[name]
        node.refresh_gpu_counters()
        self._capacity = None
        self._record(name)

    def state_id(self, node: Node) -> int:
        """A number for the node's state (``Node.state_key``): equal for nodes that score alike.

        Ids are never reused; when the table grows too big it starts afresh, and so do the evaluations
        remembered by state.
        """
        version, known = node.interned
        if version == node.version:
            return known
        key = node.state_key()
        state = self._state_ids.get(key)
        if state is None:
            if len(self._state_ids) >= MAX_REMEMBERED_STATES:
                self._state_ids.clear()
                self.evaluations.clear()
            state = self._state_ids[key] = self._next_state
            self._next_state += 1
        node.interned = (node.version, state)
        return state

    # -- change record: which nodes changed, for incremental rankings --

    def change_position(self) -> int:
        return self._changes_base + len(self._changes)

    @property
    def oldest_change(self) -> int:
        """Changes before this position were forgotten: a ranking older than it must be rebuilt."""
        return self._changes_base

    def changed_since(self, position: int) -> list[str]:
        """Nodes changed since ``position``, each once, in the order they first changed: a set's order
        would follow Python's string hashing and make draws of random-tie policies differ between runs."""
        return list(dict.fromkeys(self._changes[position - self._changes_base :]))

    def _record(self, name: str) -> None:
        if len(self._changes) >= MAX_RECORDED_CHANGES:
            self._changes_base += len(self._changes)
            self._changes.clear()
        self._changes.append(name)

    def jobs_on_node(self, name: str) -> list[str]:
        """Running jobs with a pod on node ``name``, in start order."""
        return list(self.node_jobs.get(name, ()))

    # -- allocations (undoable) --

    def allocate(self, allocation: Allocation) -> None:
        self._apply(allocation, +1)
        self.running[allocation.workload.id] = allocation
        self._undo.append(("allocate", allocation))

    def release(self, job: str) -> Allocation:
        allocation = self.running.pop(job)
        self._apply(allocation, -1)
        self._undo.append(("release", allocation))
        return allocation

    @contextmanager
    def gpus_set_aside(self, gpus: Sequence[tuple[str, tuple[int, ...]]]) -> Iterator[None]:
        """While inside, these (node, GPU indices) count as fully used, and rankings know it: how a
        placement is asked to leave reserved GPUs alone."""
        for name, indices in gpus:
            self.nodes[name].hold(0.0, 0.0, indices, MILLI_PER_GPU, 0.0)
            self._record(name)
        try:
            yield
        finally:
            for name, indices in gpus:
                self.nodes[name].release(0.0, 0.0, indices, MILLI_PER_GPU, 0.0)
                self._record(name)

    def mark(self) -> int:
        return len(self._undo)

    def rollback(self, mark: int) -> None:
        while len(self._undo) > mark:
            action, allocation = self._undo.pop()
            if action == "allocate":
                self.running.pop(allocation.workload.id)
                self._apply(allocation, -1)
            else:
                self.running[allocation.workload.id] = allocation
                self._apply(allocation, +1)

    def commit(self) -> None:
        """Forget the undo history: what was applied stays (the caller applying decisions)."""
        self._undo.clear()

    def _apply(self, allocation: Allocation, sign: int) -> None:
        for p in allocation.placements:
            self.nodes[p.node].hold(
                sign * p.cpu, sign * p.memory_gib, p.gpus, sign * p.gpu_milli, sign * p.gpu_memory_gib
            )
            self._record(p.node)
            if sign > 0:
                self.node_jobs[p.node][allocation.workload.id] = None
            else:
                self.node_jobs[p.node].pop(allocation.workload.id, None)
        workload = allocation.workload
        demand = allocation.gpu_milli
        self.queue_cpu[workload.queue] += sign * allocation.cpu
        counts = self.priorities[workload.queue]
        counts[workload.priority] += sign
        if not counts[workload.priority]:
            del counts[workload.priority]
        if demand:
            self.queue_gpu[(workload.queue, allocation.flavor)] += sign * demand
            key = (workload.queue, allocation.flavor)
            before = self.queue_gpu[key] - sign * demand
            cohort = self.cohort_of(workload.queue)
            if cohort:
                self.cohort_gpu[(cohort, allocation.flavor)] += sign * demand
                nominal = self.queues[workload.queue].nominal_milli(allocation.flavor)  # type: ignore[index]
                self.cohort_borrowed[(cohort, allocation.flavor)] += max(
                    0, self.queue_gpu[key] - nominal
                ) - max(0, before - nominal)

    # -- queries --

    def cohort_of(self, queue: str) -> str | None:
        if self.queues is None or queue not in self.queues:
            return None
        return self.queues[queue].cohort

    def capacity(self) -> tuple[dict[str, int], float]:
        """Healthy GPU milli per flavor and CPU cores, on nodes that are up: the denominators of fair share.

        Cached until a node is added, removed, goes down or up, or a GPU changes health.
        """
        if self._capacity is None:
            gpus: dict[str, int] = defaultdict(int)
            cpu = 0.0
            for node in self.nodes.values():
                if node.up:
                    gpus[node.flavor] += MILLI_PER_GPU * sum(1 for g in node.gpus if g.healthy)
                    cpu += node.cpu
            self._capacity = (dict(gpus), cpu)
        return self._capacity

    def public_start_delay(self, pod: PodRequest) -> float:
        """How soon a public node could run ``pod``: at once if a public node that is up has room for it
        now, else after the shortest provisioning of a public pool (0 for a pool of fixed nodes)."""
        for node in self.nodes.values():
            if node.private or not node.up:
                continue
            room = (
                node.max_free_share >= pod.gpu_milli if pod.fractional else node.whole_free_gpus >= pod.gpus
            )
            if room and node.cpu - node.used_cpu >= pod.cpu:
                return 0.0
        delays = [
            pool.provision_seconds if pool.elastic else 0.0
            for pool in self.pools.values()
            if not self.pool_cluster[pool.name].private
        ]
        return min(delays, default=0.0)

    def cheapest_public_gpu_hour(self, job: Workload) -> float | None:
        """The lowest GPU-hour price of a public pool whose nodes could hold ``job``'s GPUs, if any."""
        models = job.allowed_models
        prices = [
            pool.gpu_hour_cost
            for pool in self.pools.values()
            if not self.pool_cluster[pool.name].private
            and pool.node.gpus >= job.gpus_per_pod
            and (models is None or pool.node.gpu_model in models)
        ]
        return min(prices, default=None)

    def lowest_running_priority(self, queue: str | None = None) -> int | None:
        """Lowest priority running in ``queue`` (or anywhere): a cheap test before looking for victims."""
        counters = [self.priorities[queue]] if queue is not None else list(self.priorities.values())
        return min((p for c in counters for p in c), default=None)
