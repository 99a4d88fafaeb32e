"""The Alibaba trace as the policy benchmark replays it: contended over its arrivals, no censored pod
lasting months, the same window and speed-up for the same seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.bench.contended import capacity_gpus
from corral.bench.contended_trace import (
    TRACE_MAX_RUN_HOURS,
    TRACE_OFFERED_LOAD,
    contended_trace,
    load_within_arrivals,
    trace_window,
)
from corral.bench.policies import TRACE, TRACE_TENANTS, replay, scenarios

TRACE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "alibaba-gpu-v2023"
if not (TRACE_DIR / "csv").is_dir():
    pytest.skip(f"Alibaba openb trace not found at {TRACE_DIR}", allow_module_level=True)

WINDOW = 1000
"""Fewer jobs than this cannot offer the load: a window of a few hundred arrivals holds too little work
for ~100 GPUs however fast it comes."""


@pytest.fixture(scope="module")
def trace_scenarios() -> list:
    return scenarios([], [7], WINDOW, TRACE_DIR)


def test_a_small_window_offers_the_chosen_load_over_its_arrivals_with_a_busy_peak(trace_scenarios) -> None:
    assert [s.name for s in trace_scenarios] == [TRACE, TRACE_TENANTS]
    for scenario in trace_scenarios:
        assert len(scenario.workloads) == WINDOW
        assert scenario.offered_load == pytest.approx(TRACE_OFFERED_LOAD, rel=0.01)
        assert 1.0 <= scenario.offered_load <= 1.5
        assert scenario.peak_offered_load > 1.5  # bursts: queues form, not a steady trickle
        assert scenario.speedup is not None and scenario.speedup > 1
        assert scenario.submitted_load is not None and scenario.submitted_load >= scenario.offered_load
        assert max(job.duration for job in scenario.workloads) <= TRACE_MAX_RUN_HOURS * 3600


def test_pods_still_running_at_the_cut_no_longer_last_months() -> None:
    cluster_file, workloads = contended_trace(TRACE_DIR, tenants=False)
    assert len(workloads) == 7255  # capped, not dropped
    assert max(job.duration for job in workloads) == TRACE_MAX_RUN_HOURS * 3600
    assert 60 <= capacity_gpus(cluster_file) <= 160


def test_the_same_seed_gives_the_same_window_and_speed_up() -> None:
    cluster_file, workloads = contended_trace(TRACE_DIR, tenants=False)
    capacity = capacity_gpus(cluster_file)
    first, speedup = trace_window(workloads, WINDOW, 7, capacity)
    again, same = trace_window(workloads, WINDOW, 7, capacity)
    assert speedup == same and [j.model_dump() for j in first] == [j.model_dump() for j in again]
    assert first[0].submit == 0
    assert load_within_arrivals(first, capacity) == pytest.approx(TRACE_OFFERED_LOAD, rel=0.01)


def test_jobs_wait_under_fifo_on_the_contended_window(trace_scenarios) -> None:
    run = replay(trace_scenarios[0], "fifo")
    assert run.error is None and run.finished == WINDOW
    assert run.wait_p95 > 0 and run.gpu_allocation_arrivals > run.gpu_allocation
