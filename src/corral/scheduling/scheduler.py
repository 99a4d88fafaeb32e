"""``schedule``: one scheduling round, a pure function of a snapshot and the pending jobs.

The round, step by step:
1. Jobs that can never run (unknown queue, no node shape can hold them, over any quota they could ever
   get, sensitive with no private room) are rejected with the reason.
2. The rest are ordered: queues by weighted dominant share (DRF), so the queue using least of its fair
   share goes next; inside a queue by priority, then by the policy's job order (response ratio under
   the default policy, ``corral.scheduling.ordering``; else submission, FIFO).
3. Each job tries its placement domains (cluster, flavor), private and cheap first: quota, then a gang
   placement by filter and score plugins. If none works and the policy allows, the fewest lower-priority
   or borrowing jobs are preempted to make room.
4. A job that still cannot start may ask for new nodes of an elastic pool, and gets a reason. Under
   StrictFIFO it also blocks the rest of its queue. Elastic nodes idle too long are given back.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from itertools import groupby
from operator import attrgetter

from corral.core.budgets import BudgetSpec, period_bounds
from corral.core.nodes import Node
from corral.core.units import MILLI_PER_GPU, spoken_span
from corral.core.workloads import PodRequest, Workload, checkpointed_progress
from corral.scheduling.backfill import (
    earliest_fit,
    idle_reserved,
    overlaps,
    reservation_for,
    running_gpu_seconds_left,
    total_runtime,
)
from corral.scheduling.bursting import BUDGET_TOLERANCE_USD, BurstVerdict, burst_cost, burst_verdict
from corral.scheduling.decisions import (
    BehindReservation,
    Pending,
    PendingReason,
    Placement,
    Preempt,
    Reservation,
    SchedulingResult,
    Start,
)
from corral.scheduling.elastic import plan_scale_down, plan_scale_up
from corral.scheduling.feasibility import Feasibility, feasibility, rejection_of
from corral.scheduling.gpu_choice import share_fits
from corral.scheduling.kind_waits import OutlookWait
from corral.scheduling.migration import Candidate, candidates
from corral.scheduling.ordering import JobOrder, drain_horizon, order_by_response_ratio
from corral.scheduling.placement import (
    FitFailure,
    largest_free_block,
    needs_at_least,
    place_gang,
    placement_of,
)
from corral.scheduling.policies import Ordering, Policy
from corral.scheduling.preemption import Unprofitable, find_victims, may_preempt
from corral.scheduling.quota import only_limit_refuses, quota_shortfall
from corral.scheduling.ranking import place_one
from corral.scheduling.snapshot import Allocation, Domain, Snapshot

Cause = str | FitFailure | BehindReservation
"""Why a job did not start in one domain: a quota or budget sentence, the filters that rejected every
node, or the reservation it would overrun."""


def schedule(
    snapshot: Snapshot,
    pending: Sequence[Workload],
    policy: Policy,
    now: float,
    progress: dict[str, float] | None = None,
) -> SchedulingResult:
    """Decide which pending jobs start where, which running jobs are preempted, and why the rest wait.

    ``progress`` gives the checkpointed progress of requeued jobs (seconds of work already saved); it is
    recorded on their allocation. The snapshot is returned unchanged.
    """
    if policy.shaped is not None:
        raise ValueError(
            f"policy {policy.name} learns the workload's typical pod shapes first: "
            "use policy.for_workload(pods) or get_policy(name, pods)"
        )
    round_ = _Round(snapshot, policy, now, dict(progress or {}))
    mark = snapshot.mark()
    try:
        round_.run(pending)
    finally:
        snapshot.rollback(mark)
    return round_.result


@dataclass
class _Round:
    snapshot: Snapshot
    policy: Policy
    now: float
    progress: dict[str, float]
    result: SchedulingResult = field(default_factory=SchedulingResult)
    started: set[str] = field(default_factory=set)
    no_fit: dict[Domain, list[tuple[PodRequest, int, FitFailure]]] = field(default_factory=dict)
    preemptible: dict[tuple[str, int, int, tuple[Domain, ...]], bool] = field(default_factory=dict)
    requested: Counter[str] = field(default_factory=Counter)
    promised: Counter[tuple[str, str]] = field(default_factory=Counter)
    preempted_queue: dict[str, str] = field(default_factory=dict)
    no_migration: list[PodRequest] = field(default_factory=list)
    unprofitable: dict[str, Unprofitable] = field(default_factory=dict)
    """Jobs whose preemption was weighed and refused: what their explanation says about it."""
    fruitless_searches: dict[tuple[object, ...], Unprofitable | None] = field(default_factory=dict)
    """Victim searches that found no set (None) or one that does not pay, per job kind and domain, until
    the round starts or stops a job: a deep queue holds many jobs of one kind, and each search releases
    running jobs one by one and weighs a preemption by replaying finishes."""
    public_delay: dict[PodRequest, float] = field(default_factory=dict)
    public_price: dict[tuple[int, object], float | None] = field(default_factory=dict)
    """``_cheapest_public_gpu_hour``; the two below ``_has_public`` and ``_private``: asked per job tried."""
    public_domains: dict[tuple[Domain, ...], bool] = field(default_factory=dict)
    private_domains: dict[tuple[Domain, ...], tuple[Domain, ...]] = field(default_factory=dict)
    feasible: dict[str, Feasibility] = field(default_factory=dict)
    """Per job kind, its feasibility (``_sort_kind``): asked again by every try of a job of that kind."""
    reservations: dict[Domain, list[Reservation]] = field(default_factory=dict)
    """Per domain, the room held for the first jobs that found none there, in the order they were made
    (at most the policy's ``reservations_per_domain``; ``corral.scheduling.backfill``)."""
    budget_left: dict[str, float] = field(default_factory=dict)
    """USD each hard-budgeted queue may still commit to bursts this round (``_budget_left``)."""
    placed_and_refused: bool = False
    """Whether the job ``_try`` tries found room but was refused it (a reservation, a hard budget)."""
    expected_left: dict[tuple[str, float], float] = field(default_factory=dict)
    """Per job kind and checkpointed progress, the run time left by the estimates (``_expected_left``)."""
    behind: dict[tuple[Domain, PodRequest], tuple[tuple[int, int, int], float, BehindReservation]] = field(
        default_factory=dict
    )
    """Per domain and one-pod shape, the shortest run time a reservation held back, with the round's state
    then (``_state``): a job of that shape that runs at least as long is held back by the same reservation,
    without placing it again (a deep queue behind two reservations placed each of its jobs every round)."""
    uniform_queues: set[str] = field(default_factory=set)
    """The queues whose waiting jobs are all of one kind: ``_tell_alike`` tells all of them at once."""
    waiting_kinds: dict[str, Pending] = field(default_factory=dict)
    """Per job kind (``Workload.kind``: its fields but its id and submit time), the explanation of one
    that found nothing, until the round changes what the next one would find (``_repeatable``): a deep queue holds
    thousands of jobs of one kind, and trying each again cost a round time in proportion to the queue."""
    outlook_waits: dict[str, OutlookWait] = field(default_factory=dict)
    """Per job kind, what a job of it with a forecast of its own found, but that forecast: the others
    with one are told from it (``corral.scheduling.kind_waits``); forgotten with ``waiting_kinds``."""

    def run(self, pending: Sequence[Workload]) -> None:
        self._enforce_hard_budgets()
        queues: dict[str, list[Workload]] = {}
        # Feasibility depends on fields of the kind only: asked once per kind, not once per job; a kind
        # that may be tried has its queue's list, the others what each of their jobs is told.
        kinds: dict[str, tuple[list[Workload] | None, Feasibility, Pending | None]] = {}
        tried_kinds: dict[int, dict[str, Workload]] = {}  # per queue's list (by id), its kinds' first jobs
        for kind, run in groupby(pending, _kind):  # a run of one kind is moved in C
            alike = list(run)
            known = kinds.get(kind)
            if known is None:
                known = kinds[kind] = self._sort_kind(alike[0], queues)
                if known[0] is not None:
                    tried_kinds.setdefault(id(known[0]), {})[kind] = alike[0]
            into, verdict, told = known
            if into is not None:
                into.extend(alike)
            elif told is not None:
                self.result.pending.update(dict.fromkeys(map(_job_id, alike), told))
            else:
                self.result.rejections.extend(rejection_of(job, verdict) for job in alike)
        held = set(self.snapshot.reserved) if self.policy.backfill else set()
        self._order(queues, tried_kinds)
        # Jobs that held a reservation last round come first, so a newcomer cannot take their room
        # before the reservation is made again.
        for jobs in queues.values() if held else ():
            holders = [j for j in jobs if j.id in held]
            if holders:  # by id: list.remove compared jobs field by field (pydantic), each to every other
                jobs[:] = [j for j in jobs if j.id not in held]
            for holder in holders:
                self._try(holder)
        queues = {key: jobs for key, jobs in queues.items() if jobs}
        # Heap of (share, version, queue); a queue whose share changed gets a new entry with a new
        # version, and entries with an old version are skipped when popped.
        version = dict.fromkeys(queues, 0)
        heap = [(self._share(key), 0, key) for key in queues]
        heapq.heapify(heap)
        cursor = dict.fromkeys(queues, 0)
        passed_over: dict[str, list[Workload]] = {key: [] for key in queues}
        blocked_queues: set[str] = set()
        while heap:
            share, entry_version, key = heapq.heappop(heap)
            if entry_version != version[key]:
                continue
            jobs = queues[key]
            while True:  # while its jobs wait and change nothing, this queue stays first: no heap turns
                job = jobs[cursor[key]]
                cursor[key] += 1
                preempted_before = len(self.result.preemptions)
                started = self._try(job)
                if started or self.policy.ordering is Ordering.STRICT_FIFO:
                    break
                passed_over[key].append(job)
                if len(self.result.preemptions) != preempted_before:
                    break
                # Its next jobs of kinds already told to wait are told so at once.
                told = self._tell_alike(key, jobs, cursor[key])
                passed_over[key] += jobs[cursor[key] : told]
                cursor[key] = told
                if cursor[key] >= len(jobs):
                    break
            if not started and self.policy.ordering is Ordering.STRICT_FIFO:
                blocked_queues.add(key)
                behind = Pending(
                    PendingReason.BLOCKED,
                    note=f"StrictFIFO: waiting behind {job.id}, head of its queue",
                    at=self.now,
                )
                self.result.pending.update((blocked.id, behind) for blocked in jobs[cursor[key] :])
                continue
            changed = {key} if started else set()
            preemptions = self.result.preemptions[preempted_before:]
            for preempt in preemptions:
                victim_queue = self.preempted_queue[preempt.job]
                changed.add(victim_queue if self.policy.fair_share else "")
            if preemptions:
                # Victims may free more than the preemptor needed: the jobs already passed over in this
                # round are offered that room again, in their order, before anyone behind them.
                for queue, skipped in passed_over.items():
                    if skipped:
                        queues[queue] = skipped + queues[queue][cursor[queue] :]
                        cursor[queue] = 0
                        passed_over[queue] = []
                        changed.add(queue)
            for queue in changed:
                if queue in queues and queue not in blocked_queues and cursor[queue] < len(queues[queue]):
                    version[queue] += 1
                    heapq.heappush(heap, (self._share(queue), version[queue], queue))
            if key not in changed and cursor[key] < len(jobs):
                heapq.heappush(heap, (share, version[key], key))
        self._describe_final_state()
        self._wake_when_budgets_run_out()
        self.result.scale_downs = plan_scale_down(
            self.snapshot, self.now, self.policy.scale_down_idle_seconds
        )

    def _order(self, queues: dict[str, list[Workload]], tried_kinds: dict[int, dict[str, Workload]]) -> None:
        """Sort each queue's jobs by priority (if the policy says so), then job order, then id.

        A queue whose jobs all expect the same run time (one kind: one spec submitted many times) is in
        response-ratio order once in submission order: the ratio falls as the submit time grows, and the
        drain horizon moves all such jobs or none. Its order and horizon are not computed then, nor its
        priority sort when it holds one kind: on a deep queue of alike jobs they were most of a round."""
        by_ratio: set[str] = set()
        if self.policy.job_order is JobOrder.RESPONSE_RATIO:
            by_ratio = {
                key
                for key, jobs in queues.items()
                if not self._one_expected_run_time(jobs, tried_kinds[id(jobs)].values())
            }
        horizon = math.inf
        if by_ratio:  # over the jobs in arrival order, as they came: the sum is the same to the last bit
            horizon = drain_horizon(
                (job for jobs in queues.values() for job in jobs),
                self._expected_left,
                running_gpu_seconds_left(self.snapshot, self.now),
                sum(self.snapshot.capacity()[0].values()) / MILLI_PER_GPU,
            )
        for key, jobs in queues.items():
            alike = tried_kinds[id(jobs)]
            jobs.sort(key=_job_id)  # then by submit time, stable: (submit, id) order without a tuple per job
            jobs.sort(key=_submit)
            if key in by_ratio:
                order_by_response_ratio(jobs, self.now, self._expected_left, horizon)
            if self.policy.priority and len({job.priority for job in alike.values()}) > 1:
                jobs.sort(key=_priority, reverse=True)  # stable, even reversed: ties keep submit order
            if len(alike) == 1:
                self.uniform_queues.add(key)

    def _one_expected_run_time(self, jobs: Sequence[Workload], firsts: Iterable[Workload]) -> bool:
        """Whether every job in ``jobs`` expects the same run time: their kinds' first jobs (``firsts``)
        do, and no job has checkpointed progress of its own."""
        progress = self.progress
        if progress and any(job.id in progress for job in jobs):
            return False
        return len({self._expected_left(job) for job in firsts}) <= 1

    def _sort_kind(
        self, job: Workload, queues: dict[str, list[Workload]]
    ) -> tuple[list[Workload] | None, Feasibility, Pending | None]:
        """What becomes of jobs of ``job``'s kind: their queue's list (they are tried), else the
        explanation they wait with (no node holds them yet), else neither (they are rejected)."""
        verdict = self.feasible[job.kind] = feasibility(self.snapshot, job, job.pod)
        if verdict.rejection is not None:
            return None, verdict, None
        if verdict.awaiting_nodes is not None:
            return None, verdict, Pending(PendingReason.NO_NODE_YET, note=verdict.awaiting_nodes, at=self.now)
        return queues.setdefault(job.queue if self.policy.fair_share else "", []), verdict, None

    def _tell_alike(self, key: str, jobs: Sequence[Workload], first: int) -> int:
        """Tell the jobs from ``first`` on whose kind the round already told to wait the same, up to the
        first of another kind; returns its index."""
        waiting_kinds, pending = self.waiting_kinds, self.result.pending
        end = len(jobs)
        if first < end and key in self.uniform_queues:
            known = waiting_kinds.get(jobs[first].kind)
            if known is None:
                return first
            pending.update(dict.fromkeys(map(_job_id, jobs[first:]), known))  # in C: one kind to the end
            return end
        index = first
        while index < end:
            job = jobs[index]
            known = waiting_kinds.get(job.kind)
            if known is None:
                break
            pending[job.id] = known
            index += 1
        return index

    def _describe_final_state(self) -> None:
        """Where no node had room, add to each explanation the largest free block each domain has now
        that every start and preemption of the round is made: an answer read later must not describe a
        state the round itself changed. Once per explanation: alike jobs share theirs."""
        blocks: dict[Domain, str] = {}
        explanations = self.result.pending.values()
        distinct = dict(zip(map(id, explanations), explanations, strict=True))  # in C: alike jobs share one
        for waiting in distinct.values():
            for domain, cause in waiting.causes:
                if isinstance(cause, FitFailure):
                    block = blocks.get(domain)
                    if block is None:
                        block = blocks[domain] = largest_free_block(self.snapshot.domains.get(domain, ()))
                    waiting.free[domain] = block
        held = self.result.held_by_limits
        self.result.held_by_limits = {
            job: domains for job, domains in held.items() if job in self.result.pending
        }

    def _expected_left(self, job: Workload) -> float:
        """Estimated seconds ``job`` still has to run once started, remembered per kind and progress for
        the round: a deep queue holds thousands of jobs of a few kinds."""
        progress = self.progress.get(job.id, 0.0)
        key = (job.kind, progress)
        left = self.expected_left.get(key)
        if left is None:
            total = total_runtime(job, progress, self.snapshot.runtime_estimate)
            left = self.expected_left[key] = max(total - progress, 0.0)
        return left

    def _share(self, key: str) -> tuple[float, float, float]:
        """How far a queue is into other queues' quota, smallest first (Kueue's fair sharing).

        First what it borrows: per GPU flavor, its usage beyond its nominal quota as a fraction of what
        its cohort can lend, the largest such fraction, divided by its weight. A queue within its quota
        borrows nothing, so every queue using only its own quota goes before any borrower: borrowing is
        what fair share arbitrates, and a queue's own quota is its right (DRF over the whole cluster
        would instead hold back a team with a large quota that is merely using it). Among queues equal
        on that, the one using the smallest fraction of its own quota, then weighted DRF over the
        whole cluster (GPU flavors and CPU), which also orders queues without quota.
        """
        if not self.policy.fair_share:
            return (0.0, 0.0, 0.0)
        snapshot = self.snapshot
        gpu_capacity, cpu_capacity = snapshot.capacity()
        queues = snapshot.queues
        spec = queues.get(key) if queues is not None else None
        weight = spec.weight if spec is not None else 1.0
        dominant = snapshot.queue_cpu[key] / cpu_capacity if cpu_capacity else 0.0
        for flavor, total in gpu_capacity.items():
            if total:
                dominant = max(dominant, snapshot.queue_gpu[(key, flavor)] / total)
        if spec is None or spec.unlimited:
            return (0.0, 0.0, dominant / weight)
        borrowed = own = 0.0
        for flavor in gpu_capacity:
            used = snapshot.queue_gpu[(key, flavor)]
            nominal = spec.nominal_milli(flavor)
            if nominal:
                own = max(own, min(used, nominal) / nominal)
            lendable = snapshot.cohort_nominal[(spec.cohort, flavor)] if spec.cohort else 0
            if used > nominal:
                borrowed = max(borrowed, (used - nominal) / (lendable or gpu_capacity[flavor] or 1))
        return (borrowed / weight, own / weight, dominant / weight)

    def _try(self, job: Workload) -> bool:
        kind = job.kind
        known = self.waiting_kinds.get(kind)
        if known is not None:
            self.result.pending[job.id] = known
            return False
        outlook = self.outlook_waits.get(kind)
        if outlook is not None and self._told_with_outlook(job, outlook):
            return False
        pod = job.pod
        feasible = self.feasible.get(kind) or feasibility(self.snapshot, job, pod)
        domains = feasible.domains
        verdict = None
        if self._has_public(domains):
            verdict = self._burst_verdict(job)
            if not verdict.allowed:
                domains = self._private(domains)
        failures: list[tuple[Domain, Cause]] = []
        self.placed_and_refused = False
        for domain in domains:
            outcome = self._admit(job, pod, domain)
            if isinstance(outcome, list):
                self._start(job, domain, outcome)
                return True
            failures.append((domain, outcome))
        if self.policy.migrate_shares and job.pods == 1 and self._migrate_for(job, pod, domains):
            return True
        may_preempt = self.policy.preemption and self._may_preempt(job, domains)
        if may_preempt:
            for domain in domains:
                if self._preempt_for(job, pod, domain):
                    return True
            self.behind.clear()  # learnt while victims were set aside, in a state now undone
        provisioning = self._wait_for_nodes(job, domains)
        refused = self.unprofitable.get(job.id)
        reservation = self._reserve(job, pod, failures) if self.policy.backfill and _wide(job) else None
        notes = [
            feasible.kept_private,
            reservation.describe(self.now, timed=not self._guessed(job)) if reservation is not None else "",
            refused.describe() if refused is not None else "",
            verdict.note if verdict is not None else "",
            self._outlook(job),
        ]
        if provisioning is None:  # the explanation made once, with its notes: a deep queue makes thousands
            pending = _explain(failures, self.now, "; ".join(filter(None, notes)))
        elif any(notes):
            pending = replace(provisioning, note="; ".join(filter(None, [provisioning.note, *notes])))
        else:
            pending = provisioning
        if verdict is not None and verdict.recheck_at is not None:
            self._wake_at(verdict.recheck_at)
        self.result.pending[job.id] = pending
        per_job = verdict is not None or may_preempt or provisioning is not None or refused is not None
        per_job = per_job or self.placed_and_refused  # placing again would draw from the snapshot's rng
        if not per_job and self._repeatable(job, failures, reservation):
            self.waiting_kinds[kind] = pending
        elif (
            not per_job
            and self._own_forecast(job)
            and self._repeatable_but_outlook(job, failures, reservation)
        ):
            self.outlook_waits[kind] = self._outlook_wait(job, failures, feasible.kept_private)
        return False

    def _outlook_wait(
        self, job: Workload, failures: Sequence[tuple[Domain, Cause]], kept_private: str | None
    ) -> OutlookWait:
        limited = tuple(
            domain
            for domain, cause in failures
            if isinstance(cause, str)  # a quota shortfall: a budget's refusal is tried per job
            and only_limit_refuses(self.snapshot, job.queue, domain[1], job.gpu_demand_milli)
        )
        return OutlookWait(tuple(failures), kept_private, limited)

    def _told_with_outlook(self, job: Workload, outlook: OutlookWait) -> bool:
        """Tell ``job`` what its own try would: the kind's ``outlook`` with its own forecast, when
        nothing of its own (progress, nodes on their way, a preemption weighed) could change it."""
        if job.id in self.progress or job.id in self.snapshot.awaiting_nodes or job.id in self.unprofitable:
            return False
        self.placed_and_refused = False
        for domain in outlook.held_by_limits:
            self.result.held_by_limits.setdefault(job.id, set()).add(domain)
        note = "; ".join(filter(None, [outlook.kept_private, self._outlook(job)]))
        pending = _explain(list(outlook.failures), self.now, note)
        self.result.pending[job.id] = pending
        if not self._own_forecast(job):
            self.waiting_kinds[job.kind] = pending
        return True

    def _own_forecast(self, job: Workload) -> bool:
        forecast = self.snapshot.forecast
        return forecast is not None and job.id in forecast.private_start

    def _forget_kinds(self) -> None:
        """What the round remembered of how kinds wait no longer holds (a start, a new failure...)."""
        self.waiting_kinds.clear()
        self.outlook_waits.clear()

    def _repeatable(
        self,
        job: Workload,
        failures: Sequence[tuple[Domain, str | FitFailure]],
        reservation: Reservation | None,
    ) -> bool:
        """Whether the next job of ``job``'s kind would wait for the same reasons, until a start, a
        preemption, a scale-up or a new kind of placement failure: true unless its outcome depended on
        its own id or submit time (a forecast, a burst verdict, a preemption weighed, nodes on their way)
        or on what it changed (the reservation it made; without one, a wide job must have found every
        domain it did not fit already reserved). The caller checked the rest."""
        return not self._own_forecast(job) and self._repeatable_but_outlook(job, failures, reservation)

    def _repeatable_but_outlook(
        self,
        job: Workload,
        failures: Sequence[tuple[Domain, str | FitFailure]],
        reservation: Reservation | None,
    ) -> bool:
        """``_repeatable``, but for a forecast of the job's own (``OutlookWait``)."""
        if job.id in self.snapshot.awaiting_nodes:
            return False
        if self.policy.backfill and _wide(job):
            unreserved = any(
                isinstance(f, FitFailure) and not self._reservations_full(d) for d, f in failures
            )
            return reservation is None and not unreserved
        return True

    def _burst_verdict(self, job: Workload) -> BurstVerdict:
        queues = self.snapshot.queues
        return burst_verdict(
            job,
            queues.get(job.queue) if queues is not None else None,
            self.policy.bursting,
            self.now,
            self.snapshot.public_spend.get(job.queue, 0.0),
            self.snapshot.forecast,
            self._public_delay(job.pod),
            self._cheapest_public_gpu_hour(job),
        )

    def _has_public(self, domains: tuple[Domain, ...]) -> bool:
        """Whether any of ``domains`` is on a public cluster, once per tuple of domains and round."""
        public = self.public_domains.get(domains)
        if public is None:
            clusters = self.snapshot.clusters
            public = self.public_domains[domains] = any(not clusters[d[0]].private for d in domains)
        return public

    def _private(self, domains: tuple[Domain, ...]) -> tuple[Domain, ...]:
        """Those of ``domains`` on private clusters, once per tuple of domains and round."""
        private = self.private_domains.get(domains)
        if private is None:
            clusters = self.snapshot.clusters
            private = self.private_domains[domains] = tuple(d for d in domains if clusters[d[0]].private)
        return private

    def _cheapest_public_gpu_hour(self, job: Workload) -> float | None:
        """``Snapshot.cheapest_public_gpu_hour``, once per GPUs per pod and models, and round: it looks at
        every pool."""
        key = (job.gpus_per_pod, job.allowed_models)
        if key not in self.public_price:
            self.public_price[key] = self.snapshot.cheapest_public_gpu_hour(job)
        return self.public_price[key]

    def _public_delay(self, pod: PodRequest) -> float:
        """``Snapshot.public_start_delay``, once per pod shape and round: it looks at every public node."""
        delay = self.public_delay.get(pod)
        if delay is None:
            delay = self.public_delay[pod] = self.snapshot.public_start_delay(pod)
        return delay

    def _outlook(self, job: Workload) -> str:
        """The forecast private start and what bursting would cost: what ``corral why`` shows."""
        forecast = self.snapshot.forecast
        start = forecast.private_start.get(job.id) if forecast is not None else None
        if start is None:
            return ""
        if start > self.now and self._guessed(job):
            text = "forecast: start unknown until run times are learned (from similar jobs that finish)"
        else:
            text = f"forecast: starts on private clusters in {spoken_span(start - self.now)}"
        price = self._cheapest_public_gpu_hour(job) if not job.must_stay_private else None
        cost = burst_cost(job, forecast, price)
        if cost is not None:
            text += f"; bursting would cost about {cost:.2f} USD"
        return text

    def _guessed(self, job: Workload) -> bool:
        """Whether a start time told for ``job`` would rest on run times nobody learned yet
        (``Forecast.guessed``): then it is not told. Without a forecast (the simulator), times are told."""
        forecast = self.snapshot.forecast
        return forecast is not None and bool(forecast.guessed - {job.id})

    def _wake_at(self, t: float) -> None:
        if t > self.now:
            wake = self.result.wake_at
            self.result.wake_at = t if wake is None else min(wake, t)

    def _wait_for_nodes(self, job: Workload, domains: Sequence[Domain]) -> Pending | None:
        """If new nodes of an elastic pool are (or can be) on their way for ``job``, say so."""
        pool = self.snapshot.awaiting_nodes.get(job.id)
        if pool is None:
            scale_up = plan_scale_up(self.snapshot, job, domains, self.requested, self.promised)
            if scale_up is None:
                return None
            self.result.scale_ups.append(scale_up)
            self._forget_kinds()
            pool = scale_up.pool
        delay = self.snapshot.pools[pool].provision_seconds
        return Pending(
            PendingReason.PROVISIONING,
            note=f"waiting for new nodes of pool {pool} (ready {delay:g} s after request)",
            at=self.now,
        )

    def _may_preempt(self, job: Workload, domains: tuple[Domain, ...]) -> bool:
        """``may_preempt``, remembered per job kind until the round starts or stops a job."""
        key = (job.queue, job.priority, job.gpu_demand_milli, domains)
        known = self.preemptible.get(key)
        if known is None:
            known = self.preemptible[key] = may_preempt(self.snapshot, job, domains)
        return known

    def _admit(self, job: Workload, pod: PodRequest, domain: Domain) -> list[Placement] | Cause:
        shortfall = quota_shortfall(self.snapshot, job.queue, domain[1], job.gpu_demand_milli)
        if shortfall is not None:
            if only_limit_refuses(self.snapshot, job.queue, domain[1], job.gpu_demand_milli):
                self.result.held_by_limits.setdefault(job.id, set()).add(domain)
            return shortfall
        failed = self.no_fit.setdefault(domain, [])
        for failed_pod, failed_pods, failure in failed:
            if job.pods >= failed_pods and needs_at_least(pod, failed_pod):
                return failure
        held_back = self._held_back_as_before(job, pod, domain)
        if held_back is not None:
            self.placed_and_refused = True
            return held_back
        outcome = self._place(job, pod, domain)
        if isinstance(outcome, FitFailure):
            failed[:] = [f for f in failed if not (f[1] >= job.pods and needs_at_least(f[0], pod))]
            failed.append((pod, job.pods, outcome))
            self._forget_kinds()  # a job of a kind remembered may now be told of this failure
            return outcome
        self.placed_and_refused = True  # unless it starts: a backfill or budget refusal follows
        outcome = self._around_reservation(job, pod, domain, outcome)
        if isinstance(outcome, BehindReservation):
            self._remember_held_back(job, pod, domain, outcome)
            return outcome
        return self._over_budget(job, domain, outcome) or outcome

    def _place(self, job: Workload, pod: PodRequest, domain: Domain) -> list[Placement] | FitFailure:
        if job.pods == 1:
            return place_one(self.snapshot, domain, pod, self.policy.scoring)
        return place_gang(
            self.snapshot.domains.get(domain, ()), pod, job.pods, self.policy.scoring, self.snapshot.rng
        )

    def _reserve(
        self, job: Workload, pod: PodRequest, failures: Sequence[tuple[Domain, Cause]]
    ) -> Reservation | None:
        """Hold room for ``job`` where it would fit soonest, in domains with reservations left to make
        where only room (not quota) stopped it; the earliest such moment and the GPUs it would get then.
        The GPUs earlier reservations of the domain hold are taken for good in that look ahead, so no
        two reservations count on the same GPU (conservative: the earlier holder may end first)."""
        best: Reservation | None = None
        for domain, failure in failures:
            if not isinstance(failure, FitFailure) or self._reservations_full(domain):
                continue
            earlier = self.reservations.get(domain, [])

            def attempt(
                domain: Domain = domain, earlier: list[Reservation] = earlier
            ) -> list[Placement] | None:
                held = [gpus for reservation in earlier for gpus in idle_reserved(self.snapshot, reservation)]
                with self.snapshot.gpus_set_aside(held):
                    outcome = self._place(job, pod, domain)
                return outcome if isinstance(outcome, list) else None

            fit = earliest_fit(self.snapshot, domain, attempt, self.now, pod, job.pods)
            if fit is not None and (best is None or fit[0] < best.until):
                best = reservation_for(job, domain, *fit)
        if best is not None:
            self.reservations.setdefault(best.domain, []).append(best)
            self.result.reservations.append(best)
        return best

    def _reservations_full(self, domain: Domain) -> bool:
        return len(self.reservations.get(domain, ())) >= self.policy.reservations_per_domain

    def _around_reservation(
        self, job: Workload, pod: PodRequest, domain: Domain, placements: list[Placement]
    ) -> list[Placement] | BehindReservation:
        """``placements``, unless they take idle GPUs reserved for other jobs and ``job`` would still
        run when those jobs need them: then a placement that leaves them alone, or why there is none
        (naming the first such holder)."""
        reservations = [r for r in self.reservations.get(domain, ()) if r.job != job.id]
        if not reservations:
            return placements
        held_by = [(r, idle_reserved(self.snapshot, r)) for r in reservations]
        if not any(overlaps(placements, held) for _, held in held_by):
            return placements
        left, bound = self._time_left(job)
        # Done before a reserved job needs its GPUs: backfill onto them; the others are left alone.
        overrun = [(r, held) for r, held in held_by if self.now + left > r.until]
        if not any(overlaps(placements, held) for _, held in overrun):
            return placements
        with self.snapshot.gpus_set_aside([gpus for _, held in overrun for gpus in held]):
            outcome = self._place(job, pod, domain)
        if isinstance(outcome, list):
            return outcome
        first = min((r for r, held in overrun if overlaps(placements, held)), key=attrgetter("until"))
        return BehindReservation(first.job, first.until - self.now, bound, left)

    def _time_left(self, job: Workload) -> tuple[float, str]:
        """How long ``job`` would still run, as backfill judges it, and by what."""
        progress = self.progress.get(job.id, 0.0)
        if job.time_limit is not None:
            return job.time_limit - progress, "time limit"
        return total_runtime(job, progress, self.snapshot.runtime_estimate) - progress, "estimated run time"

    def _state(self) -> tuple[int, int, int]:
        """Changes with every start, preemption and reservation of the round: what placements depend on."""
        return len(self.result.starts), len(self.result.preemptions), len(self.result.reservations)

    def _holds_reservation(self, job: Workload, domain: Domain) -> bool:
        for reservation in self.reservations.get(domain, ()):  # a loop: asked twice per job behind one
            if reservation.job == job.id:
                return True
        return False

    def _remember_held_back(
        self, job: Workload, pod: PodRequest, domain: Domain, outcome: BehindReservation
    ) -> None:
        if job.pods != 1 or self._holds_reservation(job, domain):
            return  # a gang's placement draws from the snapshot's rng; a holder's own room is not held
        known = self.behind.get((domain, pod))
        if known is None or known[0] != self._state() or outcome.runs_for < known[1]:
            self.behind[(domain, pod)] = (self._state(), outcome.runs_for, outcome)

    def _held_back_as_before(
        self, job: Workload, pod: PodRequest, domain: Domain
    ) -> BehindReservation | None:
        """What ``_around_reservation`` would answer ``job``, if a job of its shape that runs no longer was
        held back since the round last changed: the same placement overlaps a superset of the reserved
        GPUs it overruns, the earliest of them the same, and a placement that leaves those alone still
        fails (``_remember_held_back``)."""
        if job.pods != 1:
            return None
        known = self.behind.get((domain, pod))
        if known is None or known[0] != self._state() or self._holds_reservation(job, domain):
            return None
        left, bound = self._time_left(job)
        if left < known[1]:
            return None
        return BehindReservation(known[2].holder, known[2].starts_in, bound, left)

    def _over_budget(self, job: Workload, domain: Domain, placements: list[Placement]) -> str | None:
        """Why starting ``job`` on public ``domain`` would break its queue's hard budget, if it would."""
        budget = self._hard_budget(job.queue)
        if budget is None or self.snapshot.clusters[domain[0]].private:
            return None
        cost = self._burst_cost(job, placements)
        left = self._budget_left(job.queue)
        if cost <= left + BUDGET_TOLERANCE_USD:
            return None
        if cost <= budget.usd:
            self._wake_at(period_bounds(self.now, budget.period)[1])  # a new period's budget may pay
        return (
            f"queue {job.queue}'s hard budget: this burst would cost about {cost:.2f} USD and "
            f"{max(left, 0.0):.2f} of {budget.usd:g} USD are left this {budget.period}"
        )

    def _hard_budget(self, queue: str) -> BudgetSpec | None:
        queues = self.snapshot.queues
        spec = queues.get(queue) if queues is not None else None
        budget = spec.budget if spec is not None else None
        return budget if budget is not None and budget.hard else None

    def _burst_cost(self, job: Workload, placements: Sequence[Placement]) -> float:
        """USD ``job`` would cost on these placements over the rest of its forecast run time."""
        forecast = self.snapshot.forecast
        runtime = forecast.runtime_of(job) if forecast is not None else job.duration
        remaining = max(runtime - self.progress.get(job.id, 0.0), 0.0)
        return _usd_per_second(self.snapshot, placements) * remaining

    def _budget_left(self, queue: str) -> float:
        """Budget less this period's spend and what running bursts will still cost by the forecast."""
        left = self.budget_left.get(queue)
        if left is None:
            budget = self._hard_budget(queue)
            assert budget is not None
            forecast = self.snapshot.forecast
            committed = 0.0
            for allocation in self._public_allocations().get(queue, ()):
                workload = allocation.workload
                runtime = forecast.runtime_of(workload) if forecast is not None else workload.duration
                remaining = max(runtime - allocation.progress(self.now), 0.0)
                committed += _usd_per_second(self.snapshot, allocation.placements) * remaining
            left = self.budget_left[queue] = (
                budget.usd - self.snapshot.public_spend.get(queue, 0.0) - committed
            )
        return left

    def _public_allocations(self) -> dict[str, list[Allocation]]:
        """Running allocations on public clusters, per queue."""
        by_queue: dict[str, list[Allocation]] = {}
        for allocation in self.snapshot.running.values():
            if not self.snapshot.clusters[allocation.cluster].private:
                by_queue.setdefault(allocation.workload.queue, []).append(allocation)
        return by_queue

    def _enforce_hard_budgets(self) -> None:
        """Stop the burst work of queues whose hard budget is spent (private work runs on)."""
        for queue, allocations in self._budgeted_public_allocations().items():
            budget = self._hard_budget(queue)
            assert budget is not None
            if budget.usd - self.snapshot.public_spend.get(queue, 0.0) > BUDGET_TOLERANCE_USD:
                continue
            for allocation in allocations:
                self.snapshot.release(allocation.workload.id)
                self.result.preemptions.append(
                    Preempt(
                        allocation.workload.id,
                        by="",
                        reason=f"queue {queue} has spent its hard budget of {budget.usd:g} USD this "
                        f"{budget.period}: burst work stops",
                    )
                )

    def _wake_when_budgets_run_out(self) -> None:
        """Wake when a hard budget would be spent at the rate of the burst work running after this round,
        so a caller that schedules on events stops that work exactly then."""
        for queue, allocations in self._budgeted_public_allocations().items():
            budget = self._hard_budget(queue)
            assert budget is not None
            rate = sum(_usd_per_second(self.snapshot, a.placements) for a in allocations)
            if rate > 0:
                left = budget.usd - self.snapshot.public_spend.get(queue, 0.0)
                self._wake_at(self.now + max(left, 0.0) / rate)

    def _budgeted_public_allocations(self) -> dict[str, list[Allocation]]:
        queues = self.snapshot.queues
        if queues is None or not any(q.budget is not None and q.budget.hard for q in queues.values()):
            return {}
        return {q: a for q, a in self._public_allocations().items() if self._hard_budget(q) is not None}

    def _preempt_for(self, job: Workload, pod: PodRequest, domain: Domain) -> bool:
        def fits() -> bool:
            self._forget_failures()
            return isinstance(self._admit(job, pod, domain), list)

        holds = any(r.job == job.id for made in self.reservations.values() for r in made)  # lets it in
        kind = (job.queue, job.priority, job.pods, pod, domain, job.id if holds else None)
        if kind in self.fruitless_searches:
            victims = self.fruitless_searches[kind]
        else:
            victims = find_victims(
                self.snapshot, job, domain, fits, self.now, self.started, self.policy.preemption_cost
            )
        self._forget_failures()
        if victims is None or isinstance(victims, Unprofitable):
            self.fruitless_searches[kind] = victims
            if victims is not None:
                self.unprofitable.setdefault(job.id, victims)
            return False
        self.unprofitable.pop(job.id, None)
        self.preemptible.clear()
        self.fruitless_searches.clear()
        for victim in victims:
            self.snapshot.release(victim.workload.id)
            self.preempted_queue[victim.workload.id] = victim.workload.queue
            self.result.preemptions.append(
                Preempt(victim.workload.id, by=job.id, reason=self._preemption_reason(victim, job))
            )
        placements = self._admit(job, pod, domain)
        assert isinstance(placements, list), "victims were chosen so that the job fits"
        self._start(job, domain, placements)
        return True

    def _forget_failures(self) -> None:
        """Placements will be tried again: what failed, and the kinds told so without trying, go."""
        self.no_fit.clear()
        self._forget_kinds()
        self.behind.clear()

    def _migrate_for(self, job: Workload, pod: PodRequest, domains: Sequence[Domain]) -> bool:
        """Move a few GPU shares elsewhere so ``job`` fits (``corral.scheduling.migration``)."""
        if any(needs_at_least(pod, failed) for failed in self.no_migration):
            return False
        for domain in domains:
            if quota_shortfall(self.snapshot, job.queue, domain[1], job.gpu_demand_milli) is not None:
                continue
            for candidate in candidates(self.snapshot, domain, pod, self.started):
                trial = self._try_moves(job, pod, domain, candidate)
                if trial is None:
                    continue
                placement, moves = trial
                for moved, _ in moves:
                    self.snapshot.release(moved.workload.id)
                    self.progress[moved.workload.id] = checkpointed_progress(
                        moved.workload, moved.progress(self.now)
                    )
                    self.preempted_queue[moved.workload.id] = moved.workload.queue
                    self.result.preemptions.append(
                        Preempt(
                            moved.workload.id,
                            by=job.id,
                            reason=f"GPU share moved to make room for {job.id} on {candidate.node.name}",
                        )
                    )
                self._start(job, domain, [placement])
                for moved, new in moves:
                    self._start(moved.workload, domain, [new])
                return True
        self.no_migration.append(pod)
        return False

    def _try_moves(
        self, job: Workload, pod: PodRequest, domain: Domain, candidate: Candidate
    ) -> tuple[Placement, list[tuple[Allocation, Placement]]] | None:
        """Release the candidate's shares, put ``job`` on its GPUs, re-place each share by the policy; the
        placements if every share found room (shares that land where they were are left out), else None.
        The snapshot is unchanged afterwards."""
        mark = self.snapshot.mark()
        try:
            released = [self.snapshot.release(mover) for mover in candidate.movers]
            placement = placement_of(0, candidate.node, pod, candidate.gpus)
            if not _fits_on(candidate.node, pod, candidate.gpus):
                return None
            self.snapshot.allocate(Allocation(job, domain[0], domain[1], (placement,), self.now))
            moves = []
            for moved in released:
                outcome = place_one(self.snapshot, domain, moved.workload.pod, self.policy.scoring)
                if isinstance(outcome, FitFailure):
                    return None
                self.snapshot.allocate(
                    Allocation(moved.workload, domain[0], domain[1], tuple(outcome), self.now)
                )
                if outcome[0] != moved.placements[0]:
                    moves.append((moved, outcome[0]))
            return placement, moves
        finally:
            self.snapshot.rollback(mark)

    def _preemption_reason(self, victim: Allocation, job: Workload) -> str:
        if victim.workload.queue == job.queue or self.snapshot.queues is None:
            return f"preempted by {job.id} (priority {job.priority} > {victim.workload.priority})"
        return f"preempted by {job.id}: queue {job.queue} reclaims quota lent to {victim.workload.queue}"

    def _start(self, job: Workload, domain: Domain, placements: list[Placement]) -> None:
        allocation = Allocation(
            workload=job,
            cluster=domain[0],
            flavor=domain[1],
            placements=tuple(placements),
            started_at=self.now,
            progress_at_start=self.progress.get(job.id, 0.0),
        )
        if self._hard_budget(job.queue) is not None and not self.snapshot.clusters[domain[0]].private:
            self.budget_left[job.queue] = self._budget_left(job.queue) - self._burst_cost(job, placements)
        self.snapshot.allocate(allocation)
        self.started.add(job.id)
        self.result.pending.pop(job.id, None)
        for made in self.reservations.values():
            for reservation in [r for r in made if r.job == job.id]:
                made.remove(reservation)
                self.result.reservations.remove(reservation)
        self.preemptible.clear()
        self.fruitless_searches.clear()
        self._forget_kinds()
        self.result.starts.append(Start(job.id, domain[0], domain[1], allocation.placements))


_submit = attrgetter("submit")
_priority = attrgetter("priority")
_job_id = attrgetter("id")
_kind = attrgetter("kind")
"""Sort keys read in C: with 10,000 jobs waiting, a Python key function was a tenth of the round."""


def _usd_per_second(snapshot: Snapshot, placements: Sequence[Placement]) -> float:
    return (
        sum(snapshot.nodes[p.node].gpu_hour_cost * p.gpu_milli * len(p.gpus) / 1000 for p in placements)
        / 3600
    )


def _fits_on(node: Node, pod: PodRequest, gpus: tuple[int, ...]) -> bool:
    if pod.fractional:
        return all(share_fits(node.gpus[index], pod) for index in gpus)
    return all(node.gpus[index].healthy and node.gpus[index].idle for index in gpus)


def _wide(job: Workload) -> bool:
    """Jobs that get reservations: gangs and pods of several GPUs, which freed single GPUs do not add up
    to. A job of one GPU or less starts on the next one that frees; holding room for it would only
    cost the look-ahead."""
    return job.pods > 1 or job.gpus_per_pod > 1


def _explain(failures: list[tuple[Domain, Cause]], now: float, note: str) -> Pending:
    """The reason code says what would have to change: room (``no_fit``) if any domain lacked it, else
    a reservation ending if any domain's room is reserved, else quota."""
    reason = PendingReason.QUOTA if failures else PendingReason.NO_FIT
    for _, failure in failures:
        if isinstance(failure, FitFailure):
            reason = PendingReason.NO_FIT
            break
        if isinstance(failure, BehindReservation):
            reason = PendingReason.RESERVED
    return Pending(reason, note, tuple(failures), now)
