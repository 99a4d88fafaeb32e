"""Nodes kept ranked per pod shape, so placing a pod costs the nodes that changed, not the whole cluster.

A scan scores every node for every pod: at 10,000 nodes that is tens of milliseconds a pod in Python.
But a node's score for a pod shape only changes when the node does, and the snapshot records every node
it changes (``Snapshot.changed_since``). So for each (domain, pod shape, scoring) a ``NodeRanking`` keeps the
fitting nodes in buckets by score; before answering it rescores just the nodes changed since it last
looked. Nodes in the same state (hardware, usage, health) score alike, so evaluations are also
remembered per node state: 10,000 empty nodes of five kinds are five evaluations.

Equal scores go to the node that came first in its domain (kube-scheduler with a fixed node order), or to
one drawn uniformly when the scoring asks for random ties. The answer is the node a full scan would pick
(with random ties: a uniform draw from the same best nodes).
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from corral.core.nodes import Node
from corral.core.workloads import PodRequest
from corral.scheduling.decisions import Placement
from corral.scheduling.placement import Evaluation, FitFailure, evaluate, placement_of
from corral.scheduling.scorers import Scoring
from corral.scheduling.snapshot import Domain, Snapshot

MAX_RANKINGS = 256
"""Rankings kept per snapshot (least recently used go first); one per pod shape in use is typical."""


@dataclass
class _Bucket:
    """Nodes of equal score: a list for uniform draws (O(1) removal by swapping with the last) and a
    heap of domain positions for the first node in order (stale entries skipped when popped)."""

    members: list[Node] = field(default_factory=list)
    slot: dict[str, int] = field(default_factory=dict)
    order: list[tuple[int, str]] = field(default_factory=list)

    def add(self, node: Node, position: int) -> None:
        self.slot[node.name] = len(self.members)
        self.members.append(node)
        heapq.heappush(self.order, (position, node.name))

    def remove(self, name: str) -> None:
        index = self.slot.pop(name)
        last = self.members.pop()
        if last.name != name:
            self.members[index] = last
            self.slot[last.name] = index

    def first(self) -> str:
        while self.order[0][1] not in self.slot:
            heapq.heappop(self.order)
        return self.order[0][1]


class NodeRanking:
    """The nodes of one domain ranked for one pod shape under one scoring."""

    def __init__(self, snapshot: Snapshot, domain: Domain, pod: PodRequest, scoring: Scoring) -> None:
        self.snapshot = snapshot
        self.domain = domain
        self.pod = pod
        self.scoring = scoring
        self.memory = _memory(snapshot, scoring, pod)
        self.entry: dict[str, tuple[int, int, Evaluation | str]] = {}
        """Per node: the version and state id it was evaluated at (-1 when states are not remembered),
        and its evaluation or the filter that rejected it."""
        self.rejected_by: Counter[str] = Counter()
        self.buckets: dict[float, _Bucket] = {}
        self.scores: list[float] = []
        """Heap of negated scores that have (or had) a bucket; empty buckets are dropped when reached."""
        self.seen = snapshot.change_position()
        for node in snapshot.domains.get(domain, ()):
            self._update(node)

    def best(self, rng: random.Random) -> tuple[Node, tuple[int, ...]] | FitFailure:
        """The node and GPUs a full scan would choose now, or why no node fits."""
        self._catch_up()
        while self.scores:
            score = -self.scores[0]
            bucket = self.buckets.get(score)
            if bucket is None or not bucket.members:
                heapq.heappop(self.scores)
                self.buckets.pop(score, None)
                continue
            if self.scoring.random_ties:
                node = bucket.members[rng.randrange(len(bucket.members))]
            else:
                node = self.snapshot.nodes[bucket.first()]
            version, _, outcome = self.entry[node.name]
            if node.version != version:
                self._update(node)  # changed outside the snapshot's record (a gang's trial holds)
                continue
            return node, outcome.gpus  # type: ignore[union-attr]
        nodes = len(self.snapshot.domains.get(self.domain, ()))
        return FitFailure(pod=0, nodes=nodes, rejected_by=+self.rejected_by)

    def _catch_up(self) -> None:
        changed = self.snapshot.changed_since(self.seen)
        self.seen = self.snapshot.change_position()
        nodes = self.snapshot.nodes
        for name in changed:
            node = nodes.get(name)
            if node is not None and node.cluster == self.domain[0] and node.flavor == self.domain[1]:
                self._update(node)
            elif name in self.entry:
                self._detach(name, self.entry.pop(name)[2])

    def _update(self, node: Node) -> None:
        name = node.name
        old = self.entry.get(name)
        if self.memory is None:
            state = -1
            outcome = evaluate(node, self.pod, self.scoring, self.snapshot.rng)
        else:
            state = self.snapshot.state_id(node)
            if old is not None and old[1] == state:
                self.entry[name] = (node.version, state, old[2])
                return
            outcome = self.memory.get(state)
            if outcome is None:
                outcome = self.memory[state] = evaluate(node, self.pod, self.scoring, self.snapshot.rng)
        self.entry[name] = (node.version, state, outcome)
        if old is not None:
            if old[2] == outcome:
                return
            self._detach(name, old[2])
        if isinstance(outcome, str):
            self.rejected_by[outcome] += 1
            return
        bucket = self.buckets.get(outcome.score)
        if bucket is None:
            bucket = self.buckets[outcome.score] = _Bucket()
            heapq.heappush(self.scores, -outcome.score)
        bucket.add(node, self.snapshot.position[name])

    def _detach(self, name: str, outcome: Evaluation | str) -> None:
        if isinstance(outcome, str):
            self.rejected_by[outcome] -= 1
        else:
            self.buckets[outcome.score].remove(name)


def best_node(
    snapshot: Snapshot, domain: Domain, pod: PodRequest, scoring: Scoring
) -> tuple[Node, tuple[int, ...]] | FitFailure:
    """Where one pod of ``pod``'s shape goes in ``domain`` under ``scoring``, as a full scan would say."""
    rankings: OrderedDict[object, NodeRanking] = snapshot.rankings
    key = (domain, pod, id(scoring))
    ranking = rankings.get(key)
    if ranking is None or ranking.scoring is not scoring or ranking.seen < snapshot.oldest_change:
        ranking = rankings[key] = NodeRanking(snapshot, domain, pod, scoring)
        if len(rankings) > MAX_RANKINGS:
            rankings.popitem(last=False)
    else:
        rankings.move_to_end(key)
    return ranking.best(snapshot.rng)


def place_one(
    snapshot: Snapshot, domain: Domain, pod: PodRequest, scoring: Scoring
) -> list[Placement] | FitFailure:
    chosen = best_node(snapshot, domain, pod, scoring)
    if isinstance(chosen, FitFailure):
        return chosen
    node, gpus = chosen
    return [placement_of(0, node, pod, gpus)]


def _memory(snapshot: Snapshot, scoring: Scoring, pod: PodRequest) -> dict[int, Evaluation | str] | None:
    """Evaluations of ``pod`` by node state id under ``scoring``; None when its GPU choice draws at random."""
    if not scoring.gpus.pure:
        return None
    owner, by_pod = snapshot.evaluations.get(id(scoring), (None, {}))
    if owner is not scoring:
        by_pod = {}
        snapshot.evaluations[id(scoring)] = (scoring, by_pod)
    return by_pod.setdefault(pod, {})
