"""Checking an event log against the invariants of the scenario format, stopping at the first violation.

The checker replays the log once, holding only the live state (nodes, running jobs, quota usage), so a log of
millions of lines streams through in memory proportional to the cluster and the workload, and each event costs
time proportional to its own size.

Numbering follows ``../shared/spec/scenario-format.md``; problems the spec does not number are ``0``:

- 0: time going backwards, unknown job, node or event kind, a job started while running, preempted or
  finished while not running, submitted twice, rejected while running, a node added twice.
- 1: GPU share or GPU memory over a GPU's capacity, CPU or memory over a node's, a GPU index the node lacks.
- 2: a start that is not exactly the job's gang and request, on nodes that are missing or down, or spread over
  clusters; a job still holding a node when the instant of that node's ``node_down`` (or ``node_removed``)
  ends.
- 3: sensitive or non-burstable work on a non-private cluster.
- 4: a finish not exactly the remaining work after its start; a finished job started again.
- 5: quota (checked when each instant ends, since writers may order releases after starts within an instant);
  a job of a queue the cluster file does not list starting at all.
- 6: a job still running when the log ends; a job event before ``submitted`` or after ``finished`` or
  ``rejected``.
- 7 (corral's, only with ``work_conserving``): a job waits when an instant ends though it fits on idle
  private capacity that its quota allows (``corral.scenario.work_conserving``).

A log cut short (``truncated``: the first lines of a replay, or one still being written) may end with jobs
running: they are reported with the jobs still waiting, not judged by invariant 6. Its last instant may be
cut mid-way (a start before the release that makes room for it, a node loss before its preemptions), so
that instant is not judged either. Without ``truncated`` the log is taken as complete, and a job running
at its end is a violation: the log cannot tell a missing ``finished`` from a missing tail, so the caller
says which it holds.

``failed`` is not terminal: it ends a run like ``preempted`` (it may also come for a waiting job), and the job
may start again. Checks that can only be judged when an instant ends (a node failure not followed by
preemption, quota) report the line of the event that caused them (the ``node_down``, the latest ``started``
that raised the usage), not the line where time moved on; only the end-of-log check of invariant 6 has no
line.
Lines count events from 1, which are file lines for any log without blank lines (corral never writes them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from corral.core.cluster import ClusterSpec, PoolSpec
from corral.core.nodes import Node, build_node
from corral.core.queues import QueueSpec
from corral.core.units import MILLI_PER_GPU, milli_to_gpus
from corral.core.workloads import Workload, checkpointed_progress
from corral.errors import SpecError
from corral.scenario.io import load_cluster_file, load_workload, read_events
from corral.scenario.models import JOB_EVENTS, NODE_EVENTS, RESERVED_EVENT, ClusterFile, Event, PodPlacement
from corral.scenario.work_conserving import IdleCapacity

__all__ = [
    "INVARIANTS",
    "CheckReport",
    "Violation",
    "audit_events",
    "audit_files",
    "check_events",
    "check_files",
]

INVARIANTS: dict[int, str] = {
    0: "log format",
    1: "capacity",
    2: "gang placement",
    3: "private clusters",
    4: "run time",
    5: "quota",
    6: "completion",
    7: "work conserving",
}

# Resources stated as floats are summed and subtracted millions of times; this absorbs the rounding.
CAPACITY_TOLERANCE = 1e-6
# A finish time is computed by the writer from its own float clock: equal to within rounding, not bit for bit.
FINISH_REL_TOLERANCE = 1e-9
FINISH_ABS_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Violation:
    """The first thing wrong with a log, located well enough for a person to go and look."""

    invariant: int
    line: int | None
    t: float | None
    job: str | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "end of log"
        if self.t is not None:
            where += f", t={_num(self.t)}"
        label = (
            INVARIANTS[0]
            if self.invariant == 0
            else f"invariant {self.invariant} ({INVARIANTS[self.invariant]})"
        )
        return f"{where}: {label}: {self.message}"


@dataclass(frozen=True)
class CheckReport:
    """The verdict on a log and the state it ends in: which jobs still run and which still wait."""

    violation: Violation | None
    end_t: float | None
    """Time of the log's last event (None: an empty log)."""
    running: tuple[str, ...] = ()
    """Jobs running when the log ends (only a truncated log may end so), oldest start first."""
    waiting: tuple[str, ...] = ()
    """Jobs submitted and neither running, finished nor rejected when the log ends, in the order they began
    waiting (a preempted job waits again from its preemption)."""


def audit_events(
    cluster: ClusterFile,
    workloads: Sequence[Workload],
    events: Iterable[Event],
    *,
    truncated: bool = False,
    work_conserving: bool = False,
) -> CheckReport:
    """Replay ``events`` (line 1 first): the first violation, and the jobs running and waiting at the end."""
    checker = _Checker(cluster, workloads, truncated=truncated, work_conserving=work_conserving)
    try:
        for line, event in enumerate(events, start=1):
            checker.feed(line, event)
        checker.finish()
    except _Broken as broken:
        return checker.report(broken.violation)
    return checker.report(None)


def check_events(
    cluster: ClusterFile,
    workloads: Sequence[Workload],
    events: Iterable[Event],
    *,
    truncated: bool = False,
    work_conserving: bool = False,
) -> Violation | None:
    """Replay ``events`` (line 1 first) and return the first violation, or None when the log is sound."""
    return audit_events(
        cluster, workloads, events, truncated=truncated, work_conserving=work_conserving
    ).violation


def audit_files(
    cluster_path: str | Path,
    workload_path: str | Path,
    events_path: str | Path,
    *,
    truncated: bool = False,
    work_conserving: bool = False,
) -> CheckReport:
    """Check a log on disk: an unreadable log line is a violation; unreadable inputs raise ``SpecError``."""
    cluster = load_cluster_file(cluster_path)
    workloads = load_workload(workload_path)
    try:
        return audit_events(
            cluster,
            workloads,
            read_events(events_path),
            truncated=truncated,
            work_conserving=work_conserving,
        )
    except SpecError as exc:  # only the event stream can raise here: the inputs are already loaded
        return CheckReport(Violation(0, exc.line, None, None, str(exc)), None)


def check_files(
    cluster_path: str | Path,
    workload_path: str | Path,
    events_path: str | Path,
    *,
    truncated: bool = False,
    work_conserving: bool = False,
) -> Violation | None:
    """``audit_files`` reduced to its verdict."""
    return audit_files(
        cluster_path, workload_path, events_path, truncated=truncated, work_conserving=work_conserving
    ).violation


class _Broken(Exception):
    """Unwinds the replay from wherever the first violation is found."""

    def __init__(self, violation: Violation) -> None:
        super().__init__(str(violation))
        self.violation = violation


@dataclass(slots=True, eq=False)
class _Host:
    """A node and the jobs holding placements on it; compared by identity so a removed node stays distinct."""

    node: Node
    jobs: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Job:
    spec: Workload
    submitted: bool = False
    ended: str | None = None  # "finished" or "rejected": nothing may follow
    running: bool = False
    runs: int = 0  # starts so far; tells the current run from an earlier one on the same node
    started_at: float = 0.0
    progress: float = 0.0  # checkpointed seconds of work
    placements: list[tuple[_Host, PodPlacement]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _NodeLoss:
    """A node that failed or left while jobs held it: each must have let go before the instant ends."""

    host: _Host
    jobs: tuple[tuple[str, int], ...]  # (job, run) holding the node when it was lost
    what: str
    line: int
    t: float


class _Checker:
    """The replay's live state, kept small so a log of any length checks in one pass."""

    def __init__(
        self, cluster: ClusterFile, workloads: Sequence[Workload], *, truncated: bool, work_conserving: bool
    ) -> None:
        self._truncated = truncated
        self._idle = IdleCapacity(cluster) if work_conserving else None
        self._waiting: dict[str, None] = {}
        """Jobs submitted and not running nor ended, in the order they began waiting (an ordered set)."""
        self._pools: dict[str, tuple[ClusterSpec, PoolSpec]] = {
            pool.name: (spec, pool) for spec in cluster.clusters for pool in spec.pools
        }
        self._hosts: dict[str, _Host] = {
            f"{pool.name}-{i}": _Host(build_node(spec, pool, i))
            for spec, pool in self._pools.values()
            for i in range(pool.count)
        }
        self._jobs = {w.id: _Job(w) for w in workloads}
        self._queues: dict[str, QueueSpec] | None = (
            None if cluster.queues is None else {q.name: q for q in cluster.queues}
        )
        self._cohorts: dict[str, list[QueueSpec]] = {}
        for queue in cluster.queues or []:
            if queue.cohort is not None:
                self._cohorts.setdefault(queue.cohort, []).append(queue)
        self._queue_usage: dict[tuple[str, str], int] = {}
        self._cohort_usage: dict[tuple[str, str], int] = {}
        # Judged when the instant ends: (queue or cohort, flavor) -> (line, job) of the last start raising it.
        self._queue_raised: dict[tuple[str, str], tuple[int, str]] = {}
        self._cohort_raised: dict[tuple[str, str], tuple[int, str]] = {}
        self._losses: list[_NodeLoss] = []
        self._t: float | None = None
        self._line = 0
        self._instant_line = 0  # the last line of the current instant, where its end-of-instant checks point
        self._job_id: str | None = None

    # -- the replay -----------------------------------------------------------------------------------------

    def feed(self, line: int, event: Event) -> None:
        self._line, self._job_id = line, event.job
        if self._t is not None and event.t < self._t:
            raise self._broken(
                0, f"time goes backwards: t={_num(event.t)} after t={_num(self._t)}", t=event.t
            )
        if self._t is not None and event.t > self._t:
            self._end_instant()
        self._t = event.t
        if event.event in NODE_EVENTS:
            self._node_event(event)
        elif event.event in JOB_EVENTS:
            self._job_event(event)
        elif event.event == RESERVED_EVENT:
            self._reserve(event)
        else:
            raise self._broken(0, f"unknown event kind {event.event!r}")
        self._instant_line = line

    def finish(self) -> None:
        if self._truncated:
            return  # the last instant may be cut mid-way; what still runs is reported, not judged
        self._end_instant()
        running = self._running()
        if running:
            job_id = running[0]
            started_at = self._jobs[job_id].started_at
            raise _Broken(
                Violation(
                    6,
                    None,
                    None,
                    job_id,
                    f"job {job_id} started at t={_num(started_at)} but neither finished nor was preempted "
                    "by the end of the log",
                )
            )

    def report(self, violation: Violation | None) -> CheckReport:
        return CheckReport(violation, self._t, self._running(), tuple(self._waiting))

    def _running(self) -> tuple[str, ...]:
        """Running jobs, the longest-running first."""
        return tuple(
            job_id for _, job_id in sorted((j.started_at, i) for i, j in self._jobs.items() if j.running)
        )

    def _broken(self, invariant: int, message: str, *, t: float | None = None) -> _Broken:
        return _Broken(Violation(invariant, self._line, self._t if t is None else t, self._job_id, message))

    # -- nodes ----------------------------------------------------------------------------------------------

    def _node_event(self, event: Event) -> None:
        name = event.node or ""
        if event.event == "node_added":
            self._add_node(name)
            return
        host = self._hosts.get(name)
        if host is None:
            raise self._broken(0, f"{event.event} names node {name}, which does not exist")
        if event.event == "node_up":
            host.node.up = True
            if self._idle is not None:
                self._idle.set_node_up(name, True)
            return
        if event.event == "node_removed":
            del self._hosts[name]
            self._watch(host, "was removed")
            if self._idle is not None:
                self._idle.remove_node(name)
        else:
            host.node.up = False
            self._watch(host, "went down")
            if self._idle is not None:
                self._idle.set_node_up(name, False)

    def _add_node(self, name: str) -> None:
        if name in self._hosts:
            raise self._broken(0, f"node {name} is added but already exists")
        prefix, _, index = name.rpartition("-")
        if prefix not in self._pools or not index.isdigit():
            raise self._broken(
                0, f"node_added names {name}, which is not {{pool}}-{{i}} for any pool of the cluster file"
            )
        spec, pool = self._pools[prefix]
        node = build_node(spec, pool, int(index))
        if node.name != name:
            raise self._broken(0, f"node_added names {name}; pool {pool.name} names its nodes {node.name}")
        self._hosts[name] = _Host(node)
        if self._idle is not None:
            self._idle.add_node(spec, pool, int(index))

    def _watch(self, host: _Host, what: str) -> None:
        if host.jobs:
            holders = tuple((job_id, self._jobs[job_id].runs) for job_id in sorted(host.jobs))
            self._losses.append(_NodeLoss(host, holders, what, self._line, self._t or 0.0))

    # -- the end of an instant ------------------------------------------------------------------------------

    def _end_instant(self) -> None:
        found = self._unreleased_losses() + self._quota_excesses()
        self._losses.clear()
        self._queue_raised.clear()
        self._cohort_raised.clear()
        if found:
            raise _Broken(min(found, key=lambda v: v.line or 0))
        if self._idle is not None and self._waiting and self._t is not None:
            self._check_work_conserving(self._idle, self._t)

    def _check_work_conserving(self, idle: IdleCapacity, t: float) -> None:
        waiting = [self._jobs[job_id] for job_id in self._waiting]
        fit = idle.first_idle_fit(
            [job.spec for job in waiting], {job.spec.id: job.progress for job in waiting}, t
        )
        if fit is not None:
            raise _Broken(
                Violation(
                    7,
                    self._instant_line,
                    t,
                    fit.job,
                    f"job {fit.job} waits after t={_num(t)} though it fits on capacity that is idle and "
                    f"within its queue's quota: {fit.describe()}",
                )
            )

    def _unreleased_losses(self) -> list[Violation]:
        found = []
        for loss in self._losses:
            for job_id, run in loss.jobs:
                job = self._jobs[job_id]
                if job.running and job.runs == run:
                    message = (
                        f"job {job_id} still holds node {loss.host.node.name}, which {loss.what} at "
                        f"t={_num(loss.t)}, after that instant: work on a lost node must be preempted at once"
                    )
                    found.append(Violation(2, loss.line, loss.t, job_id, message))
        return found

    def _quota_excesses(self) -> list[Violation]:
        if self._queues is None:
            return []
        found = []
        for (queue_name, flavor), (line, job_id) in self._queue_raised.items():
            message = self._over_queue_limit(self._queues[queue_name], flavor)
            if message:
                found.append(Violation(5, line, self._t, job_id, message))
        for (cohort, flavor), (line, job_id) in self._cohort_raised.items():
            message = self._over_cohort_quota(cohort, flavor)
            if message:
                found.append(Violation(5, line, self._t, job_id, message))
        return found

    def _over_queue_limit(self, queue: QueueSpec, flavor: str) -> str | None:
        if queue.unlimited:
            return None
        used = self._queue_usage.get((queue.name, flavor), 0)
        nominal = queue.nominal_milli(flavor)
        held = f"queue {queue.name} holds {_gpus(used)} GPUs of flavor {flavor}"
        if queue.cohort is None:
            if used > nominal:
                return f"{held} > its quota {_gpus(nominal)} (no cohort to borrow from)"
            return None
        limit = queue.borrow_limit_milli(flavor)
        if limit is not None and used > nominal + limit:
            return f"{held} > its quota {_gpus(nominal)} + borrowing limit {_gpus(limit)}"
        return None

    def _over_cohort_quota(self, cohort: str, flavor: str) -> str | None:
        """Within its own limit a queue may borrow only what the cohort's other queues leave idle."""
        used = self._cohort_usage.get((cohort, flavor), 0)
        members = self._cohorts[cohort]
        nominal = sum(member.nominal_milli(flavor) for member in members)
        if used <= nominal:
            return None
        shares = ", ".join(
            f"{member.name} {_gpus(self._queue_usage.get((member.name, flavor), 0))}" for member in members
        )
        return (
            f"cohort {cohort} holds {_gpus(used)} GPUs of flavor {flavor} > its queues' quota "
            f"{_gpus(nominal)} "
            f"(held: {shares}): a queue borrowed more than the cohort could lend"
        )

    # -- jobs -----------------------------------------------------------------------------------------------

    def _job_event(self, event: Event) -> None:
        job_id, kind = event.job or "", event.event
        job = self._jobs.get(job_id)
        if job is None:
            raise self._broken(0, f"job {job_id} is not in the workload")
        if job.ended == "finished" and kind == "started":
            raise self._broken(4, f"job {job_id} already finished its work but starts again")
        if job.ended:
            raise self._broken(6, f"job {job_id} was {job.ended}, yet the log goes on with {kind!r}")
        if kind == "submitted":
            if job.submitted:
                raise self._broken(0, f"job {job_id} is submitted twice")
            job.submitted = True
            self._waiting[job_id] = None
            return
        if not job.submitted:
            raise self._broken(6, f"job {job_id} is {kind} before it was submitted")
        if kind == "started":
            if job.running:
                raise self._broken(
                    0, f"job {job_id} starts while it is already running (since t={_num(job.started_at)})"
                )
            self._start(job, event)
        elif kind in ("preempted", "finished"):
            if not job.running:
                raise self._broken(0, f"job {job_id} is {kind} while it is not running")
            if kind == "finished":
                self._check_run_time(job, event.t)
                job.ended = kind
            else:
                self._save_progress(job, event.t)
            self._release(job)
        elif kind == "failed":
            if job.running:
                self._save_progress(job, event.t)
                self._release(job)
        else:  # rejected
            if job.running:
                raise self._broken(0, f"job {job_id} is rejected while it is running")
            job.ended = kind
            self._waiting.pop(job_id, None)
            if self._idle is not None:
                self._idle.forget_reservation(job_id)

    def _reserve(self, event: Event) -> None:
        """A backfill reservation (corral's extension): validated here, judged by the work-conserving check."""
        job_id = event.job or ""
        job = self._jobs.get(job_id)
        if job is None:
            raise self._broken(0, f"job {job_id} is not in the workload")
        if job_id not in self._waiting:
            raise self._broken(0, f"job {job_id} is reserved for but is not waiting")
        for placement in event.placements or []:
            if placement.node not in self._hosts:
                raise self._broken(0, f"job {job_id} is reserved node {placement.node}, which does not exist")
        if self._idle is not None:
            self._idle.reserve(job_id, event.until or 0.0, event.placements or [])

    def _start(self, job: _Job, event: Event) -> None:
        spec, placements = job.spec, event.placements or []
        pods = sorted(p.pod for p in placements)
        if pods != list(range(spec.pods)):
            raise self._broken(
                2,
                f"job {spec.id} starts pods {pods}, but its gang is pods 0..{spec.pods - 1}, each once",
            )
        held = [(self._placed_host(spec, p), p) for p in placements]
        clusters = sorted({host.node.cluster for host, _ in held})
        if len(clusters) > 1:
            raise self._broken(
                2, f"job {spec.id} starts across clusters {', '.join(clusters)}; a gang runs in one cluster"
            )
        if event.cluster is not None and clusters != [event.cluster]:
            raise self._broken(
                2, f"job {spec.id} starts in cluster {event.cluster} but its pods are on {clusters[0]}"
            )
        if self._queues is not None and spec.queue not in self._queues:
            raise self._broken(
                5, f"job {spec.id} starts in queue {spec.queue}, which the cluster file does not list"
            )
        job.running, job.runs, job.started_at, job.placements = True, job.runs + 1, event.t, held
        self._waiting.pop(spec.id, None)
        for host, placement in held:
            self._hold(job, host, placement, sign=1)
        for host, placement in held:
            self._check_capacity(host, placement)
        if self._idle is not None:
            self._idle.start(spec, clusters[0], placements, event.t)

    def _placed_host(self, spec: Workload, placement: PodPlacement) -> _Host:
        """The live host a pod lands on, once the pod is shown to fit the job's request there."""
        pod = f"pod {placement.pod} of job {spec.id}"
        host = self._hosts.get(placement.node)
        if host is None:
            raise self._broken(2, f"{pod} is placed on node {placement.node}, which does not exist")
        node = host.node
        if not node.up:
            raise self._broken(2, f"{pod} is placed on node {node.name}, which is down")
        if len(placement.gpus) != spec.gpus_per_pod:
            raise self._broken(
                2, f"{pod} holds {len(placement.gpus)} GPUs but the job asks {spec.gpus_per_pod} per pod"
            )
        for index in placement.gpus:
            if not 0 <= index < len(node.gpus):
                raise self._broken(
                    1, f"{pod} holds GPU {index} of node {node.name}, which has {len(node.gpus)} GPUs"
                )
        if spec.gpus_per_pod and (
            placement.gpu_milli != spec.gpu_milli or not _same(placement.gpu_memory_gib, spec.gpu_memory_gib)
        ):
            raise self._broken(
                2,
                f"{pod} holds {placement.gpu_milli} milli-GPU and {_num(placement.gpu_memory_gib)} GiB "
                "per GPU, "
                f"but the job asks {spec.gpu_milli} and {_num(spec.gpu_memory_gib)} GiB",
            )
        if not _same(placement.cpu, spec.cpu) or not _same(placement.memory_gib, spec.memory_gib):
            raise self._broken(
                2,
                f"{pod} holds {_num(placement.cpu)} CPU and {_num(placement.memory_gib)} GiB, "
                f"but the job asks {_num(spec.cpu)} CPU and {_num(spec.memory_gib)} GiB per pod",
            )
        models = spec.allowed_models
        if models is not None and node.gpu_model not in models:
            raise self._broken(
                2, f"{pod} is on node {node.name} with {node.gpu_model}, but the job asks {spec.gpu_model}"
            )
        if spec.must_stay_private and not node.private:
            why = "sensitive" if spec.sensitive else "not burstable"
            raise self._broken(
                3, f"{pod} is {why} but placed on node {node.name} of non-private cluster {node.cluster}"
            )
        return host

    def _hold(self, job: _Job, host: _Host, placement: PodPlacement, *, sign: int) -> None:
        """Take (sign 1) or give back (sign -1) what one pod holds, on its node and against its queue."""
        node = host.node
        node.used_cpu += sign * placement.cpu
        node.used_memory_gib += sign * placement.memory_gib
        for index in placement.gpus:
            gpu = node.gpus[index]
            gpu.used_milli += sign * placement.gpu_milli
            gpu.used_memory_gib += sign * placement.gpu_memory_gib
        if sign > 0:
            host.jobs.add(job.spec.id)
        else:
            host.jobs.discard(job.spec.id)
        if self._queues is not None:
            milli = placement.gpu_milli * len(placement.gpus)
            self._charge(self._queues[job.spec.queue], node.flavor, sign * milli, job.spec.id)

    def _charge(self, queue: QueueSpec, flavor: str, milli: int, job_id: str) -> None:
        """Count GPUs against a queue and its cohort; a rise is judged when the instant ends."""
        if not milli:
            return
        mark = (self._line, job_id)
        key = (queue.name, flavor)
        self._queue_usage[key] = self._queue_usage.get(key, 0) + milli
        if milli > 0:
            self._queue_raised[key] = mark
        if queue.cohort is not None:
            key = (queue.cohort, flavor)
            self._cohort_usage[key] = self._cohort_usage.get(key, 0) + milli
            if milli > 0:
                self._cohort_raised[key] = mark

    def _release(self, job: _Job) -> None:
        """End the current run; the job waits again unless its end is ``finished``."""
        for host, placement in job.placements:
            self._hold(job, host, placement, sign=-1)
        job.running, job.placements = False, []
        if job.ended is None:
            self._waiting[job.spec.id] = None
        if self._idle is not None:
            self._idle.stop(job.spec.id)

    def _check_capacity(self, host: _Host, placement: PodPlacement) -> None:
        node = host.node
        if node.used_cpu > node.cpu + CAPACITY_TOLERANCE:
            raise self._broken(
                1, f"node {node.name} holds {_num(node.used_cpu)} CPU > {_num(node.cpu)} {self._on(host)}"
            )
        if node.used_memory_gib > node.memory_gib + CAPACITY_TOLERANCE:
            raise self._broken(
                1,
                f"node {node.name} holds {_num(node.used_memory_gib)} GiB memory > {_num(node.memory_gib)} "
                f"{self._on(host)}",
            )
        for index in placement.gpus:
            gpu = node.gpus[index]
            if gpu.used_milli > MILLI_PER_GPU:
                raise self._broken(
                    1,
                    f"GPU {index} of node {node.name} holds {gpu.used_milli} milli-GPU > {MILLI_PER_GPU} "
                    f"{self._on(host, index)}",
                )
            if gpu.used_memory_gib > gpu.memory_gib + CAPACITY_TOLERANCE:
                raise self._broken(
                    1,
                    f"GPU {index} of node {node.name} holds {_num(gpu.used_memory_gib)} GiB > "
                    f"{_num(gpu.memory_gib)} GiB of GPU memory {self._on(host, index)}",
                )

    def _on(self, host: _Host, gpu: int | None = None) -> str:
        """The jobs behind an overload, so the reader knows which starts to look at."""
        names = [
            job_id
            for job_id in sorted(host.jobs)
            if gpu is None or any(h is host and gpu in p.gpus for h, p in self._jobs[job_id].placements)
        ]
        return f"(jobs {', '.join(names)})"

    # -- run time -------------------------------------------------------------------------------------------

    def _save_progress(self, job: _Job, t: float) -> None:
        job.progress = checkpointed_progress(job.spec, job.progress + t - job.started_at)

    def _check_run_time(self, job: _Job, t: float) -> None:
        left = job.spec.duration - job.progress
        expected = job.started_at + left
        if not math.isclose(t, expected, rel_tol=FINISH_REL_TOLERANCE, abs_tol=FINISH_ABS_TOLERANCE):
            saved = f" less {_num(job.progress)} s checkpointed" if job.progress else ""
            raise self._broken(
                4,
                f"job {job.spec.id} started at t={_num(job.started_at)} with {_num(left)} s of work left "
                f"(duration {_num(job.spec.duration)} s{saved}), so it finishes at t={_num(expected)}, "
                f"not t={_num(t)}",
            )


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=0.0, abs_tol=CAPACITY_TOLERANCE)


def _gpus(milli: int) -> str:
    return _num(milli_to_gpus(milli))


def _num(x: float) -> str:
    """Short enough to read, precise enough to tell a millisecond apart."""
    return f"{x:.3f}".rstrip("0").rstrip(".")
