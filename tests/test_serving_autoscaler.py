"""The KPA and the rollout rules, driven by a fake clock: they are pure functions of samples and time."""

from __future__ import annotations

from corral.serving.autoscaler import Sample, ScalerState, decide, replicas_for
from corral.serving.rollout import (
    ReplicaView,
    RevisionHealth,
    choose_removals,
    rollout_step,
    split_replicas,
    traffic_split,
)
from corral.spec.service import Autoscaling, Replicas

KNATIVE = Autoscaling(target_concurrency=10)
BOUNDS = Replicas(min=0, max=20)


class FakeService:
    """Samples once a second at a given concurrency, and feeds the decision back as the replicas."""

    def __init__(self, config: Autoscaling = KNATIVE, bounds: Replicas = BOUNDS) -> None:
        self.now = 0.0
        self.samples: list[Sample] = []
        self.state = ScalerState(last_busy=0.0)
        self.replicas = 0
        self.config, self.bounds = config, bounds
        self.panicked = False

    def run(self, seconds: int, concurrency: float, held: int = 0) -> int:
        for _ in range(seconds):
            self.now += 1
            self.samples.append(Sample(self.now, concurrency))
            decision = decide(
                self.samples,
                self.now,
                ready=self.replicas,
                current=self.replicas,
                held=held,
                config=self.config,
                bounds=self.bounds,
                state=self.state,
            )
            self.state, self.replicas = decision.state, decision.replicas
            self.panicked |= decision.panicking
        return self.replicas


def test_knative_defaults() -> None:
    config = Autoscaling()
    assert (config.stable_window, config.panic_window, config.panic_threshold) == (60, 6, 2.0)
    assert config.idle_before_zero == 90  # the stable window plus 30 s grace
    assert Autoscaling(stable_window="10s").idle_before_zero == 40
    assert replicas_for(0, 10) == 0 and replicas_for(10, 10) == 1 and replicas_for(10.5, 10) == 2


def test_steady_load_settles_on_concurrency_over_target() -> None:
    service = FakeService()
    service.replicas = 3
    assert service.run(120, concurrency=30) == 3
    assert not service.panicked


def test_a_burst_panics_at_once_and_never_scales_down_while_panicking() -> None:
    service = FakeService()
    service.replicas = 1
    service.run(60, concurrency=5)
    assert service.run(1, concurrency=80) >= 2  # the first second of the burst already panics
    assert service.panicked
    assert service.run(5, concurrency=80) == 8  # the panic window has seen only the burst
    assert service.panicked
    burst = service.replicas
    assert service.run(30, concurrency=5) >= burst  # panic holds for a stable window
    assert service.run(120, concurrency=5) == 1  # then the stable window rules again


def test_idle_scales_to_zero_only_after_the_stable_window_and_grace() -> None:
    service = FakeService()
    service.replicas = 2
    service.run(10, concurrency=15)
    assert service.run(89, concurrency=0) == 1  # averaged down, but one is kept warm in the grace
    assert service.run(2, concurrency=0) == 0


def test_a_held_request_asks_for_a_replica_at_once() -> None:
    service = FakeService()
    service.run(200, concurrency=0)
    assert service.replicas == 0
    assert service.run(1, concurrency=1, held=1) == 1


def test_bounds_are_kept() -> None:
    service = FakeService(bounds=Replicas(min=1, max=3))
    assert service.run(100, concurrency=0) == 1
    assert service.run(100, concurrency=500) == 3


def test_rollout_promotes_a_ready_revision_without_canary_and_rolls_back_failures() -> None:
    stable = RevisionHealth(1, ready=2, failed=0, requests=100, errors=1, ready_since=0.0)
    fresh = RevisionHealth(2, ready=0, failed=0, requests=0, errors=0, ready_since=None)
    assert rollout_step(stable, fresh, 0, None, 10).verdict == "wait"
    ready = RevisionHealth(2, ready=1, failed=0, requests=0, errors=0, ready_since=5.0)
    assert rollout_step(stable, ready, 0, None, 10).verdict == "promote"
    broken = RevisionHealth(2, ready=0, failed=1, requests=0, errors=0, ready_since=None)
    assert rollout_step(stable, broken, 10, None, 10).verdict == "rollback"


def test_a_canary_waits_for_its_time_and_is_judged_by_its_error_rate() -> None:
    stable = RevisionHealth(1, ready=2, failed=0, requests=1000, errors=10, ready_since=0.0)
    canary = RevisionHealth(2, ready=1, failed=0, requests=50, errors=1, ready_since=100.0)
    assert rollout_step(stable, canary, 10, 300, 200).verdict == "wait"
    assert rollout_step(stable, canary, 10, 300, 400).verdict == "promote"
    assert rollout_step(stable, canary, 10, None, 10_000).verdict == "wait"  # by command only
    failing = RevisionHealth(2, ready=1, failed=0, requests=50, errors=20, ready_since=100.0)
    step = rollout_step(stable, failing, 10, 300, 400)
    assert step.verdict == "rollback" and "40%" in step.reason


def test_traffic_goes_where_replicas_are_ready() -> None:
    assert traffic_split(2, 1, 10) == (0.9, 0.1)
    assert traffic_split(2, 0, 10) == (1.0, 0.0)  # never held for a canary that is not ready
    assert traffic_split(0, 1, 10) == (0.0, 1.0)
    assert split_replicas(10, 10, True) == (9, 1)
    assert split_replicas(0, 10, True) == (0, 1)  # a canary must pass readiness even at zero
    assert split_replicas(4, 0, False) == (4, 0)


def test_scale_down_removes_waiting_replicas_first_and_the_oldest_waiting_one_last() -> None:
    replicas = [
        ReplicaView("ready-old", started=True, ready=True, created_at=1),
        ReplicaView("ready-new", started=True, ready=True, created_at=5),
        ReplicaView("waiting-old", started=False, ready=False, created_at=2),
        ReplicaView("waiting-new", started=False, ready=False, created_at=6),
        ReplicaView("starting", started=True, ready=False, created_at=3),
    ]
    assert choose_removals(replicas, 5) == []
    assert choose_removals(replicas, 3) == ["waiting-new", "waiting-old"]
    assert choose_removals(replicas, 1) == ["waiting-new", "waiting-old", "starting", "ready-new"]
    only_waiting = [r for r in replicas if not r.started]
    assert choose_removals(only_waiting, 1) == ["waiting-new"]  # the one a held request waits for stays
