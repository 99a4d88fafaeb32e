"""Federation (issue 6): deadlines and forecasts decide early bursts, budgets cap cloud spend.

Scheduler-level cases first (one round on a hand-made snapshot), then replays, then properties over random
federated scenarios: sensitive and non-burstable work never runs on a public cluster, a hard budget is
never exceeded by burst work in any period, and the reported cost is exactly allocations times price.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from builders import job, make_cluster, make_pool
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from corral.control.forecasting import Forecasting
from corral.control.metrics import ControlPlaneMetrics
from corral.control.reconcile import Inventory, reconcile
from corral.core.budgets import BudgetPeriod, BudgetSpec, Enforcement, period_bounds
from corral.core.nodes import build_initial_nodes
from corral.core.queues import QueueSpec
from corral.core.workloads import Workload
from corral.forecasting.replay import FORECAST_JOBS, forecast_private_starts
from corral.forecasting.runtimes import RuntimeEstimates
from corral.scenario.invariants import check_events
from corral.scenario.io import load_cluster_file, load_workload
from corral.scenario.models import ClusterFile, Event
from corral.scheduling import Allocation, get_policy, schedule
from corral.scheduling.bursting import Bursting, Forecast
from corral.scheduling.snapshot import Snapshot
from corral.sim.engine import Simulator, replay_first_starts
from corral.spec.job import JobSpec
from corral.spec.queue import QueueConfig
from corral.store.jobs import JobStore
from corral.store.queues import QueueStore

DEFAULT = get_policy("default")
PRICE = 3.0
CLUSTERS = [
    make_cluster("lab", [make_pool("dgx", flavor="a100", count=1, gpus=8)], private=True),
    make_cluster("cloud", [make_pool("cloud", flavor="a100", count=1, gpus=8, cost=PRICE)], private=False),
]


def _queue(**fields: object) -> QueueSpec:
    return QueueSpec(name="a", quota=None, **fields)  # type: ignore[arg-type]


def _busy_lab(queue: QueueSpec) -> Snapshot:
    """The lab's 8 GPUs are held by a long job started at t=0."""
    snapshot = Snapshot(CLUSTERS, build_initial_nodes(CLUSTERS), [queue])
    long_job = job("long", gpus=8, duration=10_000)
    [start] = schedule(snapshot, [long_job], DEFAULT, now=0.0).starts
    snapshot.allocate(Allocation(long_job, start.cluster, start.flavor, start.placements, 0.0))
    snapshot.commit()
    return snapshot


# -- rule (b): deadlines ---------------------------------------------------------------------------------


def test_a_job_whose_forecast_private_start_misses_its_deadline_bursts_before_its_threshold() -> None:
    snapshot = _busy_lab(_queue(burst_after_seconds=5000))
    urgent = job("urgent", gpus=8, duration=100, deadline=2000.0)
    snapshot.forecast = Forecast({"urgent": 3600.0}, {"urgent": 100.0})
    result = schedule(snapshot, [urgent], DEFAULT, now=10.0)
    assert [(s.job, s.cluster) for s in result.starts] == [("urgent", "cloud")]


def test_a_job_that_meets_its_deadline_on_private_waits_and_is_looked_at_again_at_the_last_safe_moment() -> (
    None
):
    snapshot = _busy_lab(_queue(burst_after_seconds=5000))
    patient = job("patient", gpus=8, duration=100, deadline=9000.0)
    snapshot.forecast = Forecast({"patient": 3600.0}, {"patient": 100.0})
    result = schedule(snapshot, [patient], DEFAULT, now=10.0)
    assert not result.starts
    assert result.wake_at == 5000.0  # the threshold comes before the last safe burst (8900)
    message = result.pending["patient"].message
    assert "forecast: starts on private clusters in 60 min" in message
    assert "bursting would cost about 0.67 USD" in message  # 8 GPUs x 100 s x 3 USD/GPU-hour


def test_bursting_that_would_miss_the_deadline_anyway_is_not_paid_for() -> None:
    snapshot = _busy_lab(_queue(burst_after_seconds=5000))
    hopeless = job("hopeless", gpus=8, duration=100, deadline=50.0)
    snapshot.forecast = Forecast({"hopeless": 3600.0}, {"hopeless": 100.0})
    assert not schedule(snapshot, [hopeless], DEFAULT, now=10.0).starts


def test_a_long_forecast_wait_bursts_a_job_when_the_wait_is_worth_more_than_the_burst() -> None:
    """At 10 USD an hour of waiting, 1.4 h of forecast wait (14 USD) buys a 3 USD burst, not a 24 USD one."""
    snapshot = _busy_lab(_queue(burst_after_seconds=36_000, wait_usd_per_hour=10))
    small, large = job("small", gpus=1, duration=3600), job("large", gpus=8, duration=3600, submit=1)
    snapshot.forecast = Forecast({"small": 5000.0, "large": 5000.0}, {"small": 3600.0, "large": 3600.0})
    result = schedule(snapshot, [small, large], DEFAULT, now=0.0)
    assert [(s.job, s.cluster) for s in result.starts] == [("small", "cloud")]
    assert "at t=36001 s (its queue's burst_after_seconds)" in result.pending["large"].message


# -- budgets ---------------------------------------------------------------------------------------------


def test_a_hard_budget_refuses_a_burst_it_cannot_pay_for_and_says_which_budget() -> None:
    queue = _queue(budget=BudgetSpec(usd=10, period=BudgetPeriod.DAY))
    snapshot = _busy_lab(queue)
    big = job("big", gpus=8, duration=3600)  # 24 USD
    result = schedule(snapshot, [big], DEFAULT, now=0.0)
    assert not result.starts
    assert "queue a's hard budget: this burst would cost about 24.00 USD and 10.00 of 10 USD are left" in (
        result.pending["big"].message
    )


def _bursting_under_budget(spent: float) -> Snapshot:
    """The lab busy, an 8-GPU job running in the cloud since t=0, 10 USD a day of which ``spent`` is gone."""
    snapshot = _busy_lab(_queue(budget=BudgetSpec(usd=10, period=BudgetPeriod.DAY)))
    burst = job("burst", gpus=8, duration=3600)
    snapshot.allocate(Allocation(burst, "cloud", "a100", _cloud_placements(burst), 0.0))
    snapshot.public_spend = {"a": spent}
    return snapshot


def test_a_spent_hard_budget_stops_burst_work_and_keeps_private_work() -> None:
    snapshot = _bursting_under_budget(10.0)
    result = schedule(snapshot, [], DEFAULT, now=1500.0)
    assert [p.job for p in result.preemptions] == ["burst"]  # not "long", which runs in the lab
    assert "spent its hard budget of 10 USD this day" in result.preemptions[0].reason


def test_a_hard_budget_wakes_the_round_when_it_will_be_spent() -> None:
    snapshot = _bursting_under_budget(4.0)
    result = schedule(snapshot, [], DEFAULT, now=600.0)
    assert not result.preemptions
    assert result.wake_at == 600.0 + 6.0 / (24.0 / 3600)


def test_over_a_flex_budget_only_deadline_rescues_burst() -> None:
    queue = _queue(budget=BudgetSpec(usd=1, enforcement=Enforcement.FLEX))
    snapshot = _busy_lab(queue)
    snapshot.public_spend = {"a": 5.0}
    late = job("late", gpus=8, duration=100, deadline=2000.0)
    plain = job("plain", gpus=8, duration=100, submit=1)
    snapshot.forecast = Forecast({"late": 3600.0, "plain": 3700.0}, {"late": 100.0, "plain": 100.0})
    result = schedule(snapshot, [late, plain], DEFAULT, now=10.0)
    assert [s.job for s in result.starts] == ["late"]
    assert "over its flex budget" in result.pending["plain"].message


def test_periods_are_utc_days_and_calendar_months() -> None:
    assert period_bounds(90_000.0, BudgetPeriod.DAY) == (86_400.0, 172_800.0)
    start, end = period_bounds(1_767_225_600.0 + 5, BudgetPeriod.MONTH)  # 2026-01-01T00:00:05Z
    assert (start, end - start) == (1_767_225_600.0, 31 * 86_400.0)


def _cloud_placements(workload: Workload) -> tuple:
    cloud_only = Snapshot([CLUSTERS[1]], build_initial_nodes([CLUSTERS[1]]), None)
    [start] = schedule(cloud_only, [workload], DEFAULT, now=0.0).starts
    return start.placements


# -- forecasts -------------------------------------------------------------------------------------------


def test_the_forecast_replays_the_private_queue_with_estimated_run_times() -> None:
    snapshot = _busy_lab(_queue())
    estimates = RuntimeEstimates(default_seconds=1000.0)
    waiting = [job("w1", gpus=8, submit=1), job("w2", gpus=4, submit=2), job("w3", gpus=4, submit=3)]
    forecast = forecast_private_starts(
        snapshot, waiting, DEFAULT, 500.0, estimates, replay=replay_first_starts
    )
    assert forecast.private_start == {"w1": 1000.0, "w2": 2000.0, "w3": 2000.0}
    assert forecast.runtime["long"] == 1000.0
    assert len(snapshot.running) == 1 and snapshot.nodes["dgx-0"].whole_free_gpus == 0  # untouched


def test_a_start_that_waits_on_run_times_nobody_learned_is_unknown_not_a_day_away() -> None:
    """`corral run --wait` said "starts in 24.0 h": the running job's default time limit (a day) was taken
    as its run time; a spec without time_limit now leaves the workload's None. Until similar jobs have finished, the forecast says it does not know; then it tells
    the start the learned run times give."""
    snapshot = _busy_lab(_queue())  # no declared time limit: stopped after a day, but that is no estimate
    waiting = job("next", gpus=8, submit=1, burstable=False)
    estimates = RuntimeEstimates()
    snapshot.runtime_estimate = estimates  # as the control plane's rounds have it
    snapshot.forecast = forecast_private_starts(
        snapshot, [waiting], DEFAULT, 500.0, estimates, replay=replay_first_starts
    )
    assert snapshot.forecast.guessed == {"long", "next"}
    message = schedule(snapshot, [waiting], DEFAULT, now=500.0).pending["next"].message
    assert "forecast: start unknown until run times are learned" in message
    assert "room held on dgx-0 (when it frees is unknown" in message and " h " not in message
    for runtime in (864.0, 1036.8, 1296.0):  # similar jobs ran 15 to 22 minutes
        estimates.observe(job("done", gpus=8), runtime)
    snapshot.forecast = forecast_private_starts(
        snapshot, [waiting], DEFAULT, 501.0, estimates, replay=replay_first_starts
    )
    message = schedule(snapshot, [waiting], DEFAULT, now=501.0).pending["next"].message
    assert "forecast: starts on private clusters in 9 min" in message  # 537 s to its learned end
    assert "reserved: expected to start in 9 min on dgx-0" in message


def test_run_time_estimates_scale_a_declared_limit_by_what_similar_jobs_used() -> None:
    estimates = RuntimeEstimates()
    for used in (0.2, 0.5, 0.6, 0.75, 0.9):
        estimates.observe(job("done", gpus=2, time_limit=1000.0), used * 1000.0)
    assert estimates(job("next", gpus=2, time_limit=7200.0)) == 0.6 * 7200.0
    assert estimates(job("long-running", gpus=2, time_limit=7200.0), elapsed=4000.0) == 0.75 * 7200.0
    assert estimates(job("past-most", gpus=2, time_limit=7200.0), elapsed=6000.0) == 7200.0  # its limit


def test_without_a_limit_the_estimate_is_conditional_on_what_the_job_has_run() -> None:
    """Heavy tails: a job that has run long is not the median job's few minutes from done."""
    estimates = RuntimeEstimates(default_seconds=3600.0)
    for seconds in (60.0, 120.0, 600.0, 36_000.0, 86_400.0, 90_000.0):
        estimates.observe(job("done", gpus=1), seconds)
    assert estimates(job("new", gpus=1)) == (600.0 + 36_000.0) / 2
    assert estimates(job("old", gpus=1), elapsed=30_000.0) == 86_400.0
    assert estimates(job("unknown", gpus=4)) == (600.0 + 36_000.0) / 2  # queue-wide history
    assert RuntimeEstimates()(job("first", gpus=1), elapsed=5000.0) == 10_000.0


def test_a_replay_bursts_a_deadline_job_at_once_and_lets_an_easy_one_wait() -> None:
    """Before any job has finished, run times are estimated at an hour (``RuntimeEstimates``)."""
    cluster = ClusterFile(clusters=CLUSTERS, queues=[_queue(burst_after_seconds=7200)])
    jobs = [
        job("long", gpus=8, duration=3000.0),
        job("tight", gpus=8, submit=10.0, duration=600.0, deadline=4200.0),
        job("loose", gpus=8, submit=20.0, duration=600.0, deadline=50_000.0),
    ]
    events: list[Event] = []
    summary = Simulator(cluster, jobs, DEFAULT, sink=events.append).run().summary
    started = {e.job: (e.t, e.cluster) for e in events if e.event == "started"}
    assert started["tight"] == (10.0, "cloud")
    assert started["loose"] == (3000.0, "lab")
    assert summary.deadline_misses == 0
    assert check_events(cluster, jobs, events) is None


# -- properties over random federated scenarios -----------------------------------------------------------


@st.composite
def federated(draw: st.DrawFn) -> tuple[ClusterFile, list[Workload]]:
    """A small private lab, an elastic public pool, two queues with budgets, and jobs near midnight."""
    lab = make_pool("own", flavor="a100", count=draw(st.integers(1, 2)), gpus=4)
    cloud = make_pool("rent", flavor="a100", count=0, gpus=4, cost=draw(st.sampled_from([1.0, 3.0])))
    cloud = cloud.model_copy(update={"max_count": 3, "provision_seconds": draw(st.sampled_from([0.0, 30.0]))})
    queues = [
        QueueSpec(
            name=name,
            quota=None,
            burst_after_seconds=draw(st.sampled_from([None, 0.0, 60.0, 300.0])),
            wait_usd_per_hour=draw(st.sampled_from([None, 1.0, 50.0])),
            budget=draw(
                st.one_of(
                    st.none(),
                    st.builds(
                        BudgetSpec,
                        usd=st.sampled_from([0.0, 0.2, 0.5, 2.0]),
                        period=st.just(BudgetPeriod.DAY),
                        enforcement=st.sampled_from(list(Enforcement)),
                    ),
                )
            ),
        )
        for name in ("a", "b")
    ]
    cluster_file = ClusterFile(
        clusters=[make_cluster("lab", [lab], private=True), make_cluster("cloud", [cloud], private=False)],
        queues=queues,
    )
    base = draw(st.sampled_from([0.0, 86_400.0 - 600.0]))  # some runs cross midnight
    count = draw(st.integers(2, 12))
    jobs = [
        Workload(
            id=f"j{i}",
            queue=draw(st.sampled_from(["a", "b"])),
            submit=base + draw(st.integers(0, 900)),
            duration=float(draw(st.integers(1, 1200))),
            gpus_per_pod=draw(st.integers(1, 4)),
            pods=draw(st.integers(1, 2)),
            sensitive=draw(st.integers(0, 4)) == 0,
            burstable=draw(st.integers(0, 4)) != 0,
            deadline=draw(st.one_of(st.none(), st.integers(100, 3000).map(lambda d: base + d))),
            checkpoint_seconds=draw(st.sampled_from([None, 60.0])),
        )
        for i in range(count)
    ]
    return cluster_file, jobs


POLICY_VARIANTS = {
    "default": DEFAULT,
    "never": replace(DEFAULT, bursting=Bursting(enabled=False)),
    "fixed": replace(DEFAULT, bursting=Bursting(after_seconds=60, deadlines=False, wait_value=False)),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=federated(), variant=st.sampled_from(sorted(POLICY_VARIANTS)))
def test_federated_replays_keep_privacy_budgets_and_honest_cost(
    scenario: tuple[ClusterFile, list[Workload]], variant: str
) -> None:
    cluster_file, jobs = scenario
    note(cluster_file.model_dump_json())
    note("\n".join(j.model_dump_json() for j in jobs))
    events: list[Event] = []
    summary = Simulator(cluster_file, jobs, POLICY_VARIANTS[variant], sink=events.append).run().summary
    assert check_events(cluster_file, jobs, events) is None
    by_id = {j.id: j for j in jobs}
    price = {p.name: p.gpu_hour_cost for c in cluster_file.clusters for p in c.pools}
    public = {p.name for c in cluster_file.clusters if not c.private for p in c.pools}
    # Each run: (queue, start, end, USD per second on public nodes, USD per second in all).
    runs: list[tuple[str, float, float, float, float]] = []
    opened: dict[str, tuple[float, float, float]] = {}
    for event in events:
        if event.event == "started":
            assert event.placements is not None
            rate = {True: 0.0, False: 0.0}
            for placement in event.placements:
                pool = placement.node.rsplit("-", 1)[0]
                rate[pool in public] += price[pool] * len(placement.gpus) * placement.gpu_milli / 3.6e6
            if rate[True]:
                assert not by_id[event.job].must_stay_private, f"{event.job} ran on a public cluster"
            opened[event.job] = (event.t, rate[True], rate[True] + rate[False])
        elif event.event in ("finished", "preempted", "failed") and event.job in opened:
            start, public_rate, rate = opened.pop(event.job)
            runs.append((by_id[event.job].queue, start, event.t, public_rate, rate))
    assert not opened
    assert abs(summary.cost_usd - sum((end - start) * rate for _, start, end, _, rate in runs)) < 1e-6
    for queue in cluster_file.queues or []:
        if queue.budget is None or not queue.budget.hard:
            continue
        spent: dict[float, float] = defaultdict(float)
        for name, start, end, public_rate, _ in runs:
            if name != queue.name or not public_rate:
                continue
            t = start
            while t < end:
                period_start, period_end = period_bounds(t, queue.budget.period)
                spent[period_start] += (min(end, period_end) - t) * public_rate
                t = period_end
        for period_start, usd in spent.items():
            assert usd <= queue.budget.usd + 1e-6, f"queue {queue.name} spent {usd} in period {period_start}"


# -- the control plane: the same rules, fed from the store ------------------------------------------------


def _store_queue(store: JobStore, **fields: object) -> None:
    QueueStore(store.engine).put(QueueConfig(name="a", quota=None, **fields))  # type: ignore[arg-type]


def _train(name: str, gpus: int = 8, **fields: object) -> JobSpec:
    return JobSpec(name=name, queue="a", command="train", resources={"gpus": gpus}, time_limit="1h", **fields)


def test_corral_why_shows_the_forecast_private_start_and_what_bursting_would_cost(store: JobStore) -> None:
    _store_queue(store, burst_after_seconds=36_000)
    store.submit(_train("first"))
    waiting = store.submit(_train("second"))
    reconcile(
        store.engine, Inventory(CLUSTERS), DEFAULT, now=100.0, forecasting=Forecasting(replay_first_starts)
    )
    reason = store.get(waiting.id).reason or ""
    # No history yet: each job is estimated at its 1 h time limit, and "first" started at t=100.
    assert "forecast: starts on private clusters in 60 min" in reason
    assert "bursting would cost about 24.00 USD" in reason
    record = store.get(waiting.id)
    assert (record.forecast_start, record.burst_cost_usd) == (3700.0, 24.0)  # for the API's /why


def test_the_control_plane_holds_bursts_to_a_hard_budget_from_its_charges(store: JobStore) -> None:
    inventory = Inventory(
        [CLUSTERS[0], make_cluster("cloud", [make_pool("cloud", "a100", count=2, cost=PRICE)], private=False)]
    )
    _store_queue(store, budget=BudgetSpec(usd=30, period=BudgetPeriod.DAY))
    first, second, third = (store.submit(_train(name)) for name in ("first", "second", "third"))
    result = reconcile(
        store.engine, inventory, DEFAULT, now=100.0, forecasting=Forecasting(replay_first_starts)
    )
    assert sorted((s.job, s.cluster) for s in result.starts) == sorted(
        [(first.id, "lab"), (second.id, "cloud")]
    )
    assert "hard budget: this burst would cost about 24.00 USD and 6.00 of 30 USD are left" in (
        store.get(third.id).reason or ""
    )
    # 2900 s later the burst has spent 19.33 USD (from the ledger) and runs on: nothing starts or stops.
    later = reconcile(
        store.engine, inventory, DEFAULT, now=3000.0, forecasting=Forecasting(replay_first_starts)
    )
    assert not later.starts and not later.preemptions
    # An admin cuts the budget to 15 USD: the running burst is over it and stops; the lab job runs on.
    _store_queue(store, budget=BudgetSpec(usd=15, period=BudgetPeriod.DAY))
    cut = reconcile(
        store.engine, inventory, DEFAULT, now=3001.0, forecasting=Forecasting(replay_first_starts)
    )
    assert [p.job for p in cut.preemptions] == [second.id] and not cut.starts
    assert store.get(first.id).status == "running"
    assert "has spent its hard budget" in (store.get(second.id).reason or "")


def test_the_federation_example_keeps_medical_work_private_and_vision_within_its_budget() -> None:
    folder = Path(__file__).resolve().parents[1] / "examples" / "federation"
    cluster_file = load_cluster_file(folder / "cluster.yaml")
    jobs = load_workload(folder / "workload.jsonl")
    events: list[Event] = []
    summary = Simulator(cluster_file, jobs, DEFAULT, sink=events.append).run().summary
    assert check_events(cluster_file, jobs, events) is None
    clouds = {e.job for e in events if e.event == "started" and e.cluster == "cloud"}
    assert clouds and not any(job.startswith("med") for job in clouds)
    assert summary.finished == len(jobs) and summary.cost_per_queue.get("medical", 0.0) == 0.0
    # Over two days vision spends more than one day's budget in all, but never more in one day.
    vision = summary.queues["vision"]
    assert (vision.budget_usd, vision.budget_period) == (40.0, "day")
    assert vision.cost_usd > 40.0 and 0.0 < (vision.peak_period_cost_usd or 0.0) <= 40.0 + 1e-6
    # Forecasts are on (a public cluster, default bursting) and counted apart from the scheduler.
    assert summary.forecasts > 0 and summary.forecast_seconds > 0.0


def test_forecasts_are_made_again_for_new_jobs_but_not_more_often_than_every_two_seconds(
    store: JobStore,
) -> None:
    _store_queue(store)
    forecasting = Forecasting(replay_first_starts)
    store.submit(_train("first"))
    reconcile(store.engine, Inventory(CLUSTERS), DEFAULT, now=100.0, forecasting=forecasting)
    store.submit(_train("second"))
    reconcile(store.engine, Inventory(CLUSTERS), DEFAULT, now=100.5, forecasting=forecasting)
    made = forecasting.made_at
    newcomer = store.submit(_train("third"))
    reconcile(store.engine, Inventory(CLUSTERS), DEFAULT, now=101.0, forecasting=forecasting)
    assert forecasting.made_at == made and store.get(newcomer.id).forecast_start is None
    reconcile(store.engine, Inventory(CLUSTERS), DEFAULT, now=103.0, forecasting=forecasting)
    assert forecasting.made_at == 103.0 and store.get(newcomer.id).forecast_start is not None


def test_each_forecast_is_timed_apart_from_the_round_for_the_metrics(store: JobStore) -> None:
    _store_queue(store)
    metrics = ControlPlaneMetrics(store.engine, CLUSTERS)
    seconds: list[float] = []

    def observe(spent: float) -> None:
        seconds.append(spent)
        metrics.observe_forecast(spent)

    forecasting = Forecasting(replay_first_starts, on_forecast=observe)
    store.submit(_train("first"))
    reconcile(store.engine, Inventory(CLUSTERS), DEFAULT, now=100.0, forecasting=forecasting)
    reconcile(store.engine, Inventory(CLUSTERS), DEFAULT, now=100.5, forecasting=forecasting)  # reused
    assert len(seconds) == 1 and seconds[0] >= 0.0
    text = generate_latest(metrics.registry).decode()
    assert "corral_forecast_seconds_count 1.0" in text
    assert "corral_reconcile_round_seconds_count 0.0" in text  # the loop observes rounds, not reconcile


def test_a_forecast_replays_only_the_jobs_first_in_line() -> None:
    cluster = ClusterFile(clusters=CLUSTERS)
    snapshot = Snapshot(cluster.clusters, build_initial_nodes(cluster.clusters))
    waiting = [job(f"w{i}", gpus=8, submit=float(i), duration=60.0) for i in range(FORECAST_JOBS + 20)]
    urgent = job("urgent", gpus=8, submit=1000.0, priority=5, duration=60.0)
    forecast = forecast_private_starts(
        snapshot, [*waiting, urgent], DEFAULT, 1000.0, RuntimeEstimates(), replay=replay_first_starts
    )
    assert forecast.private_start["urgent"] == 1000.0  # first in line by priority
    assert set(forecast.private_start) == {"urgent"} | {w.id for w in waiting[: FORECAST_JOBS - 1]}


def test_a_charge_across_midnight_is_paid_from_both_days() -> None:
    from corral.core.budgets import BudgetPeriod, BudgetSpec
    from corral.sim.ledger import SpendLedger

    ledger = SpendLedger({"vision": BudgetSpec(usd=40, period=BudgetPeriod.DAY, enforcement="hard")})
    day = 86400.0
    ledger.open("a", "vision", 1 / 3600, day - 3600)  # 1 USD an hour, from 23:00
    ledger.close("a", day + 7200)  # to 02:00: 1 USD on day one, 2 on day two
    assert ledger.peak_period_spend(day + 7200) == {"vision": 2.0}
    ledger.open("b", "vision", 3 / 3600, day + 7200)  # still running at the end: counted so far
    assert ledger.peak_period_spend(day + 3 * 3600) == {"vision": 5.0}
