"""GPU-share migration: move a few shares so that a pod that fits nowhere fits somewhere.

Shares of different sizes leave remainders on every GPU (a 0.81 share leaves 0.19 nobody asks for), so a
busy cluster holds several GPUs' worth of room that no whole-GPU pod can use, spread thinly over many
nodes. A pod that fits nowhere can still run if the shares on a few GPUs of one node move into such
remainders elsewhere: the moved pods restart from their checkpoint on their new GPUs, as a preempted
job would, and the pod takes the GPUs they left.

This module only proposes where to look: ``candidates`` ranks (node, GPUs) pairs by how much share would
have to move. The scheduler tries them on its snapshot (release the shares, place the pod, re-place each
share with the policy's own placement) and keeps the first that works, so no new placement logic lives
here. Only single-pod jobs holding one share move: moving one pod of a gang would restart the gang.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass

from corral.core.nodes import Node
from corral.core.units import MILLI_PER_GPU
from corral.core.workloads import PodRequest
from corral.scheduling.placement import FILTERS
from corral.scheduling.snapshot import Domain, Snapshot

MAX_CANDIDATES = 8
"""Candidate nodes tried per pod that fits nowhere: the cheapest moves are tried first."""


@dataclass(frozen=True, slots=True)
class Candidate:
    node: Node
    gpus: tuple[int, ...]
    """The GPUs the pod would take."""
    movers: tuple[str, ...]
    """The jobs whose shares must leave those GPUs."""
    moved_milli: int


def candidates(
    snapshot: Snapshot, domain: Domain, pod: PodRequest, pinned: Set[str] = frozenset()
) -> list[Candidate]:
    """Where ``pod`` could go if some shares moved away, cheapest first (least share moved). Jobs in
    ``pinned`` (those started in this round) never move."""
    found = []
    for node in snapshot.domains.get(domain, ()):
        if _other_filters_pass(node, pod):
            candidate = _on_node(snapshot, node, pod, pinned)
            if candidate is not None:
                found.append(candidate)
    found.sort(key=lambda c: (c.moved_milli, len(c.movers), snapshot.position[c.node.name]))
    return found[:MAX_CANDIDATES]


def _other_filters_pass(node: Node, pod: PodRequest) -> bool:
    if not pod.gpus or len(node.gpus) < pod.gpus:
        return False
    return all(accepts(node, pod) for label, accepts in FILTERS if label != "insufficient GPUs")


def _on_node(snapshot: Snapshot, node: Node, pod: PodRequest, pinned: Set[str]) -> Candidate | None:
    movable: dict[int, list[tuple[int, str]]] = {g.index: [] for g in node.gpus if g.healthy}
    for job in snapshot.jobs_on_node(node.name):
        allocation = snapshot.running[job]
        for placement in allocation.placements:
            if placement.node != node.name:
                continue
            for index in placement.gpus:
                if placement.gpu_milli >= MILLI_PER_GPU or allocation.workload.pods > 1 or job in pinned:
                    movable.pop(index, None)  # a whole GPU, a gang's share, or a job just started
                elif index in movable:
                    movable[index].append((placement.gpu_milli, job))
    if pod.fractional:
        return _for_share(node, pod, movable)
    costs = sorted((sum(m for m, _ in shares), index) for index, shares in movable.items())
    if len(costs) < pod.gpus:
        return None
    chosen = [index for _, index in costs[: pod.gpus]]
    movers = tuple(job for index in chosen for _, job in movable[index])
    moved = sum(cost for cost, _ in costs[: pod.gpus])
    return Candidate(node, tuple(sorted(chosen)), movers, moved) if movers else None


def _for_share(node: Node, pod: PodRequest, movable: dict[int, list[tuple[int, str]]]) -> Candidate | None:
    """The GPU where the least share must move for ``pod``: its smallest shares go first."""
    best: Candidate | None = None
    for index, shares in movable.items():
        gpu = node.gpus[index]
        room = gpu.free_milli
        movers: list[str] = []
        moved = 0
        for milli, job in sorted(shares):
            if room >= pod.gpu_milli:
                break
            room += milli
            moved += milli
            movers.append(job)
        if room >= pod.gpu_milli and movers and (best is None or moved < best.moved_milli):
            best = Candidate(node, (index,), tuple(movers), moved)
    return best
