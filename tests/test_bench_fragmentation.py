"""The FGD experiment loop on a tiny hand-made trace: arrivals padded to 1.3x, curves at every mark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.bench.fragmentation import ARRIVED_MARKS, arrival_sequence, load_trace, run_seed
from corral.cli.main import app
from corral.scheduling import get_policy

NODES = "sn,cpu_milli,memory_mib,gpu,model\nn-0,32000,131072,2,T4\nn-1,32000,131072,2,T4\nn-2,64000,262144,4,V100M32\n"
PODS = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n"
    "p-0,4000,8192,1,500,,LS,Running,0,10,0\n"
    "p-1,4000,8192,1,1000,,LS,Running,0,10,0\n"
    "p-2,8000,8192,2,1000,,LS,Running,0,10,0\n"
    "p-3,2000,4096,0,0,,BE,Running,0,10,0\n"
)


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "openb_node_list_gpu_node.csv").write_text(NODES)
    (tmp_path / "csv" / "openb_pod_list_default.csv").write_text(PODS)
    return tmp_path


def test_arrivals_are_padded_to_1_3x_capacity_and_seeded(trace: Path) -> None:
    _, pods = load_trace(trace, "default")
    sequence = arrival_sequence(pods, capacity_gpus=8, seed=42)
    requested = sum(p.num_gpu * p.gpu_milli / 1000 for p in sequence)
    assert requested >= 1.3 * 8
    assert requested - max(p.num_gpu for p in pods) < 1.3 * 8
    assert sorted(p.name for p in sequence[: len(pods)]) == sorted(p.name for p in pods)
    assert sequence == arrival_sequence(pods, capacity_gpus=8, seed=42)


def test_curves_are_sampled_at_every_mark_and_consistent(trace: Path) -> None:
    nodes, pods = load_trace(trace, "default")
    result = run_seed(nodes, pods, get_policy("default"), seed=7)
    assert sorted(result.unallocated_pct) == list(ARRIVED_MARKS)
    for mark in ARRIVED_MARKS:
        assert 0 <= result.frag_amount_pct[mark] <= result.unallocated_pct[mark] + 1e-9
        assert 0 <= result.frag_rate_pct[mark] <= 100 + 1e-9
    assert result.unallocated_pct[130] <= result.unallocated_pct[90]


def test_bench_command_writes_the_report(trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "frag.json"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "fragmentation",
            "--trace-dir",
            str(trace),
            "--out",
            str(out),
            "--policies",
            "default,fifo",
            "--seeds",
            "1,2",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["variant"] == "default" and report["seeds"] == [1, 2]
    assert set(report["policies"]) == {"default", "fifo"}
    assert set(report["policies"]["default"]["unallocated_pct"]) == {str(m) for m in ARRIVED_MARKS}


def test_throughput_bench_replicates_the_node_mix_and_reports_placements(trace: Path, tmp_path: Path) -> None:
    """6 nodes in the trace's 2:1 mix of T4 and V100 nodes; 30 pending pods in one round."""
    from corral.bench.throughput import build_cluster

    cluster = build_cluster(trace, "openb", 6)
    assert sorted((p.node.gpu_model, p.count) for p in cluster.pools) == [("T4", 4), ("V100M32", 2)]
    out = tmp_path / "throughput.json"
    result = CliRunner().invoke(
        app,
        ["bench", "throughput", "--trace-dir", str(trace), "--out", str(out)]
        + ["--nodes", "6", "--pods", "30", "--policies", "fifo,fgd"],
    )
    assert result.exit_code == 0, result.output
    runs = json.loads(out.read_text())["runs"]["openb"]
    assert set(runs) == {"fifo", "fgd"}
    assert all(len(rows) == 1 and 0 < rows[0]["placed"] <= 30 for rows in runs.values())
    assert all(rows[0]["nodes"] == 6 and rows[0]["peak_rss_mib"] > 0 for rows in runs.values())


def test_hindsight_places_the_pods_up_to_full_capacity_biggest_first(trace: Path) -> None:
    from corral.bench.fragmentation import hindsight_sequence

    _, pods = load_trace(trace, "default")
    sequence = arrival_sequence(pods, capacity_gpus=8, seed=3)
    offline = hindsight_sequence(sequence, capacity_gpus=8)
    gpus = [p.num_gpu * p.gpu_milli / 1000 for p in offline]
    assert gpus == sorted(gpus, reverse=True)
    assert sum(gpus) >= 8 and sum(gpus) - max(gpus) < 8
    result = run_seed(*load_trace(trace, "default"), get_policy("default"), seed=3, hindsight=True)
    assert set(result.unallocated_pct) <= {90, 95, 100}
