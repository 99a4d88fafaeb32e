"""Where a replay's GPU-time went, stretch by stretch: what the policies bench's one allocation figure hides.

Issue 13's allocation is GPU-time over capacity until the last job ends, so for the same work it is
decided by the makespan, and a makespan is decided by what is left when arrivals stop and by how fast
that rest drains. This module replays one contended scenario under several policies and reports, per
stretch of ``bucket`` seconds, the GPUs each flavor had allocated on average (and a chosen queue's share
of them), and, over the arrival span, the idle GPUs of a flavor while a job that needs a whole node of it
waited: on whole idle nodes (room being gathered for a multi-node gang, which backfill reservations do
and a greedy FIFO does not) and as fragments of used nodes.

    PYTHONPATH=src python -m corral.bench.drain gangs 105 --jobs 2000 --queue nlp
    PYTHONPATH=src python -m corral.bench.drain priority-ladder 7001 --jobs 200   # a held-out family
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from corral.bench import heldout
from corral.bench.contended import generate
from corral.core.nodes import build_initial_nodes
from corral.core.workloads import Workload
from corral.scenario.models import ClusterFile, Event
from corral.scheduling import get_policy
from corral.sim.engine import SimulationResult, Simulator

HOUR = 3600.0


@dataclass
class Timeline:
    """An event sink that integrates allocated GPUs per flavor and per (queue, flavor) over fixed stretches,
    and idle GPUs of the largest nodes while a job needing such a whole node waits (before the last
    arrival only: after it every policy drains the same kind of rest)."""

    cluster_file: ClusterFile
    workloads: Sequence[Workload]
    bucket: float = 10 * HOUR
    busy: dict[int, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    """Stretch index -> flavor, or ``queue/flavor`` -> GPU-seconds allocated in it."""
    idle_whole: float = 0.0
    """GPU-seconds of wholly idle largest nodes while a job needing a whole one waited, arrivals still on."""
    idle_fragments: float = 0.0
    """GPU-seconds idle on partly used largest nodes at those times."""
    arrival_span: float = 0.0
    """Seconds from 0 to the last arrival: what the idle figures are averaged over."""
    last_event: float = 0.0

    def __post_init__(self) -> None:
        nodes = build_initial_nodes(self.cluster_file.clusters)
        self._flavor = {node.name: node.flavor for node in nodes}
        self._size = {node.name: len(node.gpus) for node in nodes}
        self._largest = max(self._size.values(), default=0)
        self._used = dict.fromkeys(self._flavor, 0)
        self._jobs = {job.id: job for job in self.workloads}
        self._last_arrival = max((job.submit for job in self.workloads), default=0.0)
        self.arrival_span = self._last_arrival
        self._open: dict[str, tuple[float, list[tuple[str, float]]]] = {}
        self._waiting_whole: set[str] = set()
        self._clock = 0.0

    def record(self, event: Event) -> None:
        self._advance(event.t)
        job = self._jobs.get(event.job) if event.job is not None else None
        if job is None:
            return
        if event.event == "submitted" and self._needs_whole_node(job):
            self._waiting_whole.add(job.id)
        elif event.event == "started":
            self._waiting_whole.discard(job.id)
            held = [(p.node, p.gpu_milli * len(p.gpus) / 1000) for p in event.placements or ()]
            for node, gpus in held:
                self._used[node] = self._used.get(node, 0) + gpus
            self._open[job.id] = (event.t, held)
        elif event.event in ("finished", "preempted", "failed") and job.id in self._open:
            start, held = self._open.pop(job.id)
            for node, gpus in held:
                self._used[node] -= gpus
                self._integrate(start, event.t, f"{job.queue}/{self._flavor.get(node, '?')}", gpus)
                self._integrate(start, event.t, self._flavor.get(node, "?"), gpus)
            if event.event == "preempted" and self._needs_whole_node(job):
                self._waiting_whole.add(job.id)

    def stretches(self) -> list[tuple[float, dict[str, float]]]:
        """(start, mean GPUs allocated per flavor and per ``queue/flavor``) for every stretch to the end."""
        count = int(self.last_event // self.bucket) + 1
        return [
            (index * self.bucket, {key: value / self.bucket for key, value in self.busy[index].items()})
            for index in range(count)
        ]

    def _needs_whole_node(self, job: Workload) -> bool:
        return job.pod.gpus >= self._largest > 0 and job.pod.gpu_milli >= 1000

    def _advance(self, t: float) -> None:
        self.last_event = max(self.last_event, t)
        end = min(t, self._last_arrival)
        if end > self._clock and self._waiting_whole:
            span = end - self._clock
            for node, size in self._size.items():
                if size != self._largest:
                    continue
                idle = size - self._used[node]
                if idle >= size:
                    self.idle_whole += idle * span
                elif idle > 0:
                    self.idle_fragments += idle * span
        self._clock = max(self._clock, end)

    def _integrate(self, start: float, end: float, key: str, gpus: float) -> None:
        t = start
        while t < end:
            index = int(t // self.bucket)
            stop = min(end, (index + 1) * self.bucket)
            self.busy[index][key] += gpus * (stop - t)
            t = stop


def replay_timeline(
    cluster_file: ClusterFile,
    workloads: Sequence[Workload],
    policy: str,
    bucket: float = 10 * HOUR,
    cluster_events: Sequence[Event] = (),
) -> tuple[Timeline, SimulationResult]:
    """Replay ``workloads`` under ``policy``: its timeline, and the replay's own result."""
    timeline = Timeline(cluster_file, workloads, bucket)
    result = Simulator(
        cluster_file, workloads, get_policy(policy), cluster_events=cluster_events, sink=timeline.record
    ).run()
    return timeline, result


def markdown(timelines: dict[str, Timeline], queue: str | None, every: int = 1) -> list[str]:
    """A table of mean GPUs allocated per flavor (and ``queue``'s share) per stretch, one column group
    per policy, then the idle GPUs beside waiting whole-node jobs over the arrivals."""
    flavors = sorted(
        {key for t in timelines.values() for b in t.busy.values() for key in b if "/" not in key}
    )
    header = ["from h"]
    for policy in timelines:
        header += [f"{policy} {flavor}" for flavor in flavors]
        if queue:
            header += [f"{policy} {queue} (all flavors)"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    longest = max(timelines.values(), key=lambda t: t.last_event)
    series = {policy: dict(t.stretches()) for policy, t in timelines.items()}
    for index, (start, _) in enumerate(longest.stretches()):
        if index % every:
            continue
        cells = [f"{start / HOUR:.0f}"]
        for policy in timelines:
            busy = series[policy].get(start, {})
            cells += [f"{busy.get(flavor, 0.0):.1f}" for flavor in flavors]
            if queue:
                cells += [f"{sum(v for k, v in busy.items() if k.startswith(queue + '/')):.1f}"]
        rows.append("| " + " | ".join(cells) + " |")
    rows.append("")
    rows.append(
        "| policy | last arrival h | makespan h | idle GPUs on whole largest nodes, mean over arrivals "
        "| idle on partly used ones |"
    )
    rows.append("|---|---|---|---|---|")
    for policy, t in timelines.items():
        span = t.arrival_span or 1.0
        rows.append(
            f"| {policy} | {span / HOUR:.0f} | {t.last_event / HOUR:.0f} | {t.idle_whole / span:.2f} "
            f"| {t.idle_fragments / span:.2f} |"
        )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family")
    parser.add_argument("seed", type=int)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--load", type=float, default=1.0)
    parser.add_argument("--policies", default="default,fifo")
    parser.add_argument("--queue", default=None, help="also give this queue's GPUs per stretch")
    parser.add_argument("--bucket-hours", type=float, default=10.0)
    parser.add_argument("--every", type=int, default=1, help="print every n-th stretch")
    args = parser.parse_args(argv)
    if args.family in heldout.FAMILIES:
        held_out = heldout.generate(args.family, args.seed, args.jobs)
        cluster_file, workloads, events = held_out.cluster_file, held_out.workloads, held_out.failures
    else:
        scenario = generate(args.family, args.seed, args.jobs, args.load)
        cluster_file, workloads, events = scenario.cluster_file, scenario.workloads, []
    timelines = {
        policy: replay_timeline(cluster_file, workloads, policy, args.bucket_hours * HOUR, events)[0]
        for policy in args.policies.split(",")
    }
    print("\n".join(markdown(timelines, args.queue, args.every)))


if __name__ == "__main__":
    main()
