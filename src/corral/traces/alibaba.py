"""The Alibaba GPU trace ``cluster-trace-gpu-v2023`` ("openb", FGD paper, USENIX ATC'23) as a corral scenario.

The readers (``read_nodes``, ``read_pods``) only convert units (milli-cores to cores, MiB to GiB; GPU share
stays milli-GPU per GPU) and check the trace's own rules, so the FGD fragmentation benchmark can reuse them
on every file, including the timestamp-free ``multigpu*`` ones. ``import_openb`` adds the decisions a
replay in time needs:

- Cluster: ``openb_node_list_gpu_node.csv`` only (1213 nodes, 6212 GPUs), as in the FGD experiments; the 310
  CPU-only nodes of ``openb_node_list_all_node.csv`` are left out. Nodes of one shape share a pool, so the
  trace's node names (``sn``) are not kept. GPU memory per model is public for P100, T4, V100 and A10; G1, G2
  and G3 are undisclosed and get 32 GiB, a guess that only shows in reports because no pod of this trace
  requests GPU memory.
- Jobs: submitted at their creation time (shifted so the file's earliest pod is at 0), running from
  scheduled to deletion time, the span the pod held its resources in production. Failed pods are kept (1870
  in the default file): they held resources until deleted. Pods alive when the trace was cut have their
  deletion time at its end (12,902,960 s), so their duration is censored.
- Skipped rows, counted by reason in ``ImportResult.skipped``:
  ``never_scheduled``: no scheduled time; Pending pods deleted before they were placed (897 in the default
  file). Deletion minus creation is time spent waiting, not running, so any duration would invent load.
  ``missing_time``: no creation or deletion time (none in the published files).
  ``non_positive_duration``: deleted at or before being scheduled (none).
  ``fits_no_node``: no node shape can hold the pod (none in the default file; gpuspec10/25/33 hold 2/1/1
  synthetic 120-core pods constrained to G2, whose nodes have 96 cores).
  The default file's 8152 rows give 7255 jobs and 897 skips.
- All pools share one quota flavor, ``openb``: the trace has no quotas, and one flavor lets the scheduler
  weigh every node against every other, as the production scheduler did; GPU models stay apart through
  ``gpu_model``. (A flavor per model would make a job try the models one by one in name order.)
- ``gpu_spec`` becomes ``gpu_model`` ("A|B" is corral's any-of extension); gpuspec files sometimes repeat a
  model ("V100M16|V100M32|V100M32"), which is written once.
- ``multigpu*`` files have no timestamps, so they cannot be replayed in time and importing one raises.
- Tenants (``tenants=True``, ``corral trace import --tenants``): the trace names no team, but its ``qos``
  column splits the pods into four service classes (LS 4647 rows, BE 3398, Burstable 100, Guaranteed 7).
  Each class becomes a queue (``ls``, ``be``, ``burstable``, ``guaranteed``; pods without a class go to
  ``default``) in one cohort, ``openb``, with nominal quota in proportion to the class's share of the
  trace's GPU-time, so idle quota is lent and reclaimed as between teams. Without it every pod goes to
  one queue, ``default``, without quota.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from corral.core.cluster import ClusterSpec, NodeTemplate, PoolSpec
from corral.core.queues import QueueSpec
from corral.core.units import MILLI_PER_GPU
from corral.core.workloads import Workload
from corral.errors import CorralError, SpecError
from corral.scenario.io import write_cluster_file, write_workload
from corral.scenario.models import ClusterFile

TRACE_FLAVOR = "openb"
TENANT_COHORT = "openb"

GPU_NODE_FILE = "openb_node_list_gpu_node.csv"
POD_FILE_PREFIX = "openb_pod_list_"
CLUSTER_NAME = "openb"

NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
TIME_COLUMNS = ("creation_time", "deletion_time", "scheduled_time")

GPU_MEMORY_GIB: dict[str, float] = {
    "P100": 16.0,
    "T4": 16.0,
    "V100M16": 16.0,
    "V100M32": 32.0,
    "A10": 24.0,
    "G1": 32.0,
    "G2": 32.0,
    "G3": 32.0,
}

SKIP_REASONS = ("never_scheduled", "missing_time", "non_positive_duration", "fits_no_node")


@dataclass(frozen=True, slots=True)
class TraceNode:
    """One machine of the trace; ``model`` is None for CPU-only nodes."""

    name: str
    cpu: float
    memory_gib: float
    gpus: int
    model: str | None


@dataclass(frozen=True, slots=True)
class TracePod:
    """One pod of the trace; times are None where the row or the file does not have them.

    ``gpu_milli`` is per GPU: 0 for CPU-only pods, 1000 for whole GPUs, a share for GPU-sharing pods.
    """

    name: str
    cpu: float
    memory_gib: float
    num_gpu: int
    gpu_milli: int
    gpu_spec: str | None
    creation: float | None
    deletion: float | None
    scheduled: float | None
    phase: str | None
    qos: str | None


@dataclass(frozen=True)
class ImportResult:
    """Where the scenario went and what it holds; ``skipped`` has every reason, zero or not."""

    cluster_path: Path
    workload_path: Path
    nodes: int
    gpus: int
    jobs: int
    skipped: dict[str, int]


def find_csv_dir(trace_dir: Path) -> Path:
    """The folder holding the CSVs, so users may name the trace folder or its ``csv/`` folder."""
    for candidate in (trace_dir / "csv", trace_dir):
        if (candidate / GPU_NODE_FILE).is_file():
            return candidate
    raise CorralError(
        f"{trace_dir}: no {GPU_NODE_FILE} here or in {trace_dir / 'csv'}; point at the "
        "cluster-trace-gpu-v2023 folder of alibaba/clusterdata or at its csv/ folder"
    )


def read_nodes(path: Path) -> list[TraceNode]:
    """Nodes of an ``openb_node_list_*.csv`` file, in file order."""
    nodes = []
    for line, row in _rows(path, NODE_COLUMNS):
        try:
            gpus = int(row["gpu"])
            node = TraceNode(
                name=row["sn"],
                cpu=int(row["cpu_milli"]) / 1000,
                memory_gib=int(row["memory_mib"]) / 1024,
                gpus=gpus,
                model=_optional_text(row["model"]),
            )
        except ValueError as exc:
            raise SpecError(f"not a number: {exc}", path=str(path), line=line) from None
        if gpus < 0 or (gpus > 0) != (node.model is not None):
            raise SpecError(
                f"gpu={gpus} with model={row['model']!r}: GPU nodes need a model, CPU-only nodes none",
                path=str(path),
                line=line,
            )
        nodes.append(node)
    return nodes


def read_pods(path: Path) -> list[TracePod]:
    """Pods of an ``openb_pod_list_*.csv`` file, in file order; 5-column files give no times, spec, phase."""
    pods = []
    for line, row in _rows(path, POD_COLUMNS):
        try:
            num_gpu = int(row["num_gpu"])
            gpu_milli = int(row["gpu_milli"])
            pod = TracePod(
                name=row["name"],
                cpu=int(row["cpu_milli"]) / 1000,
                memory_gib=int(row["memory_mib"]) / 1024,
                num_gpu=num_gpu,
                gpu_milli=gpu_milli,
                gpu_spec=_optional_text(row.get("gpu_spec")),
                creation=_optional_time(row.get("creation_time")),
                deletion=_optional_time(row.get("deletion_time")),
                scheduled=_optional_time(row.get("scheduled_time")),
                phase=_optional_text(row.get("pod_phase")),
                qos=_optional_text(row.get("qos")),
            )
        except ValueError as exc:
            raise SpecError(f"not a number: {exc}", path=str(path), line=line) from None
        if not _consistent_gpu_request(num_gpu, gpu_milli):
            raise SpecError(
                f"num_gpu={num_gpu} with gpu_milli={gpu_milli}: the trace uses gpu_milli 0 for CPU-only "
                "pods, 1..1000 for one GPU and 1000 for several",
                path=str(path),
                line=line,
            )
        pods.append(pod)
    return pods


def import_openb(
    trace_dir: Path, out_dir: Path, *, variant: str = "default", tenants: bool = False
) -> ImportResult:
    """Write ``cluster.yaml`` and ``workload.jsonl`` for one pod-list variant; same input, same bytes.
    With ``tenants``, a queue per ``qos`` class, with quota, in one cohort (see the module's notes)."""
    csv_dir = find_csv_dir(trace_dir)
    pod_path = csv_dir / f"{POD_FILE_PREFIX}{variant}.csv"
    if not pod_path.is_file():
        known = sorted(p.stem.removeprefix(POD_FILE_PREFIX) for p in csv_dir.glob(f"{POD_FILE_PREFIX}*.csv"))
        raise CorralError(f"no variant {variant!r}: no {pod_path}; variants here: {', '.join(known)}")
    columns = _header(pod_path)
    missing_times = [c for c in TIME_COLUMNS if c not in columns]
    if missing_times:
        raise CorralError(
            f"{pod_path.name} has no {', '.join(missing_times)} columns, so its pods cannot be replayed in "
            "time (the multigpu* files only list requests); pick a variant with timestamps, e.g. default"
        )

    nodes = read_nodes(csv_dir / GPU_NODE_FILE)
    pools = _pools(nodes)
    jobs, skipped = _jobs(read_pods(pod_path), nodes, tenants=tenants)
    cluster = ClusterFile(
        clusters=[ClusterSpec(name=CLUSTER_NAME, private=True, pools=pools)],
        queues=qos_queues(jobs, sum(p.count * p.node.gpus for p in pools)) if tenants else None,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    cluster_path = out_dir / "cluster.yaml"
    workload_path = out_dir / "workload.jsonl"
    write_cluster_file(cluster_path, cluster)
    write_workload(workload_path, jobs)
    return ImportResult(
        cluster_path=cluster_path,
        workload_path=workload_path,
        nodes=len(nodes),
        gpus=sum(n.gpus for n in nodes),
        jobs=len(jobs),
        skipped=skipped,
    )


def _pools(nodes: list[TraceNode]) -> list[PoolSpec]:
    """One pool per node shape, named model-gpus-cores, with memory added only where that is ambiguous."""
    counts: dict[tuple[str, int, float, float], int] = {}
    for node in nodes:
        key = (node.model or "", node.gpus, node.cpu, node.memory_gib)
        counts[key] = counts.get(key, 0) + 1
    shapes = sorted(counts)
    bases = [f"{_slug(model or 'cpu')}-{gpus}x-{_name_number(cpu)}c" for model, gpus, cpu, _ in shapes]
    pools = []
    for base, shape in zip(bases, shapes, strict=True):
        model, gpus, cpu, memory_gib = shape
        name = base if bases.count(base) == 1 else f"{base}-{_name_number(memory_gib)}g"
        pools.append(
            PoolSpec(
                name=name,
                flavor=TRACE_FLAVOR,
                tier="silver",
                gpu_hour_cost=0.0,
                count=counts[shape],
                node=node_template(
                    TraceNode(name=name, cpu=cpu, memory_gib=memory_gib, gpus=gpus, model=model)
                ),
            )
        )
    return pools


def qos_queues(jobs: list[Workload], gpus: int) -> list[QueueSpec]:
    """A queue per class in cohort ``openb``, nominal GPUs in proportion to the class's GPU-time."""
    demand: dict[str, float] = {}
    for job in jobs:
        demand[job.queue] = demand.get(job.queue, 0.0) + job.gpu_demand_milli * job.duration
    total = sum(demand.values()) or 1.0
    return [
        QueueSpec(name=name, cohort=TENANT_COHORT, quota={TRACE_FLAVOR: round(gpus * share / total, 3)})
        for name, share in sorted(demand.items())
    ]


def _queue(pod: TracePod) -> str:
    return pod.qos.lower() if pod.qos else "default"


def _jobs(
    pods: list[TracePod], nodes: list[TraceNode], *, tenants: bool = False
) -> tuple[list[Workload], dict[str, int]]:
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    shapes = {(n.model, n.gpus, n.cpu, n.memory_gib) for n in nodes}
    start = min((p.creation for p in pods if p.creation is not None), default=0.0)
    seen: set[str] = set()
    jobs = []
    for pod in sorted(pods, key=lambda p: p.creation if p.creation is not None else 0.0):
        if pod.name in seen:
            raise CorralError(f"pod name {pod.name!r} appears twice; job ids must be unique")
        seen.add(pod.name)
        reason = _skip_reason(pod, shapes)
        if reason:
            skipped[reason] += 1
            continue
        assert pod.creation is not None and pod.scheduled is not None and pod.deletion is not None
        job = pod_workload(pod, pod.name, submit=pod.creation - start, duration=pod.deletion - pod.scheduled)
        jobs.append(job.model_copy(update={"queue": _queue(pod)}) if tenants else job)
    return jobs, skipped


def pod_workload(pod: TracePod, job_id: str, *, submit: float = 0.0, duration: float = 1.0) -> Workload:
    """The one-pod job a trace pod asks for (a repeated model in ``gpu_spec`` is written once)."""
    return Workload(
        id=job_id,
        queue="default",
        submit=submit,
        duration=duration,
        pods=1,
        gpus_per_pod=pod.num_gpu,
        gpu_milli=pod.gpu_milli,
        cpu=pod.cpu,
        memory_gib=pod.memory_gib,
        gpu_model="|".join(dict.fromkeys(pod.gpu_spec.split("|"))) if pod.gpu_spec else None,
    )


def node_template(node: TraceNode) -> NodeTemplate:
    """The shape of a trace node as a pool template."""
    return NodeTemplate(
        cpu=node.cpu,
        memory_gib=node.memory_gib,
        gpus=node.gpus,
        gpu_model=node.model or None,
        gpu_memory_gib=_gpu_memory_gib(node.model) if node.gpus and node.model else 0.0,
    )


def _skip_reason(pod: TracePod, shapes: set[tuple[str | None, int, float, float]]) -> str | None:
    if pod.scheduled is None:
        return "never_scheduled"
    if pod.creation is None or pod.deletion is None:
        return "missing_time"
    if pod.deletion <= pod.scheduled:
        return "non_positive_duration"
    allowed = set(pod.gpu_spec.split("|")) if pod.gpu_spec else None
    for model, gpus, cpu, memory_gib in shapes:
        if (
            pod.cpu <= cpu
            and pod.memory_gib <= memory_gib
            and pod.num_gpu <= gpus
            and (allowed is None or model in allowed)
        ):
            return None
    return "fits_no_node"


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows with their line numbers, after checking the header names every ``required`` column."""
    if not path.is_file():
        raise SpecError("file not found", path=str(path))
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise SpecError(f"header lacks column(s) {', '.join(missing)}", path=str(path), line=1)
        for row in reader:
            yield reader.line_num, row


def _header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle), [])


def _optional_text(value: str | None) -> str | None:
    """Empty cells and pandas' ``nan`` both mean "not given" in this trace."""
    if value is None:
        return None
    value = value.strip()
    return None if value == "" or value.lower() == "nan" else value


def _optional_time(value: str | None) -> float | None:
    text = _optional_text(value)
    return None if text is None else float(text)


def _consistent_gpu_request(num_gpu: int, gpu_milli: int) -> bool:
    if num_gpu == 0:
        return gpu_milli == 0
    if num_gpu == 1:
        return 0 < gpu_milli <= MILLI_PER_GPU
    return num_gpu > 1 and gpu_milli == MILLI_PER_GPU


def _gpu_memory_gib(model: str) -> float:
    try:
        return GPU_MEMORY_GIB[model]
    except KeyError:
        raise CorralError(
            f"GPU model {model!r} is not in the openb model table ({', '.join(GPU_MEMORY_GIB)}); "
            "add its memory to GPU_MEMORY_GIB in corral.traces.alibaba"
        ) from None


def _slug(text: str) -> str:
    """Lowercase ``[a-z0-9-]``, as pool names and flavors are written."""
    return "".join(c if c.isascii() and c.isalnum() else "-" for c in text.lower()).strip("-")


def _name_number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value).replace(".", "p")
