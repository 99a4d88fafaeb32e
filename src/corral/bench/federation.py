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
    bound_usd: float
    over_bound_pct: float | None


def bound_rows(scenario: Scenario, policies: dict[str, Policy], jobs: int, seed: int = 0) -> list[BoundRow]:
    """Each policy's cost on a window of ``jobs`` consecutive arrivals against the LP bound at the same
    number of deadline misses (``corral.sim.bound``)."""
    ordered = sorted(scenario.workloads, key=lambda job: job.submit)
    start = random.Random(seed).randrange(max(1, len(ordered) - jobs))
    window = ordered[start : start + jobs]
    origin = window[0].submit
    window = [
        job.model_copy(
            update={
                "submit": job.submit - origin,
                "deadline": None if job.deadline is None else job.deadline - origin,
            }
        )
        for job in window
    ]
    small = replace(scenario, workloads=window)
    rows = []
    for row in run_policies(small, policies):
        bound = cost_lower_bound(small.cluster_file, window, row.deadline_misses).cost_usd
        over = 100 * (row.cost_usd - bound) / bound if bound > 0 else None
        rows.append(BoundRow(row.policy, row.cost_usd, row.deadline_misses, bound, over))
    return rows


def report(
    trace_dir: Path,
    settings: ScenarioSettings = ScenarioSettings(),
    bound_jobs: int = 300,
    on_done: Callable[[PolicyRow], None] | None = None,
) -> dict[str, object]:
    """The whole comparison as plain data: scenario, one row per policy, ETA error, bound window."""
    scenario = build_scenario(trace_dir, settings)
    policies = federation_policies()
    rows = run_policies(scenario, policies, on_done)
    by_name = {row.policy: row for row in rows}
    fixed = [row for row in rows if row.policy.startswith("wait ")]
    return {
        "settings": asdict(settings),
        "jobs": len(scenario.workloads),
        "peak_demand_gpus": scenario.peak_demand_gpus,
        "private_gpus": scenario.private_gpus,
        "policies": [asdict(row) for row in rows],
        "corral_dominates": {row.policy: dominates(by_name["corral"], row) for row in fixed},
        "eta": asdict(eta_error(scenario)),
        "bound_jobs": bound_jobs,
        "bound": [asdict(row) for row in bound_rows(scenario, policies, bound_jobs)],
    }


def markdown_table(report: dict[str, object]) -> list[str]:
    """The comparison as Markdown: one row per policy, then the bound window and the ETA error."""
    lines = [
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
    lines += [
        "",
        f"Cost against the HiGHS LP lower bound at the same deadline misses, on a window of "
        f"{report['bound_jobs']} consecutive jobs:",
        "",
        "| policy | cost USD | deadline misses | lower bound USD | over the bound |",
        "|---|---|---|---|---|",
    ]
    for row in report["bound"]:  # type: ignore[attr-defined]
        over = "-" if row["over_bound_pct"] is None else f"{row['over_bound_pct']:.0f}%"
        lines.append(
            f"| {row['policy']} | {row['cost_usd']:.1f} | {row['deadline_misses']} | {row['bound_usd']:.1f} |"
            f" {over} |"
        )
    return lines


def plot_cost_against_wait(report: dict[str, object], out: Path) -> None:
    """Cost against p95 wait, one point per policy: a policy dominates those above and to its right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    for row in report["policies"]:  # type: ignore[attr-defined]
        axis.scatter(row["wait_p95"] / 60, row["cost_usd"], s=40)
        axis.annotate(
            row["policy"],
            (row["wait_p95"] / 60, row["cost_usd"]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    axis.set_xscale("symlog", linthresh=1)
    axis.set_xlabel("p95 wait (minutes, symlog)")
    axis.set_ylabel("public cloud cost (USD)")
    axis.set_title(f"Alibaba trace, {report['jobs']} GPU jobs, private = {report['private_gpus']} GPUs")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
