"""The federation benchmark end to end on a tiny hand-made trace: every rule replays every seed, the
bound and the forecast error are computed, and the command writes its JSON, table and plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders import job
from typer.testing import CliRunner

from corral.bench.federation import busy_weeks, peak_demand
from corral.cli.main import app

NODES = "sn,cpu_milli,memory_mib,gpu,model\nn-0,32000,131072,8,V100M32\n"


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    """A quiet first week (one job), then a busy day of 40 jobs of 1-4 GPUs arriving every 5 minutes."""
    rows = ["p-quiet,1000,1024,1,1000,,LS,Succeeded,0,600,0"]
    for i in range(40):
        submit = 7 * 86_400 + 300 * i
        gpus = 1 + i % 4
        runtime = 600 * (1 + i % 5) * (8 if i % 13 == 0 else 1)
        rows.append(f"p-{i},2000,4096,{gpus},1000,,LS,Succeeded,{submit},{submit + runtime},{submit}")
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "openb_node_list_gpu_node.csv").write_text(NODES)
    header = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,"
    (tmp_path / "csv" / "openb_pod_list_default.csv").write_text(
        header + "scheduled_time\n" + "\n".join(rows) + "\n"
    )
    return tmp_path


def test_the_comparison_runs_every_rule_on_every_seed_and_writes_table_and_plot(
    trace: Path, tmp_path: Path
) -> None:
    out, plot, table = tmp_path / "fed.json", tmp_path / "fed.png", tmp_path / "fed.md"
    arguments = ["bench", "federation", "--trace-dir", str(trace), "--out", str(out)]
    arguments += ["--plot", str(plot), "--table", str(table), "--seeds", "0,1", "--bound-jobs", "20"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["jobs"] == 40  # the quiet week before the first busy day is left out
    names = [row["policy"] for row in report["policies"]]
    assert names == ["never", "always", "wait 10 min", "wait 30 min", "wait 60 min", "corral"]
    assert all(len(rows) == len(names) for rows in report["runs"].values())
    never = next(row for row in report["policies"] if row["policy"] == "never")
    assert never["cost_usd"] == 0 and never["burst_jobs"] == 0
    assert all(row["bound_usd"] <= row["cost_usd"] + 1e-6 for row in report["bound"])
    assert report["eta"]["jobs"] > 0
    assert plot.stat().st_size > 0 and "| corral |" in table.read_text()


def test_peak_demand_counts_gpus_held_at_once_if_every_job_started_on_arrival() -> None:
    jobs = [job("a", gpus=2, duration=100), job("b", gpus=4, submit=50, duration=100), job("c", submit=100)]
    assert peak_demand(jobs) == 6.0  # a ends at 100 as c arrives: releases count first


def test_busy_weeks_start_at_the_first_busy_day() -> None:
    quiet = [job("early", submit=0.0)]
    busy = [job(f"j{i}", submit=3 * 86_400 + i) for i in range(25)]
    kept = busy_weeks(quiet + busy)
    assert [j.id for j in kept] == [j.id for j in busy] and kept[0].submit == 0.0
