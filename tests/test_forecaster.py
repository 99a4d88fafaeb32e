"""Forecasts off the hot path: a round starts what fits without waiting for a replay, uses the forecast
once it is done, goes on when a replay fails, and the forecast thread ends with the loop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence

import pytest
from builders import make_cluster, make_pool
from prometheus_client import generate_latest

from corral.control.forecaster import BackgroundForecasting, detached_copy
from corral.control.forecasting import REFRESH_SECONDS
from corral.control.loop import ReconcileLoop
from corral.control.metrics import ControlPlaneMetrics
from corral.control.reconcile import Inventory, reconcile
from corral.core.nodes import build_initial_nodes
from corral.core.workloads import Workload
from corral.forecasting.replay import ReplayStart
from corral.scenario.models import ClusterFile
from corral.scheduling import Allocation, get_policy, schedule
from corral.scheduling.snapshot import Snapshot
from corral.sim.engine import replay_first_starts
from corral.spec.job import JobSpec
from corral.spec.queue import QueueConfig
from corral.store.jobs import JobStore
from corral.store.queues import QueueStore

DEFAULT = get_policy("default")
CLUSTERS = [
    make_cluster("lab", [make_pool("dgx", flavor="a100", count=1, gpus=8)], private=True),
    make_cluster("cloud", [make_pool("cloud", flavor="a100", count=1, gpus=8, cost=3.0)], private=False),
]
INVENTORY = Inventory(CLUSTERS)
SAFETY = 30.0
"""Seconds a test waits for the other thread before it fails, rather than hang."""


def _train(name: str) -> JobSpec:
    return JobSpec(name=name, queue="a", command="train", resources={"gpus": 8}, time_limit="1h")


@pytest.fixture
def queued(store: JobStore) -> JobStore:
    """A queue that never bursts by threshold alone (10 h), so the second job waits for the lab."""
    QueueStore(store.engine).put(QueueConfig(name="a", quota=None, burst_after_seconds=36_000))
    return store


class GatedReplay:
    """The simulator's replay, held until the test lets it go: a replay as slow as the test wants."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(
        self, cluster_file: ClusterFile, jobs: Sequence[Workload], policy: object, start: ReplayStart
    ) -> dict[str, float]:
        self.entered.set()
        if not self.release.wait(SAFETY):
            raise RuntimeError("the test never released the replay")
        return replay_first_starts(cluster_file, jobs, policy, start)  # type: ignore[arg-type]


@pytest.fixture
def gated() -> Iterator[tuple[GatedReplay, BackgroundForecasting]]:
    replay = GatedReplay()
    forecasting = BackgroundForecasting(replay)
    yield replay, forecasting
    replay.release.set()
    forecasting.close()


def test_a_round_starts_what_fits_without_waiting_for_a_slow_forecast_and_the_next_uses_it(
    queued: JobStore, gated: tuple[GatedReplay, BackgroundForecasting]
) -> None:
    replay, forecasting = gated
    first, second = queued.submit(_train("first")), queued.submit(_train("second"))
    result = reconcile(queued.engine, INVENTORY, DEFAULT, now=100.0, forecasting=forecasting)
    # The replay has begun and is held, yet the round returned: the lab job started, nothing waited.
    assert replay.entered.wait(SAFETY)
    assert [start.job for start in result.starts] == [first.id]
    assert queued.get(second.id).forecast_start is None
    replay.release.set()
    assert forecasting.wait(SAFETY)
    reconcile(queued.engine, INVENTORY, DEFAULT, now=100.5, forecasting=forecasting)
    # The forecast describes t=100: "first" started then, with its 1 h time limit as its run time.
    record = queued.get(second.id)
    assert (record.forecast_start, record.burst_cost_usd) == (3700.0, 24.0)
    assert "forecast: starts on private clusters in 60 min" in (record.reason or "")


def test_a_second_forecast_is_not_asked_for_while_one_is_in_flight(
    queued: JobStore, gated: tuple[GatedReplay, BackgroundForecasting]
) -> None:
    replay, forecasting = gated
    calls: list[float] = []
    forecasting.on_forecast = calls.append
    queued.submit(_train("first"))
    reconcile(queued.engine, INVENTORY, DEFAULT, now=100.0, forecasting=forecasting)
    queued.submit(_train("second"))  # new work, and the 2 s gap has passed: a forecast would be due
    reconcile(queued.engine, INVENTORY, DEFAULT, now=103.0, forecasting=forecasting)
    replay.release.set()
    assert forecasting.wait(SAFETY)
    assert len(calls) == 1 and forecasting.made_at == 100.0


def test_a_replay_that_fails_is_logged_and_rounds_go_on_and_forecast_again_later(
    queued: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    failures = iter([RuntimeError("replay broke")])

    def flaky(*args: object) -> dict[str, float]:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return replay_first_starts(*args)  # type: ignore[arg-type]

    forecasting = BackgroundForecasting(flaky)
    try:
        first, second = queued.submit(_train("first")), queued.submit(_train("second"))
        with caplog.at_level(logging.ERROR, logger="corral.control.forecaster"):
            result = reconcile(queued.engine, INVENTORY, DEFAULT, now=100.0, forecasting=forecasting)
            assert forecasting.wait(SAFETY)
        assert [start.job for start in result.starts] == [first.id]
        assert "replay broke" in caplog.text
        third = queued.submit(_train("third"))
        reconcile(queued.engine, INVENTORY, DEFAULT, now=101.0, forecasting=forecasting)
        assert queued.get(third.id).status == "pending" and queued.get(second.id).forecast_start is None
        # Once REFRESH_SECONDS passed the next round asks again, and the one after uses that forecast.
        reconcile(queued.engine, INVENTORY, DEFAULT, now=100.0 + REFRESH_SECONDS, forecasting=forecasting)
        assert forecasting.wait(SAFETY)
        reconcile(queued.engine, INVENTORY, DEFAULT, now=101.0 + REFRESH_SECONDS, forecasting=forecasting)
        assert queued.get(second.id).forecast_start == 3700.0
    finally:
        forecasting.close()


def test_the_round_may_change_its_snapshot_while_the_copy_a_forecast_reads_stays_as_it_was() -> None:
    snapshot = Snapshot(CLUSTERS, build_initial_nodes(CLUSTERS))
    running = JobSpec(name="r", queue="a", command="x", resources={"gpus": 4}).to_workload("r", submit=0.0)
    [start] = schedule(snapshot, [running], DEFAULT, now=0.0).starts
    snapshot.allocate(Allocation(running, start.cluster, start.flavor, start.placements, 0.0))
    snapshot.commit()
    copy = detached_copy(snapshot)
    snapshot.release("r")
    snapshot.set_node_up(start.placements[0].node, False)
    node = copy.nodes[start.placements[0].node]
    assert set(copy.running) == {"r"} and node.up and node.whole_free_gpus == 4


def test_the_loop_forecasts_after_its_round_uses_it_in_the_next_and_stops_the_thread(
    queued: JobStore,
) -> None:
    lab = Inventory(CLUSTERS[:1])  # the loop's clock is the wall's: far past any burst threshold
    metrics = ControlPlaneMetrics(queued.engine, lab.clusters)
    loop = ReconcileLoop(
        queued.engine, lab, DEFAULT, interval=3600.0, metrics=metrics, replay=replay_first_starts
    )
    queued.submit(_train("first"))
    second = queued.submit(_train("second"))
    loop.start()
    try:
        loop.poke()
        # The first round asked for a forecast; once the round ended, the thread made it.
        assert _eventually(
            lambda: "corral_forecast_seconds_count 1.0" in generate_latest(metrics.registry).decode()
        )
        assert any(thread.name == "corral-forecast" for thread in threading.enumerate())
        loop.poke()
        assert _eventually(lambda: queued.get(second.id).forecast_start is not None)
    finally:
        loop.stop()
    assert not any(thread.name == "corral-forecast" for thread in threading.enumerate())


def _eventually(condition: Callable[[], bool]) -> bool:
    """Whether ``condition`` holds within ``SAFETY`` seconds (the other thread's progress, not a speed)."""
    tick = threading.Event()
    for _ in range(int(SAFETY * 100)):
        if condition():
            return True
        tick.wait(0.01)
    return condition()
