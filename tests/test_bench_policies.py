"""The policy benchmark (issue 13) end to end on tiny generated scenarios: every policy replays every seed,
every figure is present and within its range, a replay that raises is recorded and not raised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.bench.contended import FAMILIES, MANY_TEAMS, TEAMS, generate
from corral.bench.policies import SUMMED, run_benchmark, scenarios, water_fill
from corral.cli.main import app
from corral.errors import CorralError
from corral.scheduling import get_policy
from corral.sim.engine import SimulationResult, Simulator


def test_the_command_runs_every_policy_on_every_scenario_and_seed(tmp_path: Path) -> None:
    out, plot, table = tmp_path / "p.json", tmp_path / "p.png", tmp_path / "p.md"
    arguments = ["bench", "policies", "--out", str(out), "--plot", str(plot), "--markdown", str(table)]
    arguments += ["--jobs", "40", "--seeds", "1,2", "--policies", "default,fifo"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    runs = report["runs"]
    assert {(r["scenario"], r["seed"], r["policy"]) for r in runs} == {
        (family, seed, policy) for family in FAMILIES for seed in (1, 2) for policy in ("default", "fifo")
    }
    for run in runs:
        assert run["error"] is None and run["jobs"] == 40
        assert 0 <= run["gpu_allocation"] <= 1 and 0 <= run["gpu_allocation_arrivals"] <= 1
        assert run["lost_gpu_hours"] >= 0 and 0 <= run["lost_pct"] <= 100
        assert 0 <= run["zero_length_runs"] <= run["preemptions"]
        assert 0 <= run["wait_p50"] <= run["wait_p95"] <= run["wait_p99"]
        assert run["jct_mean"] > 0 and run["makespan"] > 0 and run["scheduler_seconds"] >= 0
        teams = MANY_TEAMS if run["scenario"] == "tenants" else TEAMS
        assert {q["queue"] for q in run["queues"]} == {team.name for team in teams}
        assert sum(q["received"] for q in run["queues"]) == pytest.approx(1.0)
        assert sum(q["entitled"] for q in run["queues"]) <= 1.0 + 1e-9
        if run["policy"] == "fifo":
            assert run["preemptions"] == 0 and run["lost_gpu_hours"] == 0
    assert len(report["ratios"]) == len(FAMILIES) * 2  # default over fifo, per scenario and seed
    for row in report["medians"]:
        assert row["failed"] == 0 and all(row[metric] is not None for metric in SUMMED)
    assert plot.stat().st_size > 0 and "| mixed | default |" in table.read_text()


class _LivelockOnDefault(Simulator):
    def run(self) -> SimulationResult:
        if self.policy.name == "default":
            raise CorralError("t=5.0: preemptions did not settle after 1000 rounds")
        return super().run()


def test_a_replay_that_raises_is_a_failed_run_and_the_others_still_run() -> None:
    report = run_benchmark(
        scenarios(["mixed"], [1], 20, None), ["default", "fifo"], simulator=_LivelockOnDefault
    )
    failed, baseline = report["runs"]  # type: ignore[misc]
    assert failed["error"] == "CorralError: t=5.0: preemptions did not settle after 1000 rounds"
    assert failed["jct_mean"] is None and failed["wall_seconds"] >= 0
    assert baseline["error"] is None and baseline["finished"] == 20
    (ratio,) = report["ratios"]  # type: ignore[misc]
    assert ratio["policy"] == "default" and ratio["jct_mean"] is None and ratio["wait_p95"] is None
    default = next(row for row in report["medians"] if row["policy"] == "default")  # type: ignore[attr-defined]
    assert (
        default["failed"] == 1 and default["jct_mean"] is None and "did not settle" in default["errors"]["1"]
    )


def test_generated_scenarios_are_seeded_contended_and_never_ask_more_than_a_queue_can_hold() -> None:
    first, again, other = generate("gangs", 3, 300), generate("gangs", 3, 300), generate("gangs", 4, 300)
    assert first.workloads == again.workloads and first.workloads != other.workloads
    assert first.peak_offered_load > 1.0
    jobs = first.workloads
    assert any(job.pods > 1 for job in jobs) and any(job.priority > 0 for job in jobs)
    assert any(job.checkpoint_seconds for job in jobs) and any(not job.checkpoint_seconds for job in jobs)
    assert all(job.time_limit is not None and job.time_limit >= job.duration for job in jobs)
    replay = Simulator(first.cluster_file, jobs[:60], get_policy("fifo")).run()
    assert replay.summary.rejected == 0


def test_the_many_tenant_family_splits_the_cluster_among_ten_teams_and_rejects_no_gang() -> None:
    scenario = generate("tenants", 3, 400)
    queues = scenario.cluster_file.queues
    assert len(queues) == 10 and sum(queue.borrowing_limit is not None for queue in queues) == 5
    for flavor, gpus in (("ws", 64), ("dgx", 64)):
        assert sum(queue.quota.get(flavor, 0) for queue in queues) == gpus  # quotas add up to each pool
    jobs = scenario.workloads
    assert {job.queue for job in jobs} == {queue.name for queue in queues}
    assert any(job.pods > 1 and job.gpus_per_pod == 8 for job in jobs)
    replay = Simulator(scenario.cluster_file, jobs, get_policy("fifo")).run()
    assert replay.summary.rejected == 0 and replay.summary.finished == len(jobs)


def test_water_filling_gives_what_a_capped_queue_cannot_use_to_the_others() -> None:
    shares = water_fill(100.0, {"a": 1.0, "b": 1.0, "c": 2.0}, {"a": 10.0, "b": 100.0, "c": 100.0})
    assert shares == pytest.approx({"a": 10.0, "b": 30.0, "c": 60.0})
