"""Malformed and adversarial scenario files get a clear one-line error from `corral sim` (exit 2, the
file, the line and the field), never a traceback, a crash reported as a bug, or a replay that hangs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from corral.cli.main import app
from corral.scenario.io import load_cluster_file, write_cluster_file

runner = CliRunner()

NODE = "{cpu: 64, memory_gib: 512, gpus: 8, gpu_model: A100}"
POOLS = f"clusters: [{{name: lab, pools: [{{name: dgx, flavor: a100, count: 2, node: {NODE}}}]}}]\n"
GOOD_JOB = '{"id": "j", "queue": "a", "duration": 100, "gpus_per_pod": 1}'
GOOD_CLUSTER = POOLS + "queues: [{name: a, quota: {a100: 8}}]\n"


def _sim(tmp_path: Path, cluster: str, workload: str, failures: str | None = None) -> tuple[int, str]:
    (tmp_path / "c.yaml").write_text(cluster)
    (tmp_path / "w.jsonl").write_text(workload + "\n")
    args = ["sim", str(tmp_path / "c.yaml"), str(tmp_path / "w.jsonl"), "-q"]
    if failures is not None:
        (tmp_path / "f.jsonl").write_text(failures + "\n")
        args += ["--failures", str(tmp_path / "f.jsonl")]
    result = runner.invoke(app, args)
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        (
            POOLS + "queues: [{name: a, quota: {a100: -8}}]",
            "queues[0].quota.a100: Input should be greater than or equal to 0",
        ),
        (
            POOLS + "queues: [{name: a, quota: {a100: .inf}}]",
            "queues[0].quota.a100: Input should be a finite number",
        ),
        (
            POOLS + "queues: [{name: a, quota: {a100: .nan}}]",
            "queues[0].quota.a100: Input should be a finite number",
        ),
        (
            POOLS + "queues: [{name: a, quota: {a100: 1e308}}]",
            "queues[0].quota.a100: Input should be less than or equal to 1000000",
        ),
        (
            POOLS + "queues: [{name: a, quota: {a100: 0}, borrowing_limit: {a100: -4}}]",
            "queues[0].borrowing_limit.a100: Input should be greater than or equal to 0",
        ),
        (
            f"clusters: [{{name: lab, pools: [{{name: dgx, flavor: a100, count: 100000000, node: {NODE}}}]}}]",
            "clusters[0].pools[0].count: Input should be less than or equal to 100000",
        ),
        (
            "clusters: [{name: lab, pools: [{name: dgx, flavor: a100, count: 1, "
            "node: {cpu: .inf, memory_gib: 512, gpus: 8, gpu_model: A100}}]}]",
            "clusters[0].pools[0].node.cpu: Input should be a finite number",
        ),
    ],
)
def test_bad_cluster_numbers_are_named(tmp_path: Path, cluster: str, expected: str) -> None:
    code, output = _sim(tmp_path, cluster, GOOD_JOB)
    assert code == 2, output
    assert expected in output
    assert "Traceback" not in output and "bug in corral" not in output


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        ('{"id": "j", "duration": Infinity, "gpus_per_pod": 1}', "duration: Input should be a finite number"),
        ('{"id": "j", "submit": Infinity, "duration": 9}', "submit: Input should be a finite number"),
        ('{"id": "j", "duration": 9, "deadline": NaN}', "deadline: Input should be a finite number"),
        ('{"id": "j", "duration": 9, "memory_gib": Infinity}', "memory_gib: Input should be a finite number"),
    ],
)
def test_infinite_job_numbers_are_named(tmp_path: Path, job: str, expected: str) -> None:
    code, output = _sim(tmp_path, GOOD_CLUSTER, job)
    assert code == 2, output
    assert f"w.jsonl:1: {expected}" in output


def test_infinite_failure_time_is_named(tmp_path: Path) -> None:
    code, output = _sim(
        tmp_path, GOOD_CLUSTER, GOOD_JOB, '{"t": Infinity, "event": "node_down", "node": "dgx-0"}'
    )
    assert code == 2, output
    assert "f.jsonl:1: t: Input should be a finite number" in output


def test_queue_without_quota_survives_a_written_cluster_file(tmp_path: Path) -> None:
    """A queue with ``quota: null`` may use any idle GPU; written and read back it must not become a
    queue with no quota at all, whose every job is rejected."""
    path = tmp_path / "c.yaml"
    path.write_text(POOLS + "queues: [{name: a, quota: null}, {name: b, quota: {a100: 4}}]\n")
    original = load_cluster_file(path)
    write_cluster_file(tmp_path / "again.yaml", original)
    assert load_cluster_file(tmp_path / "again.yaml") == original


HOSTILE_NUMBERS = st.sampled_from(
    [
        "-1",
        "0",
        "-0.0",
        "1e-300",
        "1e308",
        "1e400",
        "Infinity",
        "-Infinity",
        "NaN",
        "99999999999999999999",
        '"7"',
        "null",
        "true",
        "[]",
    ]
)
JOB_FIELDS = (
    "submit",
    "duration",
    "pods",
    "min_pods",
    "gpus_per_pod",
    "gpu_milli",
    "gpu_memory_gib",
    "cpu",
    "memory_gib",
    "priority",
    "deadline",
    "checkpoint_seconds",
    "time_limit",
)
CLUSTER_FIELDS = (
    "count",
    "max_count",
    "cpu",
    "memory_gib",
    "gpus",
    "gpu_memory_gib",
    "gpu_hour_cost",
    "provision_seconds",
    "quota",
    "borrowing_limit",
    "weight",
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    job_field=st.sampled_from(JOB_FIELDS),
    cluster_field=st.sampled_from(CLUSTER_FIELDS),
    value=HOSTILE_NUMBERS,
    where=st.sampled_from(["job", "cluster"]),
)
def test_any_hostile_number_anywhere_is_a_clean_error_or_a_clean_replay(
    tmp_path: Path, job_field: str, cluster_field: str, value: str, where: str
) -> None:
    """One field of a valid scenario set to a hostile number (JSON's Infinity and NaN, 1e400, huge integers,
    negatives, wrong types): `corral sim` replays it or refuses it in one line (exit 2), never crashes."""
    job = {"id": "j", "queue": "a", "duration": 100, "pods": 1, "gpus_per_pod": 1}
    cluster = {
        "count": "2",
        "max_count": "2",
        "cpu": "64",
        "memory_gib": "512",
        "gpus": "8",
        "gpu_memory_gib": "80",
        "gpu_hour_cost": "0",
        "provision_seconds": "0",
        "quota": "8",
        "borrowing_limit": "4",
        "weight": "1",
    }
    job_text = '{"id": "j", "queue": "a", "duration": 100, "pods": 1, "gpus_per_pod": 1}'
    if where == "job":
        job.pop(job_field, None)
        job_text = (
            "{"
            + ", ".join([f'"{k}": {json.dumps(v)}' for k, v in job.items()] + [f'"{job_field}": {value}'])
            + "}"
        )
    else:
        cluster[cluster_field] = {
            "Infinity": ".inf",
            "-Infinity": "-.inf",
            "NaN": ".nan",
            "1e400": "1e400",
        }.get(value, value)
    c = cluster
    text = (
        f"clusters: [{{name: lab, pools: [{{name: dgx, flavor: a100, count: {c['count']}, max_count: {c['max_count']}, "
        f"gpu_hour_cost: {c['gpu_hour_cost']}, provision_seconds: {c['provision_seconds']}, node: {{cpu: {c['cpu']}, "
        f"memory_gib: {c['memory_gib']}, gpus: {c['gpus']}, gpu_model: A100, gpu_memory_gib: {c['gpu_memory_gib']}}}}}]}}]\n"
        f"queues: [{{name: a, cohort: c, quota: {{a100: {c['quota']}}}, borrowing_limit: {{a100: {c['borrowing_limit']}}}, "
        f"weight: {c['weight']}}}, {{name: b, cohort: c, quota: {{a100: 8}}}}]\n"
    )
    code, output = _sim(tmp_path, text, job_text)
    assert code in (0, 2), output
    assert "Traceback" not in output and "bug in corral" not in output
    if code == 2:
        assert output.startswith("error: ") and output.count("\n") == 1, output
