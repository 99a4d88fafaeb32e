"""The cost lower bound: exact on instances small enough to reason about, and never above a real schedule."""

from __future__ import annotations

import math

import pytest
from builders import job, make_cluster, make_pool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.core.workloads import Workload
from corral.errors import CorralError
from corral.scenario.models import ClusterFile
from corral.scheduling import get_policy
from corral.sim.bound import cost_bound_curve, cost_lower_bound
from corral.sim.engine import Simulator

HOUR = 3600.0


def _cluster_file(private_gpus: int = 1, price: float = 3.0, provision: float = 0.0) -> ClusterFile:
    """A private pool of one node (free) and a cloud pool that starts empty and grows on demand."""
    onprem = make_cluster("onprem", [make_pool("dgx", "a100", count=1, gpus=private_gpus)], private=True)
    cloud = make_pool("cloud", "a100-cloud", count=0, max_count=3, gpus=8, cost=price)
    cloud = cloud.model_copy(update={"provision_seconds": provision})
    return ClusterFile(clusters=[onprem, make_cluster("cloud", [cloud], private=False)])


def test_without_deadlines_or_contention_nothing_needs_to_burst() -> None:
    jobs = [job(f"j{i}", gpus=2, submit=i * 100.0, duration=HOUR) for i in range(4)]
    bound = cost_lower_bound(_cluster_file(private_gpus=8), jobs, 0)
    assert bound.cost_usd == 0.0
    assert (bound.jobs, bound.status) == (4, "Optimal")


@pytest.mark.parametrize("integer", [False, True])
def test_two_jobs_one_gpu_one_deadline_each(integer: bool) -> None:
    jobs = [job("a", duration=HOUR, deadline=HOUR), job("b", duration=HOUR, deadline=HOUR)]
    no_miss, one_miss = cost_bound_curve(_cluster_file(), jobs, [0, 1], integer=integer)
    assert no_miss.cost_usd == pytest.approx(3.0)
    assert one_miss.cost_usd == pytest.approx(0.0)
    assert no_miss.integer is integer


def test_a_burst_that_waits_for_its_node_misses_the_deadline_anyway() -> None:
    jobs = [job("a", duration=HOUR, deadline=HOUR), job("b", duration=HOUR, deadline=HOUR)]
    bound = cost_lower_bound(_cluster_file(provision=60.0), jobs, 0)
    assert bound.cost_usd == math.inf
    assert bound.status == "Infeasible"


@pytest.mark.parametrize(("checkpoint", "cost"), [(60.0, 1.5), (None, 3.0)])
def test_only_a_checkpointed_job_may_move_to_the_cloud_halfway(checkpoint: float | None, cost: float) -> None:
    # b runs on private until a (private only) needs the GPU at half past; only with checkpoints can it
    # carry on in the cloud for the second half, else it runs there in full.
    jobs = [
        job("b", duration=HOUR, deadline=HOUR, checkpoint_seconds=checkpoint),
        job("a", submit=HOUR / 2, duration=HOUR / 2, deadline=HOUR, sensitive=True),
    ]
    relaxed, exact = (
        cost_lower_bound(_cluster_file(), jobs, 0, integer=integer) for integer in (False, True)
    )
    assert relaxed.cost_usd == pytest.approx(1.5)
    assert exact.cost_usd == pytest.approx(cost)


def test_sensitive_jobs_never_burst_so_a_miss_budget_too_small_is_infeasible() -> None:
    jobs = [
        job("a", duration=HOUR, deadline=HOUR, sensitive=True),
        job("b", duration=HOUR, deadline=HOUR, burstable=False),
    ]
    infeasible, feasible = cost_bound_curve(_cluster_file(), jobs, [0, 1], integer=True)
    assert (infeasible.cost_usd, infeasible.status) == (math.inf, "Infeasible")
    assert feasible.cost_usd == 0.0


def test_jobs_the_scheduler_rejects_are_left_out() -> None:
    jobs = [job("huge", gpus=2, duration=HOUR, deadline=HOUR, sensitive=True), job("ok", duration=HOUR)]
    bound = cost_lower_bound(_cluster_file(private_gpus=1), jobs, 0)
    assert (bound.jobs, bound.cost_usd) == (1, 0.0)
    nothing = cost_lower_bound(_cluster_file(private_gpus=1), jobs[:1], 0)
    assert (nothing.jobs, nothing.cost_usd, nothing.gap) == (0, 0.0, 0.0)


def test_a_negative_miss_budget_is_refused() -> None:
    with pytest.raises(CorralError, match="0 or more"):
        cost_lower_bound(_cluster_file(), [job("a")], -1)


def test_cold_start_makes_every_burst_wait_for_its_own_node() -> None:
    # c's deadline needs a cloud node at t=600, which only a node provisioned for an earlier job could be.
    jobs = [
        job("a", duration=HOUR, deadline=HOUR),
        job("b", duration=HOUR, deadline=2 * HOUR),
        job("c", submit=600.0, duration=HOUR, deadline=600.0 + HOUR),
    ]
    warm = cost_lower_bound(_cluster_file(provision=300.0), jobs, 0)
    cold = cost_lower_bound(_cluster_file(provision=300.0), jobs, 0, cold_start=True)
    assert warm.cost_usd == pytest.approx(3.0)
    assert cold.cost_usd == math.inf


@st.composite
def _instances(draw: st.DrawFn) -> tuple[ClusterFile, list[Workload]]:
    cluster_file = _cluster_file(
        private_gpus=draw(st.sampled_from([2, 4, 8])),
        price=draw(st.sampled_from([1.0, 3.0])),
        provision=draw(st.sampled_from([0.0, 120.0, 600.0])),
    )
    jobs = []
    for index in range(draw(st.integers(2, 8))):
        submit = float(draw(st.integers(0, 12)) * 300)
        duration = float(draw(st.integers(1, 12)) * 300)
        slack = draw(st.none() | st.sampled_from([0.9, 1.0, 1.5, 3.0]))
        share = draw(st.sampled_from([(1, 500), (1, 1000), (2, 1000), (4, 1000)]))
        jobs.append(
            job(
                f"j{index}",
                gpus=share[0],
                milli=share[1],
                submit=submit,
                duration=duration,
                deadline=None if slack is None else submit + duration * slack,
                sensitive=draw(st.booleans()) and draw(st.booleans()),
                checkpoint_seconds=draw(st.sampled_from([None, 300.0])),
            )
        )
    return cluster_file, jobs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instance=_instances())
def test_bound_never_exceeds_what_the_simulated_schedule_paid(
    instance: tuple[ClusterFile, list[Workload]],
) -> None:
    cluster_file, jobs = instance
    summary = Simulator(cluster_file, jobs, get_policy("default")).run().summary
    for integer in (False, True):
        bound = cost_lower_bound(
            cluster_file, jobs, summary.deadline_misses, slot_seconds=300.0, integer=integer
        )
        assert bound.cost_usd <= summary.cost_usd + 1e-6
