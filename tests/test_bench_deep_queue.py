"""The deep-queue forecast benchmark: both replays run the same scenario and count forecasts apart."""

from __future__ import annotations

from corral.bench.deep_queue import build_deep_queue, forecast_overhead


def test_forecast_overhead_compares_the_same_replay_with_and_without_forecasts() -> None:
    scenario = build_deep_queue(jobs=120, batches=4, window_seconds=1800.0)
    assert {job.submit for job in scenario.workloads} <= {0.0, 150.0, 300.0, 450.0}
    result = forecast_overhead(scenario)
    off, on = result["off"], result["on"]
    assert isinstance(off, dict) and isinstance(on, dict)
    assert off["forecasts"] == 0 and off["forecast_seconds"] == 0.0
    assert on["forecasts"] > 0
    assert off["waiting_at_end"] > 0 and on["waiting_at_end"] > 0  # the window ends with the queue deep
    assert result["jobs"] == 120 and float(result["ratio"]) > 0  # type: ignore[arg-type]
