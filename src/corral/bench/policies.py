"""Policies against each other on contended work (issue 13): does the default policy beat plain FIFO?

Issue 13 reports that ``default`` (fair share, priority, preemption, bin-packing) finishes contended work
later than ``fifo``: preemptions that undo each other, a replay that never settles, idle GPUs next to jobs
that fit, a borrowing limit that starves a team. This benchmark measures those symptoms on four
scenarios, every policy on every seed, one ``Simulator`` replay each:

- ``mixed`` and ``gangs``: a lab cluster under bursty multi-team load (``corral.bench.contended``);
  ``tenants``: the same cluster and ``mixed``'s shapes shared by ten teams of unequal quota.
- ``alibaba``: the openb trace made contended (``corral.bench.contended_trace``: run times capped at a
  day, every pool cut to 1%, arrivals compressed per window to offer 125% over the arrival span), one
  window of consecutive arrivals per seed, all jobs in one unlimited queue (the trace names no team).
- ``alibaba-qos``: the same windows with the trace's four ``qos`` service classes as tenants: a queue
  each, nominal quota in proportion to the class's GPU-time, one cohort (``import_openb(tenants=True)``).

A replay that raises (the engine's "preemptions did not settle" livelock, for one) is a failed run with its
message; the benchmark goes on. Ratios are against ``fifo`` on the same scenario and seed, and the tables
give medians over seeds, since one seed's heavy-tailed run times can move every figure.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from corral.bench.contended import PEAK_WINDOW_SECONDS, capacity_gpus, generate, peak_offered_load
from corral.bench.contended_trace import contended_trace, load_within_arrivals, trace_window
from corral.core.cluster import PoolSpec
from corral.core.queues import QueueSpec
from corral.core.workloads import Workload
from corral.scenario.models import ClusterFile, Event
from corral.scheduling import get_policy
from corral.sim.engine import Simulator
from corral.sim.report import JobRecord

TRACE = "alibaba"
TRACE_TENANTS = "alibaba-qos"
"""The same windows with the trace's qos classes as four queues with quota in one cohort."""
BASELINE = "fifo"
RATIO_METRICS = (
    "jct_mean",
    "wait_p50",
    "wait_p95",
    "wait_p99",
    "makespan",
    "gpu_allocation",
    "gpu_allocation_arrivals",
)
DEFAULT_POLICIES = ("default", "fifo", "strict-fifo", "spread")
DEFAULT_SEEDS = (101, 102, 103, 104, 105)


@dataclass(frozen=True)
class Scenario:
    name: str
    seed: int
    cluster_file: ClusterFile
    workloads: list[Workload]
    offered_load: float
    """Work submitted over the arrival span (GPU-seconds) over the cluster's GPU-time in that span; for
    the trace, only the work that fits before the last arrival (``load_within_arrivals``)."""
    peak_offered_load: float
    """The same over the busiest ``PEAK_WINDOW_SECONDS`` of arrivals, or tenth of the span if shorter."""
    submitted_load: float | None = None
    """All the work submitted over the cluster's GPU-time in the arrival span (the trace only)."""
    speedup: float | None = None
    """How many times faster than recorded the window's arrivals come (the trace only)."""


@dataclass(frozen=True)
class QueueShare:
    """What one team got while jobs were arriving (after the last arrival every queue drains, so shares
    over the whole replay only repeat each team's demand)."""

    queue: str
    received: float
    """The queue's share of the GPU-time allocated between the first and the last arrival."""
    entitled: float
    """Its demand-capped fair share of that GPU-time: water-filled across queues in proportion to nominal
    quota (all flavors), no queue entitled to more than its jobs could have used before the last arrival
    had each started on submission."""
    max_wait: float
    """Longest wait from submission to first start (to the end of the replay for a job never started)."""
    max_wait_within_quota: float = 0.0
    """The same over the jobs that fit in the queue's nominal quota of some flavor: jobs that need to
    borrow wait on what other teams leave idle, which fair sharing gives last, by design."""


@dataclass(frozen=True)
class Run:
    scenario: str
    seed: int
    policy: str
    error: str | None = None
    """Why the replay raised; every figure below is then None."""
    jobs: int = 0
    finished: int | None = None
    jct_mean: float | None = None
    wait_p50: float | None = None
    wait_p95: float | None = None
    wait_p99: float | None = None
    gpu_allocation: float | None = None
    """GPU-time allocated over GPU capacity-time until the last job event."""
    gpu_allocation_arrivals: float | None = None
    """The same between the first and the last arrival: the drain after it, where one long job can
    idle most of the cluster for hours, left out."""
    makespan: float | None = None
    lost_gpu_hours: float | None = None
    lost_pct: float | None = None
    """Lost GPU-hours as a % of GPU-hours allocated."""
    preemptions: int | None = None
    zero_length_runs: int | None = None
    scheduler_seconds: float | None = None
    wall_seconds: float = 0.0
    queues: list[QueueShare] = field(default_factory=list)


def scenarios(
    families: Sequence[str], seeds: Sequence[int], jobs: int, trace_dir: Path | None
) -> list[Scenario]:
    """Every scenario for every seed: the generated families, then the trace's windows when given."""
    result = []
    for family in families:
        for seed in seeds:
            generated = generate(family, seed, jobs)
            result.append(
                Scenario(
                    family,
                    seed,
                    generated.cluster_file,
                    generated.workloads,
                    generated.offered_load,
                    generated.peak_offered_load,
                )
            )
    if trace_dir is None:
        return result
    for name, tenants in ((TRACE, False), (TRACE_TENANTS, True)):
        cluster_file, workloads = contended_trace(trace_dir, tenants)
        capacity = capacity_gpus(cluster_file)
        for seed in seeds:
            window, speedup = trace_window(workloads, jobs, seed, capacity)
            span = max(window[-1].submit, 1.0)
            submitted = sum(job.gpu_demand_milli / 1000 * job.duration for job in window) / (capacity * span)
            offered = load_within_arrivals(window, capacity)
            peak = peak_offered_load(window, capacity, min(PEAK_WINDOW_SECONDS, span / 10))
            result.append(Scenario(name, seed, cluster_file, window, offered, peak, submitted, speedup))
    return result


def replay(scenario: Scenario, policy_name: str, simulator: type[Simulator] = Simulator) -> Run:
    """One policy on one scenario; a replay that raises becomes a failed run with the error's message."""
    started = time.perf_counter()
    usage = _QueueUsage(scenario.workloads)
    try:
        replayed = simulator(
            scenario.cluster_file, scenario.workloads, get_policy(policy_name), sink=usage.record
        )
        summary = replayed.run().summary
    except Exception as error:  # any failure is a finding to record, not a reason to stop the benchmark
        return Run(
            scenario.name,
            scenario.seed,
            policy_name,
            error=f"{type(error).__name__}: {error}",
            jobs=len(scenario.workloads),
            wall_seconds=time.perf_counter() - started,
        )
    records = replayed.tally.jobs.values()
    waits = [r.first_start - r.workload.submit for r in records if r.first_start is not None]
    return Run(
        scenario.name,
        scenario.seed,
        policy_name,
        jobs=summary.jobs,
        finished=summary.finished,
        jct_mean=summary.jct_mean,
        wait_p50=summary.wait_p50,
        wait_p95=summary.wait_p95,
        wait_p99=float(np.percentile(waits, 99)) if waits else 0.0,
        gpu_allocation=summary.gpu_allocation,
        gpu_allocation_arrivals=usage.allocation(capacity_gpus(scenario.cluster_file)),
        makespan=summary.makespan,
        lost_gpu_hours=summary.lost_gpu_hours,
        lost_pct=100 * summary.lost_gpu_hours / summary.gpu_hours_used if summary.gpu_hours_used else 0.0,
        preemptions=summary.preemptions,
        zero_length_runs=summary.zero_length_runs,
        scheduler_seconds=summary.scheduler_seconds,
        wall_seconds=time.perf_counter() - started,
        queues=usage.shares(scenario.cluster_file, replayed.tally.last_time, records),
    )


class _QueueUsage:
    """GPU-seconds each queue was allocated between the first and the last arrival, from the event log."""

    def __init__(self, workloads: Sequence[Workload]) -> None:
        self._queue = {job.id: job.queue for job in workloads}
        self._workloads = workloads
        self._window = (
            min((job.submit for job in workloads), default=0.0),
            max((job.submit for job in workloads), default=0.0),
        )
        self._open: dict[str, tuple[float, float]] = {}
        self.gpu_seconds: dict[str, float] = defaultdict(float)

    def record(self, event: Event) -> None:
        if event.event == "started" and event.job is not None:
            gpus = sum(p.gpu_milli * len(p.gpus) for p in event.placements or ()) / 1000
            self._open[event.job] = (event.t, gpus)
        elif event.event in ("finished", "preempted", "failed") and event.job in self._open:
            start, gpus = self._open.pop(event.job)
            first, last = self._window
            overlap = min(event.t, last) - max(start, first)
            if overlap > 0:
                self.gpu_seconds[self._queue[event.job]] += overlap * gpus

    def allocation(self, capacity: float) -> float:
        """GPU-time allocated between the first and the last arrival over the capacity's in that span."""
        first, last = self._window
        return sum(self.gpu_seconds.values()) / (capacity * (last - first)) if last > first else 0.0

    def shares(self, cluster_file: ClusterFile, end: float, records: Iterable[JobRecord]) -> list[QueueShare]:
        quotas = {q.name: sum((q.quota or {}).values()) for q in cluster_file.queues or [] if q.quota}
        if len(quotas) < 2:
            return []  # one queue, or queues without quota: no share to be entitled to
        last = self._window[1]
        demand: dict[str, float] = defaultdict(float)
        for job in self._workloads:
            usable = max(0.0, min(job.submit + job.duration, last) - job.submit)
            demand[job.queue] += job.gpu_demand_milli / 1000 * usable
        delivered = sum(self.gpu_seconds.values())
        entitled = water_fill(delivered, quotas, demand)
        specs = {q.name: q for q in cluster_file.queues or []}
        pools = [p for c in cluster_file.clusters for p in c.pools]
        max_wait: dict[str, float] = defaultdict(float)
        within_quota: dict[str, float] = defaultdict(float)
        for record in records:
            job = record.workload
            wait = (record.first_start if record.first_start is not None else end) - job.submit
            max_wait[job.queue] = max(max_wait[job.queue], wait)
            if _fits_own_quota(job, specs.get(job.queue), pools):
                within_quota[job.queue] = max(within_quota[job.queue], wait)
        return [
            QueueShare(
                queue,
                self.gpu_seconds.get(queue, 0.0) / delivered if delivered else 0.0,
                entitled[queue] / delivered if delivered else 0.0,
                max_wait[queue],
                within_quota[queue],
            )
            for queue in sorted(quotas)
        ]


def _fits_own_quota(job: Workload, queue: QueueSpec | None, pools: Sequence[PoolSpec]) -> bool:
    """Whether ``job`` fits in its queue's nominal quota of a flavor whose nodes can hold its pods (their
    GPU count and model): a job that fits only where its team has less quota must borrow."""
    if queue is None:
        return False
    models = job.allowed_models
    return any(
        job.gpu_demand_milli <= queue.nominal_milli(pool.flavor)
        for pool in pools
        if pool.node.gpus >= job.gpus_per_pod and (models is None or pool.node.gpu_model in models)
    )


def water_fill(total: float, weights: dict[str, float], caps: dict[str, float]) -> dict[str, float]:
    """``total`` split in proportion to ``weights``, no one above its cap, what a capped one leaves going
    to the others (max-min fairness weighted by quota)."""
    shares = dict.fromkeys(weights, 0.0)
    open_ = {name for name, weight in weights.items() if weight > 0}
    left = total
    while open_ and left > 1e-9:
        weight = sum(weights[name] for name in open_)
        capped = {name for name in open_ if caps.get(name, 0.0) <= left * weights[name] / weight}
        if not capped:
            for name in open_:
                shares[name] = left * weights[name] / weight
            break
        for name in capped:
            shares[name] = caps.get(name, 0.0)
            left -= shares[name]
        open_ -= capped
    return shares


def run_benchmark(
    scenario_list: Sequence[Scenario],
    policies: Sequence[str],
    on_done: Callable[[Run], None] | None = None,
    simulator: type[Simulator] = Simulator,
) -> dict[str, object]:
    """Every policy on every scenario, as plain data: each run, ratios against fifo, medians over seeds."""
    runs = []
    for scenario in scenario_list:
        for policy in policies:
            run = replay(scenario, policy, simulator)
            runs.append(run)
            if on_done is not None:
                on_done(run)
    names = list(dict.fromkeys(s.name for s in scenario_list))
    return {
        "baseline": BASELINE,
        "policies": list(policies),
        "seeds": sorted({s.seed for s in scenario_list}),
        "scenarios": {
            name: {
                "jobs": int(statistics.median(len(s.workloads) for s in scenario_list if s.name == name)),
                "gpus": capacity_gpus(next(s for s in scenario_list if s.name == name).cluster_file),
                "offered_load": statistics.median(s.offered_load for s in scenario_list if s.name == name),
                "peak_offered_load": statistics.median(
                    s.peak_offered_load for s in scenario_list if s.name == name
                ),
                "submitted_load": _median_of(s.submitted_load for s in scenario_list if s.name == name),
                "speedup": _median_of(s.speedup for s in scenario_list if s.name == name),
            }
            for name in names
        },
        "runs": [asdict(run) for run in runs],
        "ratios": ratios(runs),
        "medians": medians(runs),
    }


def _median_of(values: Iterable[float | None]) -> float | None:
    """The median of the values given, None when there are none (a figure only the trace has)."""
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def ratios(runs: Sequence[Run]) -> list[dict[str, object]]:
    """Each policy's figures over fifo's on the same scenario and seed (None where either run failed)."""
    baseline = {(r.scenario, r.seed): r for r in runs if r.policy == BASELINE}
    rows = []
    for run in runs:
        base = baseline.get((run.scenario, run.seed))
        if run.policy == BASELINE or base is None:
            continue
        row: dict[str, object] = {"scenario": run.scenario, "seed": run.seed, "policy": run.policy}
        for metric in RATIO_METRICS:
            mine, theirs = getattr(run, metric), getattr(base, metric)
            row[metric] = mine / theirs if mine is not None and theirs else None
        rows.append(row)
    return rows


SUMMED = (
    "jct_mean",
    "wait_p50",
    "wait_p95",
    "wait_p99",
    "gpu_allocation",
    "gpu_allocation_arrivals",
    "makespan",
    "lost_gpu_hours",
    "lost_pct",
    "preemptions",
    "zero_length_runs",
    "scheduler_seconds",
    "wall_seconds",
)


def medians(runs: Sequence[Run]) -> list[dict[str, object]]:
    """Per scenario and policy: the median and range over seeds of every figure of the runs that did not
    fail, their ratio to fifo likewise, per-queue shares, and the failures with their messages."""
    by_key: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        by_key[(run.scenario, run.policy)].append(run)
    ratio_rows = ratios(runs)
    rows = []
    for (scenario, policy), group in by_key.items():
        ok = [r for r in group if r.error is None]
        row: dict[str, object] = {
            "scenario": scenario,
            "policy": policy,
            "seeds": len(group),
            "failed": len(group) - len(ok),
            "errors": {str(r.seed): r.error for r in group if r.error is not None},
        }
        for metric in SUMMED:
            values = [getattr(r, metric) for r in ok if getattr(r, metric) is not None]
            row[metric] = _spread(values)
        mine = [r for r in ratio_rows if r["scenario"] == scenario and r["policy"] == policy]
        row["vs_fifo"] = {
            metric: _spread([r[metric] for r in mine if r[metric] is not None]) for metric in RATIO_METRICS
        }
        queues: dict[str, list[QueueShare]] = defaultdict(list)
        for run in ok:
            for share in run.queues:
                queues[share.queue].append(share)
        row["queues"] = {
            queue: {
                "received": statistics.median(s.received for s in shares),
                "entitled": statistics.median(s.entitled for s in shares),
                "received_over_entitled": statistics.median(
                    s.received / s.entitled if s.entitled else 0.0 for s in shares
                ),
                "max_wait": statistics.median(s.max_wait for s in shares),
                "max_wait_within_quota": statistics.median(s.max_wait_within_quota for s in shares),
            }
            for queue, shares in sorted(queues.items())
        }
        rows.append(row)
    return rows


def _spread(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": float(statistics.median(values)), "min": float(min(values)), "max": float(max(values))}


def markdown_table(report: dict[str, object]) -> list[str]:
    """The report as Markdown: the scenarios, medians per scenario and policy, every seed's ratio to fifo,
    per-queue shares, and each failure's message."""
    seeds = report["seeds"]
    lines = [
        "| scenario | jobs | GPUs | offered load over the arrivals | busiest 6 h (trace: tenth of the span) "
        "| all work over the arrival span | arrivals faster than recorded |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, facts in report["scenarios"].items():  # type: ignore[attr-defined]
        submitted, speedup = facts.get("submitted_load"), facts.get("speedup")
        lines.append(
            f"| {name} | {facts['jobs']} | {facts['gpus']} | {facts['offered_load']:.0%} | "
            f"{facts['peak_offered_load']:.0%} | {'-' if submitted is None else f'{submitted:.0%}'} | "
            f"{'-' if speedup is None else f'{speedup:.0f}x'} |"
        )
    lines += [
        "",
        f"Medians over seeds {', '.join(map(str, seeds))} (a failed run counts in `failed` and nowhere "  # type: ignore[call-overload]
        "else); ratios are to fifo on the same scenario and seed, with their range over seeds:",
        "",
        "| scenario | policy | failed | JCT mean h | wait p50 h | p95 h | p99 h | GPU allocation "
        "| while arriving | makespan h | lost GPU-h (% of allocated) | preemptions | zero-length runs "
        "| JCT vs fifo | p95 wait vs fifo | scheduler s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["medians"]:  # type: ignore[attr-defined]
        cells = [row["scenario"], row["policy"], f"{row['failed']}/{row['seeds']}"]
        if row["jct_mean"] is None:
            lines.append("| " + " | ".join(cells + ["-"] * 13) + " |")
            continue

        def median(metric: str, row: dict[str, object] = row) -> float:
            return row[metric]["median"]  # type: ignore[index]

        cells += [f"{median(m) / 3600:.1f}" for m in ("jct_mean", "wait_p50", "wait_p95", "wait_p99")]
        arriving = row["gpu_allocation_arrivals"]  # None in reports written before it was measured
        cells += [
            f"{median('gpu_allocation'):.1%}",
            "-" if arriving is None else f"{median('gpu_allocation_arrivals'):.1%}",
        ]
        cells += [f"{median('makespan') / 3600:.0f}"]
        cells += [f"{median('lost_gpu_hours'):.0f} ({median('lost_pct'):.1f}%)"]
        cells += [f"{median('preemptions'):.0f}", f"{median('zero_length_runs'):.0f}"]
        cells += [_ratio(row["vs_fifo"]["jct_mean"]), _ratio(row["vs_fifo"]["wait_p95"])]  # type: ignore[index]
        cells += [f"{median('scheduler_seconds'):.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Every seed: mean JCT / p95 wait over fifo's on the same scenario and seed:",
        "",
        "| scenario | policy | " + " | ".join(map(str, seeds)) + " |",  # type: ignore[call-overload]
        "|---|---|" + "---|" * len(seeds),  # type: ignore[arg-type]
    ]
    by_seed = {(r["scenario"], r["policy"], r["seed"]): r for r in report["ratios"]}  # type: ignore[attr-defined]
    failed = {(r["scenario"], r["policy"], r["seed"]) for r in report["runs"] if r["error"]}  # type: ignore[attr-defined]
    for row in report["medians"]:  # type: ignore[attr-defined]
        if row["policy"] == BASELINE:
            continue
        cells = []
        for seed in seeds:  # type: ignore[attr-defined]
            key = (row["scenario"], row["policy"], seed)
            ratio = by_seed.get(key)
            if key in failed or ratio is None:
                cells.append("failed" if key in failed else "-")
            else:
                cells.append(" / ".join(_number(ratio[metric]) for metric in ("jct_mean", "wait_p95")))
        lines.append(f"| {row['scenario']} | {row['policy']} | " + " | ".join(cells) + " |")
    queue_rows = [row for row in report["medians"] if row["queues"]]  # type: ignore[attr-defined]
    if queue_rows:
        queues = sorted({q for row in queue_rows for q in row["queues"]})
        lines += [
            "",
            "Per queue, medians over seeds: GPU-time received between the first and the last arrival over the "
            "queue's demand-capped fair share of it (quota-weighted water-filling), and the longest wait (h), over "
            "all its jobs and over those that fit in its nominal quota (the rest must borrow):",
            "",
            "| scenario | policy | " + " | ".join(queues) + " |",
            "|---|---|" + "---|" * len(queues),
        ]
        for row in queue_rows:
            cells = [
                f"{row['queues'][q]['received_over_entitled']:.2f} ({row['queues'][q]['max_wait'] / 3600:.0f} h; "
                f"{row['queues'][q]['max_wait_within_quota'] / 3600:.0f} h)"
                if q in row["queues"]
                else "-"
                for q in queues
            ]
            lines.append(f"| {row['scenario']} | {row['policy']} | " + " | ".join(cells) + " |")
    errors = [r for r in report["runs"] if r["error"]]  # type: ignore[attr-defined]
    if errors:
        lines += ["", "Failed runs:", ""]
        lines += [f"- {r['scenario']} seed {r['seed']}, {r['policy']}: `{r['error']}`" for r in errors]
    return lines


def _number(value: object) -> str:
    """A ratio to two decimals; "-" where fifo's figure was 0 (no wait to compare with)."""
    return "-" if value is None else f"{value:.2f}"


def _ratio(spread: dict[str, float] | None) -> str:
    if spread is None:
        return "-"
    return f"{spread['median']:.2f} ({spread['min']:.2f}-{spread['max']:.2f})"


def plot_ratios(report: dict[str, object], out: Path) -> None:
    """Mean JCT and p95 wait over fifo's, per scenario and policy: bars are medians, dots are seeds, a
    cross on the line at 1 marks a scenario and policy with a failed run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    policies = [p for p in report["policies"] if p != BASELINE]  # type: ignore[attr-defined]
    names = list(report["scenarios"])  # type: ignore[call-overload]
    failed = {(r["scenario"], r["policy"]) for r in report["runs"] if r["error"]}  # type: ignore[attr-defined]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    width = 0.8 / max(1, len(policies))
    for axis, metric, title in zip(
        axes, ("jct_mean", "wait_p95"), ("mean JCT / fifo", "p95 wait / fifo"), strict=True
    ):
        for index, policy in enumerate(policies):
            offsets = [i + (index - (len(policies) - 1) / 2) * width for i in range(len(names))]
            heights = []
            for x, name in zip(offsets, names, strict=True):
                values = [
                    r[metric]
                    for r in report["ratios"]  # type: ignore[attr-defined]
                    if r["scenario"] == name and r["policy"] == policy and r[metric] is not None
                ]
                heights.append(float(np.median(values)) if values else 0.0)
                axis.scatter([x] * len(values), values, s=8, color="black", zorder=3)
                if (name, policy) in failed:
                    axis.annotate("x", (x, 1), xytext=(0, 2), textcoords="offset points", ha="center")
            axis.bar(offsets, heights, width, label=policy)
        axis.axhline(1.0, color="grey", linewidth=0.8)
        axis.set_xticks(range(len(names)), names)
        axis.set_yscale("log")
        axis.set_title(f"{title} (log; dots: seeds)", fontsize=9)
        axis.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
