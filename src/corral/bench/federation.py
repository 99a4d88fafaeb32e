"""When to burst: corral's federation policy against fixed rules, on the Alibaba trace (issue 6).

The scenario keeps the trace's GPU jobs with their arrival times and run times, on a private cluster
sized to about 60% of the trace's peak demand, next to an elastic public cluster at an on-demand A100
price. A seeded draw marks some jobs sensitive (never public) and gives some a deadline a few times their
run time after submission. Every policy replays the same scenario in the same run: never burst, always
burst, burst after a fixed wait, and corral's rule (the queue's threshold, a forecast deadline miss, or a
long forecast wait for a small job). A linear relaxation solved by HiGHS (``corral.sim.bound``) bounds the
cost any schedule could reach with as many deadline misses, on a window of the trace small enough to solve.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from corral.core.cluster import ClusterSpec, NodeTemplate, PoolSpec
from corral.core.queues import QueueSpec
from corral.core.workloads import Workload
from corral.scenario.io import load_workload
from corral.scenario.models import ClusterFile, Event, Summary
from corral.scheduling import Policy, get_policy
from corral.scheduling.bursting import Bursting
from corral.sim.bound import cost_lower_bound
from corral.sim.engine import Simulator
from corral.traces.alibaba import import_openb

QUEUE = "research"
NODE_GPUS = 8
NODE = NodeTemplate(cpu=128, memory_gib=1024, gpus=NODE_GPUS, gpu_model="A100", gpu_memory_gib=80)


@dataclass(frozen=True)
class ScenarioSettings:
    private_share: float = 0.6
    """Private GPUs as a share of peak demand (the most GPUs the jobs would hold if each started on
    arrival)."""
    gpu_hour_usd: float = 3.0
    provision_seconds: float = 120.0
    sensitive_share: float = 0.2
    deadline_share: float = 0.25
    deadline_slack: tuple[float, float] = (1.5, 4.0)
    """A deadline job must finish within this many times its run time after submission (drawn)."""
    time_limit_slack: tuple[float, float] = (1.0, 3.0)
    """Each job declares a time limit this many times its run time (drawn), rounded up to 15 minutes:
    the trace has no limits, and users over-declare."""
    queue_threshold_seconds: float = 12 * 3600.0
    """The queue's ``burst_after_seconds``, which only corral's policy reads (the fixed rules set their
    own): the fallback when forecasts are wrong."""
    wait_usd_per_hour: float = 10.0
    """The queue's ``wait_usd_per_hour``: what an hour of a job's wait is worth to the team."""
    seed: int = 0


@dataclass(frozen=True)
class Scenario:
    cluster_file: ClusterFile
    workloads: list[Workload]
    peak_demand_gpus: float
    private_gpus: int


def federation_policies(threshold_minutes: Sequence[int] = (10, 30, 60)) -> dict[str, Policy]:
    """The rules compared, all on the default policy's ordering and placement."""
    base = get_policy("default")
    policies = {
        "never": Bursting(enabled=False),
        "always": Bursting(after_seconds=0.0, deadlines=False, wait_value=False),
        **{
            f"wait {m} min": Bursting(after_seconds=m * 60.0, deadlines=False, wait_value=False)
            for m in threshold_minutes
        },
        "corral": Bursting(),
    }
    return {name: replace(base, name=name, bursting=rule) for name, rule in policies.items()}


def build_scenario(trace_dir: Path, settings: ScenarioSettings = ScenarioSettings()) -> Scenario:
    """The federation scenario from the trace's default pod list (GPU jobs only)."""
    with tempfile.TemporaryDirectory() as scratch:
        imported = import_openb(trace_dir, Path(scratch))
        trace_jobs = busy_weeks(
            [job for job in load_workload(imported.workload_path) if job.gpu_demand_milli > 0]
        )
    draw = random.Random(settings.seed)
    jobs = []
    for job in trace_jobs:
        deadline = None
        if draw.random() < settings.deadline_share:
            deadline = job.submit + job.duration * draw.uniform(*settings.deadline_slack)
        limit = math.ceil(job.duration * draw.uniform(*settings.time_limit_slack) / 900) * 900.0
        jobs.append(
            job.model_copy(
                update={
                    "queue": QUEUE,
                    "gpu_model": None,
                    "sensitive": draw.random() < settings.sensitive_share,
                    "deadline": deadline,
                    "time_limit": limit,
                }
            )
        )
    peak = peak_demand(jobs)
    nodes = max(1, round(settings.private_share * peak / NODE_GPUS))
    cluster_file = ClusterFile(
        clusters=[
            ClusterSpec(
                name="lab",
                private=True,
                pools=[PoolSpec(name="dgx", flavor="a100", tier="silver", count=nodes, node=NODE)],
            ),
            ClusterSpec(
                name="cloud",
                private=False,
                pools=[
                    PoolSpec(
                        name="cloud-a100",
                        flavor="a100",
                        tier="gold",
                        gpu_hour_cost=settings.gpu_hour_usd,
                        count=0,
                        max_count=max(1, math.ceil(peak / NODE_GPUS)),
                        provision_seconds=settings.provision_seconds,
                        node=NODE,
                    )
                ],
            ),
        ],
        queues=[
            QueueSpec(
                name=QUEUE,
                quota=None,
                burst_after_seconds=settings.queue_threshold_seconds,
                wait_usd_per_hour=settings.wait_usd_per_hour,
            )
        ],
    )
    return Scenario(cluster_file, jobs, peak, nodes * NODE_GPUS)


BUSY_DAY_JOBS = 20
"""A day with at least this many arrivals is busy: the trace's first months have a job every few days."""


def busy_weeks(jobs: Sequence[Workload]) -> list[Workload]:
    """The jobs from the first busy day on, with times shifted to start there: months of a near-empty
    cluster would dilute every utilisation figure without testing any policy."""
    days = np.bincount([int(job.submit // 86_400) for job in jobs])
    busy = np.nonzero(days >= BUSY_DAY_JOBS)[0]
    origin = float(busy[0]) * 86_400 if len(busy) else 0.0
    return [
        job.model_copy(update={"submit": job.submit - origin})
        for job in sorted(jobs, key=lambda job: job.submit)
        if job.submit >= origin
    ]


def peak_demand(jobs: Sequence[Workload]) -> float:
    """The most GPUs the jobs hold at once if each starts on arrival and runs its duration."""
    changes = sorted(
        [(job.submit, job.gpu_demand_milli) for job in jobs]
        + [(job.submit + job.duration, -job.gpu_demand_milli) for job in jobs]
    )
    held = peak = 0
    for _, change in changes:
        held += change
        peak = max(peak, held)
    return peak / 1000


@dataclass(frozen=True)
class PolicyRow:
    policy: str
    cost_usd: float
    wait_p50: float
    wait_p95: float
    deadline_misses: int
    private_allocation: float
    """GPU-time allocated on private GPUs over their capacity-time (the makespan)."""
    burst_jobs: int
    seconds: float


def run_policies(
    scenario: Scenario, policies: dict[str, Policy], on_done: Callable[[PolicyRow], None] | None = None
) -> list[PolicyRow]:
    rows = []
    for name, policy in policies.items():
        started = time.perf_counter()
        usage = _Usage(scenario.cluster_file)
        summary = (
            Simulator(scenario.cluster_file, scenario.workloads, policy, sink=usage.record).run().summary
        )
        row = _row(name, summary, usage.private_share(summary), len(usage.burst_jobs), started)
        rows.append(row)
        if on_done is not None:
            on_done(row)
    return rows


class _Usage:
    """From the event log: private GPU-seconds (what the owned GPUs did) and the jobs that burst."""

    def __init__(self, cluster_file: ClusterFile) -> None:
        self._private = {c.name for c in cluster_file.clusters if c.private}
        self._capacity = sum(
            p.count * p.node.gpus for c in cluster_file.clusters if c.private for p in c.pools
        )
        self._open: dict[str, tuple[float, float]] = {}
        self.gpu_seconds = 0.0
        self.burst_jobs: set[str] = set()

    def record(self, event: Event) -> None:
        if event.event == "started" and event.job is not None:
            gpus = sum(p.gpu_milli * len(p.gpus) for p in event.placements or ()) / 1000
            if event.cluster in self._private:
                self._open[event.job] = (event.t, gpus)
            else:
                self.burst_jobs.add(event.job)
        elif event.event in ("finished", "preempted", "failed") and event.job in self._open:
            start, gpus = self._open.pop(event.job)
            self.gpu_seconds += (event.t - start) * gpus

    def private_share(self, summary: Summary) -> float:
        capacity = self._capacity * summary.makespan
        return self.gpu_seconds / capacity if capacity else 0.0


def _row(name: str, summary: Summary, private: float, burst: int, started: float) -> PolicyRow:
    return PolicyRow(
        policy=name,
        cost_usd=summary.cost_usd,
        wait_p50=summary.wait_p50,
        wait_p95=summary.wait_p95,
        deadline_misses=summary.deadline_misses,
        private_allocation=private,
        burst_jobs=burst,
        seconds=time.perf_counter() - started,
    )


def dominates(row: PolicyRow, other: PolicyRow) -> bool:
    """No worse on both cost and p95 wait (the issue's goal against every fixed threshold)."""
    return row.cost_usd <= other.cost_usd + 1e-6 and row.wait_p95 <= other.wait_p95 + 1e-6


@dataclass(frozen=True)
class EtaError:
    jobs: int
    mae_seconds: float
    median_abs_seconds: float
    baseline_mae_seconds: float
    """Error of the naive forecast "starts now" on the same jobs, for scale."""


def eta_error(scenario: Scenario, held_back_share: float = 0.4) -> EtaError:
    """How far the forecast private start (made when a job arrives) is from its actual start, on the
    jobs of the last ``held_back_share`` of the trace; the replay never bursts, so actual starts are
    private starts, and the run-time estimates have learned only from jobs finished before each forecast."""
    policy = federation_policies()["never"]
    simulator = Simulator(scenario.cluster_file, scenario.workloads, policy, record_forecasts=True)
    simulator.run()
    ordered = sorted(scenario.workloads, key=lambda job: job.submit)
    held_back = ordered[int(len(ordered) * (1 - held_back_share)) :]
    errors, baseline = [], []
    for job in held_back:
        predicted = simulator.predicted_starts.get(job.id)
        actual = simulator.tally.jobs[job.id].first_start
        if predicted is None or actual is None:
            continue
        errors.append(abs(predicted - actual))
        baseline.append(abs(job.submit - actual))
    return EtaError(
        jobs=len(errors),
        mae_seconds=float(np.mean(errors)) if errors else 0.0,
        median_abs_seconds=float(np.median(errors)) if errors else 0.0,
        baseline_mae_seconds=float(np.mean(baseline)) if baseline else 0.0,
    )


@dataclass(frozen=True)
class BoundRow:
    policy: str
    cost_usd: float
    deadline_misses: int
    wait_p95: float
    bound_usd: float
    """The least cost of any schedule with no more deadline misses and no higher p95 wait (LP bound)."""
    over_bound_pct: float | None


def bound_rows(scenario: Scenario, policies: dict[str, Policy], jobs: int) -> list[BoundRow]:
    """Each policy's cost on a window of ``jobs`` consecutive arrivals against the LP bound at the same
    number of deadline misses (``corral.sim.bound``). The window is where waiting is worst when nothing
    bursts, since a quiet stretch has a bound of 0 for every policy."""
    ordered = sorted(scenario.workloads, key=lambda job: job.submit)
    jobs = min(jobs, len(ordered))
    never = Simulator(scenario.cluster_file, ordered, federation_policies()["never"])
    never.run()
    waits = np.array(
        [
            (record.first_start if record.first_start is not None else never.tally.last_time) - job.submit
            for job in ordered
            for record in [never.tally.jobs[job.id]]
        ]
    )
    totals = np.convolve(waits, np.ones(jobs), mode="valid")
    start = int(np.argmax(totals))
    origin = ordered[start].submit
    window = [
        job.model_copy(
            update={
                "submit": job.submit - origin,
                "deadline": None if job.deadline is None else job.deadline - origin,
            }
        )
        for job in ordered[start : start + jobs]
    ]
    # What the private GPUs were already running when the window opened (in the never-burst replay)
    # stays: as private-only jobs at t=0 for the rest of their run, due when that run ends, so the window
    # starts as contended and the bound cannot postpone them.
    for job in ordered[:start]:
        record = never.tally.jobs[job.id]
        end = record.end if record.end is not None else never.tally.last_time
        if record.first_start is not None and record.first_start < origin < end:
            window.append(
                job.model_copy(
                    update={
                        "submit": 0.0,
                        "duration": end - origin,
                        "burstable": False,
                        "deadline": end - origin,
                    }
                )
            )
    rows = []
    for name, policy in policies.items():
        replay = Simulator(scenario.cluster_file, window, policy)
        summary = replay.run().summary
        bound = cost_lower_bound(
            scenario.cluster_file,
            [_with_wait_deadline(job, summary.wait_p95) for job in window],
            summary.deadline_misses + _waited_longer(replay, window, summary.wait_p95),
        ).cost_usd
        over = 100 * (summary.cost_usd - bound) / bound if bound > 0 else None
        rows.append(BoundRow(name, summary.cost_usd, summary.deadline_misses, summary.wait_p95, bound, over))
    return rows


def _with_wait_deadline(job: Workload, wait: float) -> Workload:
    """The job due when it would end had it waited ``wait``, or by its own deadline if that is sooner:
    a schedule whose p95 wait is ``wait`` meets this for all but the jobs that waited longer."""
    due = job.submit + wait + job.duration
    return job.model_copy(update={"deadline": due if job.deadline is None else min(job.deadline, due)})


def _waited_longer(replay: Simulator, window: Sequence[Workload], wait: float) -> int:
    waited = 0
    for job in window:
        start = replay.tally.jobs[job.id].first_start
        if start is None or start - job.submit > wait:
            waited += 1
    return waited


def report(
    trace_dir: Path,
    settings: ScenarioSettings = ScenarioSettings(),
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    bound_jobs: int = 300,
    on_done: Callable[[PolicyRow], None] | None = None,
) -> dict[str, object]:
    """The whole comparison as plain data. Which jobs are sensitive or have deadlines is drawn per seed,
    and cost hangs on a few very long jobs, so every policy runs on each seed's scenario and the table
    gives medians; ETA error and the bound use the first seed."""
    policies = federation_policies()
    runs: dict[int, list[PolicyRow]] = {}
    scenarios = {}
    for seed in seeds:
        scenarios[seed] = build_scenario(trace_dir, replace(settings, seed=seed))
        runs[seed] = run_policies(scenarios[seed], policies, on_done)
    medians = [
        _median_row(name, [row for rows in runs.values() for row in rows if row.policy == name])
        for name in policies
    ]
    dominated = {
        name: sum(dominates(_named(rows, "corral"), _named(rows, name)) for rows in runs.values())
        for name in policies
        if name.startswith("wait ")
    }
    first = scenarios[seeds[0]]
    return {
        "settings": asdict(settings),
        "seeds": list(seeds),
        "jobs": len(first.workloads),
        "peak_demand_gpus": first.peak_demand_gpus,
        "private_gpus": first.private_gpus,
        "policies": [asdict(row) for row in medians],
        "runs": {str(seed): [asdict(row) for row in rows] for seed, rows in runs.items()},
        "corral_dominates_seeds": dominated,
        "corral_dominates_medians": {
            name: dominates(_named(medians, "corral"), _named(medians, name)) for name in dominated
        },
        "eta": asdict(eta_error(first)),
        "bound_jobs": bound_jobs,
        "bound": [asdict(row) for row in bound_rows(first, policies, bound_jobs)],
    }


def _named(rows: Sequence[PolicyRow], name: str) -> PolicyRow:
    return next(row for row in rows if row.policy == name)


def _median_row(name: str, rows: Sequence[PolicyRow]) -> PolicyRow:
    def median(field: str) -> float:
        return float(np.median([getattr(row, field) for row in rows]))

    return PolicyRow(
        policy=name,
        cost_usd=median("cost_usd"),
        wait_p50=median("wait_p50"),
        wait_p95=median("wait_p95"),
        deadline_misses=int(median("deadline_misses")),
        private_allocation=median("private_allocation"),
        burst_jobs=int(median("burst_jobs")),
        seconds=median("seconds"),
    )


def markdown_table(report: dict[str, object]) -> list[str]:
    """The comparison as Markdown: medians per policy, how often corral dominated, the bound window."""
    seeds = len(report["seeds"])  # type: ignore[arg-type]
    lines = [
        f"Medians over {seeds} seeds (each seed draws which jobs are sensitive, have deadlines, and their "
        "declared time limits):",
        "",
        "| policy | cost USD | wait p50 s | wait p95 s | deadline misses | private allocation | jobs burst |"
        " replay s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["policies"]:  # type: ignore[attr-defined]
        lines.append(
            f"| {row['policy']} | {row['cost_usd']:.0f} | {row['wait_p50']:.0f} | {row['wait_p95']:.0f} | "
            f"{row['deadline_misses']} | {row['private_allocation']:.1%} | {row['burst_jobs']} | "
            f"{row['seconds']:.1f} |"
        )
    dominated = report["corral_dominates_seeds"]
    lines += [
        "",
        "corral no worse on both cost and p95 wait than "
        + ", ".join(f"{name}: in {count} of {seeds} seeds" for name, count in dominated.items())  # type: ignore[attr-defined]
        + ".",
        "",
        "Cost against the HiGHS LP lower bound at the same deadline misses and p95 wait, on a window of "
        f"the {report['bound_jobs']} consecutive arrivals that wait longest when nothing bursts (first seed), "
        "with the jobs already running then kept on private GPUs:",
        "",
        "| policy | cost USD | deadline misses | wait p95 s | lower bound USD | over the bound |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["bound"]:  # type: ignore[attr-defined]
        over = "-" if row["over_bound_pct"] is None else f"{row['over_bound_pct']:.0f}%"
        lines.append(
            f"| {row['policy']} | {row['cost_usd']:.1f} | {row['deadline_misses']} | {row['wait_p95']:.0f} | "
            f"{row['bound_usd']:.1f} | {over} |"
        )
    return lines


def plot_cost_against_wait(report: dict[str, object], out: Path) -> None:
    """Cost against p95 wait, one point per policy: a policy dominates those above and to its right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    colors = {}
    for row in report["policies"]:  # type: ignore[attr-defined]
        colors[row["policy"]] = axis.scatter(row["wait_p95"] / 60, row["cost_usd"], s=50).get_facecolor()
    for rows in report["runs"].values():  # type: ignore[attr-defined]
        for row in rows:
            axis.scatter(row["wait_p95"] / 60, row["cost_usd"], s=10, alpha=0.35, color=colors[row["policy"]])
    for index, row in enumerate(report["policies"]):  # type: ignore[attr-defined]
        axis.annotate(
            row["policy"],
            (row["wait_p95"] / 60, row["cost_usd"]),
            fontsize=8,
            xytext=(4, 6 if index % 2 else -12),  # alternate, so neighbours' labels do not overlap
            textcoords="offset points",
        )
    axis.set_xscale("symlog", linthresh=1)
    axis.set_xlabel("p95 wait (minutes, symlog)")
    axis.set_ylabel("public cloud cost (USD)")
    axis.set_title(
        f"Alibaba trace, {report['jobs']} GPU jobs, {report['private_gpus']} private GPUs "
        "(big: median, small: seeds)",
        fontsize=9,
    )
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
