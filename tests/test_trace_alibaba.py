"""The openb importer against the real trace: the counts the README documents must survive the import."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.core.workloads import Workload
from corral.errors import CorralError, SpecError
from corral.scenario.io import load_cluster_file, load_workload
from corral.traces.alibaba import ImportResult, find_csv_dir, import_openb, read_nodes, read_pods

TRACE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "alibaba-gpu-v2023"
if not (TRACE_DIR / "csv").is_dir():
    pytest.skip(f"Alibaba openb trace not found at {TRACE_DIR}", allow_module_level=True)

pytestmark = pytest.mark.trace
CSV_DIR = TRACE_DIR / "csv"


@pytest.fixture(scope="module")
def default_import(tmp_path_factory: pytest.TempPathFactory) -> ImportResult:
    return import_openb(TRACE_DIR, tmp_path_factory.mktemp("openb-default"))


@pytest.fixture(scope="module")
def default_jobs(default_import: ImportResult) -> dict[str, Workload]:
    return {job.id: job for job in load_workload(default_import.workload_path)}


def test_cluster_keeps_every_gpu_node(default_import: ImportResult) -> None:
    cluster_file = load_cluster_file(default_import.cluster_path)
    assert cluster_file.queues is None
    [cluster] = cluster_file.clusters
    assert cluster.name == "openb" and cluster.private
    assert sum(p.count for p in cluster.pools) == default_import.nodes == 1213
    assert sum(p.count * p.node.gpus for p in cluster.pools) == default_import.gpus == 6212
    pools = {p.name: p for p in cluster.pools}
    assert pools["g2-8x-96c"].count == 549
    assert pools["g2-8x-96c"].node.gpu_memory_gib == 32
    v100 = pools["v100m16-8x-82c"]
    assert (v100.flavor, v100.tier, v100.gpu_hour_cost) == ("openb", "silver", 0)
    assert v100.node.gpu_memory_gib == 16
    assert all(p.node.nvlink_groups is None for p in cluster.pools)


def test_jobs_and_skips_account_for_every_row(
    default_import: ImportResult, default_jobs: dict[str, Workload]
) -> None:
    rows = len((CSV_DIR / "openb_pod_list_default.csv").read_text().splitlines()) - 1
    assert default_import.skipped == {
        "never_scheduled": 897,
        "missing_time": 0,
        "non_positive_duration": 0,
        "fits_no_node": 0,
    }
    assert len(default_jobs) == default_import.jobs == 7255
    assert default_import.jobs + sum(default_import.skipped.values()) == rows == 8152
    submits = [job.submit for job in default_jobs.values()]
    assert submits[0] == 0 and submits == sorted(submits)
    assert "openb-pod-0061" not in default_jobs  # Pending, never scheduled


def test_pods_map_to_jobs(default_jobs: dict[str, Workload]) -> None:
    # openb-pod-0001,6000,12288,1,460,,LS,Running,427061,12902960,427061
    share = default_jobs["openb-pod-0001"]
    assert (share.gpus_per_pod, share.gpu_milli, share.cpu, share.memory_gib) == (1, 460, 6, 12)
    assert (share.submit, share.duration) == (427061, 12902960 - 427061)
    # openb-pod-0017,88000,327680,8,1000,,Burstable,Succeeded,9437497,10769854,9437497
    multi = default_jobs["openb-pod-0017"]
    assert (multi.pods, multi.gpus_per_pod, multi.gpu_milli) == (1, 8, 1000)
    assert (multi.cpu, multi.memory_gib) == (88, 320)
    assert multi.duration == 10769854 - 9437497
    # openb-pod-0005,20000,65536,0,0,,LS,Running,2759674,12902960,2759676
    cpu_only = default_jobs["openb-pod-0005"]
    assert (cpu_only.gpus_per_pod, cpu_only.gpu_milli, cpu_only.gpu_demand_milli) == (0, 0, 0)
    assert cpu_only.duration == 12902960 - 2759676
    assert (multi.queue, multi.priority, multi.sensitive, multi.burstable) == ("default", 0, False, True)
    assert multi.gpu_model is None and multi.deadline is None and multi.checkpoint_seconds is None


def test_import_is_deterministic(default_import: ImportResult, tmp_path: Path) -> None:
    again = import_openb(CSV_DIR, tmp_path)
    assert again.cluster_path.read_bytes() == default_import.cluster_path.read_bytes()
    assert again.workload_path.read_bytes() == default_import.workload_path.read_bytes()


def test_gpuspec_variant_writes_any_of_models(tmp_path: Path) -> None:
    result = import_openb(TRACE_DIR, tmp_path, variant="gpuspec33")
    jobs = {job.id: job for job in load_workload(result.workload_path)}
    assert jobs["openb-pod-0009"].gpu_model == "V100M16|V100M32"
    assert jobs["openb-pod-0598"].gpu_model == "V100M16|V100M32"  # the trace repeats V100M32
    assert jobs["openb-pod-0598"].allowed_models == frozenset({"V100M16", "V100M32"})
    assert result.skipped["fits_no_node"] == 1  # a 120-core pod constrained to 96-core G2 nodes


def test_multigpu_variant_cannot_be_replayed(tmp_path: Path) -> None:
    with pytest.raises(CorralError, match="cannot be replayed in time"):
        import_openb(TRACE_DIR, tmp_path, variant="multigpu20")


def test_unknown_variant_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(CorralError, match=r"variants here: .*gpuspec33"):
        import_openb(TRACE_DIR, tmp_path, variant="gpuspec99")


def test_read_pods_reads_five_column_files() -> None:
    pods = read_pods(CSV_DIR / "openb_pod_list_multigpu20.csv")
    assert len(pods) == 8324
    assert all(p.creation is None and p.gpu_spec is None and p.phase is None for p in pods)
    assert pods[1].num_gpu == 1 and pods[1].gpu_milli == 460
    assert any(p.num_gpu > 1 and p.gpu_milli == 1000 for p in pods)


def test_read_nodes_includes_cpu_only_nodes() -> None:
    nodes = read_nodes(CSV_DIR / "openb_node_list_all_node.csv")
    assert len(nodes) == 1523
    assert sum(1 for n in nodes if n.model is None and n.gpus == 0) == 310
    assert nodes[0].cpu == 32 and nodes[0].memory_gib == 256


def test_find_csv_dir_accepts_both_folders(tmp_path: Path) -> None:
    assert find_csv_dir(TRACE_DIR) == find_csv_dir(CSV_DIR) == CSV_DIR
    with pytest.raises(CorralError, match=r"openb_node_list_gpu_node\.csv"):
        find_csv_dir(tmp_path)


def test_read_pods_treats_nan_as_no_spec_and_rejects_inconsistent_rows(tmp_path: Path) -> None:
    header = (
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
        "creation_time,deletion_time,scheduled_time\n"
    )
    good = tmp_path / "good.csv"
    good.write_text(header + "p0,1000,1024,1,500,nan,BE,Pending,5,9,\n")
    [pod] = read_pods(good)
    assert (pod.gpu_spec, pod.scheduled, pod.deletion, pod.cpu, pod.memory_gib) == (None, None, 9, 1, 1)
    bad = tmp_path / "bad.csv"
    bad.write_text(header + "p0,1000,1024,1,500,,BE,Running,5,9,6\np1,1000,1024,2,500,,BE,Running,5,9,6\n")
    with pytest.raises(SpecError, match=r"bad.csv:3: num_gpu=2 with gpu_milli=500"):
        read_pods(bad)


def test_tenants_make_a_queue_per_qos_class_with_quota_in_proportion_to_its_gpu_time(tmp_path: Path) -> None:
    """LS and BE are the trace's big classes (4647 and 3398 rows); every queue lends in one cohort, and
    the quotas add up to the cluster's 6212 GPUs (to rounding)."""
    imported = import_openb(TRACE_DIR, tmp_path, tenants=True)
    cluster = load_cluster_file(imported.cluster_path)
    jobs = load_workload(imported.workload_path)
    queues = {q.name: q for q in cluster.queues or []}
    assert set(queues) == {"be", "burstable", "guaranteed", "ls"}
    assert {q.cohort for q in queues.values()} == {"openb"}
    assert sum(q.quota["openb"] for q in queues.values()) == pytest.approx(6212, abs=0.01)
    assert {job.queue for job in jobs} == set(queues)
    demand = {name: sum(j.gpu_demand_milli * j.duration for j in jobs if j.queue == name) for name in queues}
    ls, be = queues["ls"].quota["openb"], queues["be"].quota["openb"]
    assert ls / be == pytest.approx(demand["ls"] / demand["be"], rel=1e-3)
