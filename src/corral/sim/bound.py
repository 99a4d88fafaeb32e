"""A lower bound on what running a workload costs, given how many deadlines may be missed.

A policy that bursts less pays less and misses more deadlines; to say how far a policy is from the best
any policy could do, we need the cheapest cost that *any* schedule, even one that knows the future, could
reach with at most K misses. That is a hard scheduling problem, so this module solves a relaxation of it
with HiGHS: its optimum is at most the true optimum, hence at most the cost of every real schedule.

The model, per job j with g_j GPUs (``gpu_demand_milli / 1000``) and duration d_j, on time slots t:

- ``x_j`` in [0, 1], the share of its work done on public clusters; ``u_{j,p} >= 0`` GPU-hours it runs on
  private clusters during piece p, a slot cut at its submit time and at its deadline;
- ``sum_p u_{j,p} + g_j d_j x_j = g_j d_j`` and ``u_{j,p} <= g_j * length(p)``;
- per slot, ``sum_j u_{j,t} <= C * length(t)``, C every GPU any private pool may ever have;
- ``m_j`` in [0, 1] for deadline jobs: private work in pieces after the deadline is at most
  ``m_j g_j d_j``; public work must fit between the job's earliest public start r_j and its deadline
  (``x_j - m_j <= slack_j / d_j``); ``sum_j m_j <= K``;
- cost: public GPU-hours at the job's cheapest public price, private ones at its cheapest private price.

Why every real schedule that finishes every job maps to a feasible point of no greater cost and no more
misses (so the optimum is a lower bound):

- A job restarted without checkpoints keeps only its last run, which lasts d_j on one cluster: set
  ``x_j`` to 1 if that run was public, else 0 and let ``u`` be that run. A checkpointed job keeps progress
  from several runs: set ``x_j`` to the share of its kept progress made on public clusters and ``u`` to
  the private runs that made the rest. Either way the schedule pays at least the model's cost (lost runs
  only add to it), and ``u`` runs no faster than real time, never before submit.
- Private usage at every instant is within the private GPUs, so each slot's sum is too. Node boundaries,
  gangs, quotas and preemption are ignored: each only removes schedules, never adds one.
- A job that meets its deadline runs nothing after it, so its late pieces are 0 with ``m_j = 0``. Its
  public work happened in [r_j, deadline]: without checkpoints its single public run needs
  ``r_j + d_j <= deadline`` (slack_j is d_j if so, else 0), with checkpoints ``x_j d_j`` must fit there.
- r_j is submit, or later when no node of the job's public pools exists before its submit: a pool with no
  node at time 0 has none before the first submit plus its ``provision_seconds``. An idle node an earlier
  job asked for may be reused (the simulator does), so ``cold_start=False`` assumes no more. With
  ``cold_start=True`` every burst job waits ``provision_seconds`` from its own submit: a tighter bound, but
  only on schedules that never reuse a node, which the simulator's are not.
- Work after the last deadline is one open-ended piece with no capacity limit: when it runs there no
  longer changes cost or misses, so the relaxation loses nothing that matters.

Jobs the scheduler rejects (no domain it may use can ever hold them) are left out: the simulator neither
runs them nor counts them as misses. With ``integer=True``, ``m_j`` and (for jobs without checkpoints)
``x_j`` are binary, which the mapping above respects, and the bound is HiGHS's proven dual bound.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import highspy
import numpy as np

from corral.core.nodes import build_initial_nodes
from corral.core.units import MILLI_PER_GPU
from corral.core.workloads import Workload
from corral.errors import CorralError
from corral.scenario.models import ClusterFile
from corral.scheduling import Snapshot
from corral.scheduling.feasibility import feasibility, pods_per_node

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class CostBound:
    """What a solve proved: no schedule missing at most ``max_deadline_misses`` deadlines costs less."""

    cost_usd: float
    """The proven lower bound on cost; ``math.inf`` when no schedule can keep to the miss budget."""
    max_deadline_misses: int
    jobs: int
    """Jobs in the model: those the scheduler would not reject."""
    slots: int
    integer: bool
    status: str
    """HiGHS's model status, e.g. 'Optimal', 'Infeasible', 'Time limit reached'."""
    gap: float
    """Relative gap between the bound and the best relaxed schedule HiGHS found; 0 for a solved LP."""
    seconds: float
    """Building the model plus this solve."""


@dataclass(frozen=True)
class _JobTerms:
    """What the model needs of one job; a price is None where the job may not run."""

    workload: Workload
    gpus: float
    private_price: float | None
    public_price: float | None
    public_ready: float
    """Earliest instant a public node could hold the job."""


def cost_lower_bound(
    cluster_file: ClusterFile,
    workloads: Sequence[Workload],
    max_deadline_misses: int,
    *,
    slot_seconds: float = 600.0,
    integer: bool = False,
    cold_start: bool = False,
    time_limit_seconds: float = 60.0,
) -> CostBound:
    """The least any schedule missing at most ``max_deadline_misses`` deadlines could cost, from below."""
    (bound,) = cost_bound_curve(
        cluster_file,
        workloads,
        [max_deadline_misses],
        slot_seconds=slot_seconds,
        integer=integer,
        cold_start=cold_start,
        time_limit_seconds=time_limit_seconds,
    )
    return bound


def cost_bound_curve(
    cluster_file: ClusterFile,
    workloads: Sequence[Workload],
    misses: Sequence[int],
    *,
    slot_seconds: float = 600.0,
    integer: bool = False,
    cold_start: bool = False,
    time_limit_seconds: float = 60.0,
) -> list[CostBound]:
    """One bound per allowed miss count; the model is built once and only the budget changes between solves
    (an LP restarts from the previous basis). ``time_limit_seconds`` applies to each solve."""
    if slot_seconds <= 0:
        raise CorralError(f"slot_seconds must be positive, not {slot_seconds}")
    if any(allowed < 0 for allowed in misses):
        raise CorralError(f"allowed deadline misses must be 0 or more, not {min(misses)}")
    started = time.perf_counter()
    terms = _job_terms(cluster_file, workloads, cold_start)
    private_gpus = sum(
        pool.capacity_count * pool.node.gpus
        for cluster in cluster_file.clusters
        if cluster.private
        for pool in cluster.pools
    )
    model = _Model(terms, private_gpus, slot_seconds, integer)
    build_seconds = time.perf_counter() - started
    bounds = []
    for allowed in misses:
        solve_started = time.perf_counter()
        bounds.append(model.solve(allowed, time_limit_seconds, build_seconds, solve_started))
    return bounds


def _job_terms(cluster_file: ClusterFile, workloads: Sequence[Workload], cold_start: bool) -> list[_JobTerms]:
    """Prices and earliest public start per job, from the domains the scheduler itself would consider."""
    snapshot = Snapshot(
        cluster_file.clusters, build_initial_nodes(cluster_file.clusters), cluster_file.queues
    )
    first_round = min((w.submit for w in workloads), default=0.0)
    terms = []
    for workload in workloads:
        domains = set(feasibility(snapshot, workload, workload.pod).domains)
        prices: dict[bool, list[float]] = {True: [], False: []}
        delays: list[float] = []
        for name, pool in snapshot.pools.items():
            cluster = snapshot.pool_cluster[name]
            if (cluster.name, pool.flavor) not in domains or pods_per_node(pool.node, workload.pod) == 0:
                continue
            prices[cluster.private].append(pool.gpu_hour_cost)
            if not cluster.private:
                delays.append(0.0 if pool.count else pool.provision_seconds)
        if not domains:
            continue
        delay = min(delays, default=0.0)
        ready = workload.submit + delay if cold_start else max(workload.submit, first_round + delay)
        terms.append(
            _JobTerms(
                workload=workload,
                gpus=workload.gpu_demand_milli / MILLI_PER_GPU,
                private_price=min(prices[True], default=None),
                public_price=min(prices[False], default=None),
                public_ready=ready,
            )
        )
    return terms


class _Model:
    """The LP (or MILP) of the module docstring, built once; ``solve`` sets the miss budget and runs it."""

    def __init__(
        self, terms: list[_JobTerms], private_gpus: float, slot_seconds: float, integer: bool
    ) -> None:
        self.jobs = len(terms)
        self.integer = integer
        deadlines = [t.workload.deadline for t in terms if t.workload.deadline is not None]
        start = min((t.workload.submit for t in terms), default=0.0)
        end = max(deadlines, default=start)
        count = max(0, math.ceil((end - start) / slot_seconds - 1e-9))
        edges = np.append(start + slot_seconds * np.arange(count), end) if count else np.array([start])
        self.slots = len(edges) - 1

        columns = _Columns()
        rows = _Rows()
        capacity_rows = [
            rows.add(-math.inf, private_gpus * (hi - lo) / SECONDS_PER_HOUR)
            for lo, hi in itertools.pairwise(edges)
        ]
        self.budget_row = rows.add(-math.inf, 0.0)
        self.offset = 0.0
        for job in terms:
            self.offset += self._add_job(job, edges, capacity_rows, columns, rows)

        cost = np.array(columns.cost)
        self.objective_floor = self.offset + float(
            np.minimum(cost * np.array(columns.lower), cost * np.array(columns.upper)).sum()
        )
        self.highs = highspy.Highs()
        self.highs.setOptionValue("output_flag", False)
        self.highs.passModel(columns.to_lp(rows))

    def _add_job(
        self, job: _JobTerms, edges: np.ndarray, capacity_rows: list[int], columns: _Columns, rows: _Rows
    ) -> float:
        """Add one job's columns and rows; returns its fixed cost (private price on all its work)."""
        workload = job.workload
        work = job.gpus * workload.duration / SECONDS_PER_HOUR
        private = job.private_price is not None
        public = job.public_price is not None
        burst_cost = work * ((job.public_price or 0.0) - (job.private_price or 0.0)) if public else 0.0
        burst = columns.add(
            burst_cost,
            0.0 if private else 1.0,
            1.0 if public else 0.0,
            binary=self.integer and workload.checkpoint_seconds is None,
        )
        deadline = workload.deadline
        if deadline is not None:
            forced = workload.submit + workload.duration > deadline
            miss = columns.add(0.0, 1.0 if forced else 0.0, 1.0, binary=self.integer)
            rows.enter(self.budget_row, miss, 1.0)
            if public:
                slack = _public_slack(workload, deadline, job.public_ready)
                if slack < workload.duration:
                    row = rows.add(-math.inf, slack / workload.duration)
                    rows.enter(row, burst, 1.0)
                    rows.enter(row, miss, -1.0)
        if not private or work == 0:
            return 0.0
        work_row = rows.add(work, work)
        rows.enter(work_row, burst, work)
        late_row = None
        if deadline is not None:
            late_row = rows.add(-math.inf, 0.0)
            rows.enter(late_row, miss, -work)
        cuts = [workload.submit] + ([deadline] if deadline is not None else [])
        first = max(0, int(np.searchsorted(edges, workload.submit, side="right")) - 1)
        for slot in range(first, self.slots):
            lo, hi = float(edges[slot]), float(edges[slot + 1])
            points = sorted({lo, hi, *(c for c in cuts if lo < c < hi)})
            for piece_lo, piece_hi in itertools.pairwise(points):
                if piece_lo < workload.submit:
                    continue
                piece = columns.add(0.0, 0.0, job.gpus * (piece_hi - piece_lo) / SECONDS_PER_HOUR)
                rows.enter(work_row, piece, 1.0)
                rows.enter(capacity_rows[slot], piece, 1.0)
                if late_row is not None and piece_lo >= deadline:
                    rows.enter(late_row, piece, 1.0)
        tail = columns.add(0.0, 0.0, work)
        rows.enter(work_row, tail, 1.0)
        if late_row is not None:
            rows.enter(late_row, tail, 1.0)
        return work * (job.private_price or 0.0)

    def solve(
        self, allowed_misses: int, time_limit_seconds: float, build_seconds: float, started: float
    ) -> CostBound:
        highs = self.highs
        highs.changeRowBounds(self.budget_row, -math.inf, float(allowed_misses))
        highs.setOptionValue("time_limit", float(time_limit_seconds))
        highs.run()
        status = highs.getModelStatus()
        info = highs.getInfo()
        gap = 0.0
        if status == highspy.HighsModelStatus.kInfeasible:
            cost = math.inf
        elif status == highspy.HighsModelStatus.kModelEmpty:
            cost = self.objective_floor
        elif self.integer:
            # The dual bound, not the incumbent: only the former is proven to be below every schedule.
            cost = max(self.offset + info.mip_dual_bound, self.objective_floor)
            gap = info.mip_gap
        elif status == highspy.HighsModelStatus.kOptimal:
            cost = self.offset + info.objective_function_value
        else:
            cost, gap = self.objective_floor, math.inf
        return CostBound(
            cost_usd=cost,
            max_deadline_misses=allowed_misses,
            jobs=self.jobs,
            slots=self.slots,
            integer=self.integer,
            status=highs.modelStatusToString(status),
            gap=gap,
            seconds=build_seconds + time.perf_counter() - started,
        )


def _public_slack(workload: Workload, deadline: float, ready: float) -> float:
    """Seconds of the job's work that public clusters could finish by its deadline."""
    window = deadline - ready
    if workload.checkpoint_seconds is None:
        return workload.duration if window >= workload.duration else 0.0
    return min(max(window, 0.0), workload.duration)


class _Columns:
    """Column data of the model, gathered before it is handed to HiGHS in one piece."""

    def __init__(self) -> None:
        self.cost: list[float] = []
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.binary: list[bool] = []

    def add(self, cost: float, lower: float, upper: float, *, binary: bool = False) -> int:
        self.cost.append(cost)
        self.lower.append(lower)
        self.upper.append(upper)
        self.binary.append(binary)
        return len(self.cost) - 1

    def to_lp(self, rows: _Rows) -> highspy.HighsLp:
        lp = highspy.HighsLp()
        lp.num_col_ = len(self.cost)
        lp.num_row_ = len(rows.lower)
        lp.col_cost_ = np.array(self.cost)
        lp.col_lower_ = np.array(self.lower)
        lp.col_upper_ = np.array(self.upper)
        lp.row_lower_ = np.array(rows.lower)
        lp.row_upper_ = np.array(rows.upper)
        order = np.lexsort((rows.entry_rows, rows.entry_columns))
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.num_col_ = lp.num_col_
        lp.a_matrix_.num_row_ = lp.num_row_
        lp.a_matrix_.start_ = np.searchsorted(np.array(rows.entry_columns)[order], np.arange(lp.num_col_ + 1))
        lp.a_matrix_.index_ = np.array(rows.entry_rows)[order]
        lp.a_matrix_.value_ = np.array(rows.entry_values)[order]
        if any(self.binary):
            kinds = highspy.HighsVarType
            lp.integrality_ = [kinds.kInteger if b else kinds.kContinuous for b in self.binary]
        return lp


class _Rows:
    """Row bounds and matrix entries, as (row, column, value) triplets."""

    def __init__(self) -> None:
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.entry_rows: list[int] = []
        self.entry_columns: list[int] = []
        self.entry_values: list[float] = []

    def add(self, lower: float, upper: float) -> int:
        self.lower.append(lower)
        self.upper.append(upper)
        return len(self.lower) - 1

    def enter(self, row: int, column: int, value: float) -> None:
        self.entry_rows.append(row)
        self.entry_columns.append(column)
        self.entry_values.append(value)
