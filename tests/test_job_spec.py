"""Job specs: resources in the forms users write, compiled to the scheduler's Workload; errors that name
the line, the field and the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from corral.errors import SpecError
from corral.spec.job import GpuRequest, load_job_spec, parse_job_spec, parse_memory_gib, parse_seconds

FULL = """\
name: train-llama
queue: nlp
command: python train.py --epochs 3
env: {WANDB_MODE: offline}
pods: 2
resources:
  gpus: A100|H100:4
  cpu: 16
  memory: 256GiB
priority: 5
sensitive: true
deadline: 2026-12-01T18:00:00Z
checkpoint: {dir: /ckpt/run1, interval: 10m}
time_limit: 2h
"""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2, GpuRequest(count=2)),
        ("2", GpuRequest(count=2)),
        (0.5, GpuRequest(count=1, milli=500)),
        ("A100:2", GpuRequest(count=2, models=("A100",))),
        ("A100|H100:4", GpuRequest(count=4, models=("A100", "H100"))),
        ("T4", GpuRequest(count=1, models=("T4",))),
        ("A100:0.25", GpuRequest(count=1, milli=250, models=("A100",))),
        (None, GpuRequest()),
    ],
)
def test_gpu_forms(value: object, expected: GpuRequest) -> None:
    assert GpuRequest.parse(value) == expected


@pytest.mark.parametrize(
    ("value", "fix"),
    [
        (1.5, "ask for whole GPUs (2) or a share of one below 1"),
        ("A100:two", "or MODEL:COUNT (A100:2)"),
        (0, "leave gpus out for a CPU-only job"),
        (":2", "empty GPU model"),
    ],
)
def test_bad_gpu_requests_say_how_to_fix_them(value: object, fix: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fix)):
        GpuRequest.parse(value)


@pytest.mark.parametrize(
    ("value", "gib"),
    [(64, 64.0), ("64GiB", 64.0), ("64Gi", 64.0), ("512Mi", 0.5), ("1Ti", 1024.0), ("2GB", 2e9 / 2**30)],
)
def test_memory_sizes(value: object, gib: float) -> None:
    assert parse_memory_gib(value) == pytest.approx(gib)


@pytest.mark.parametrize(("value", "seconds"), [(90, 90.0), ("30s", 30.0), ("10m", 600.0), ("1h30m", 5400.0)])
def test_durations(value: object, seconds: float) -> None:
    assert parse_seconds(value) == seconds


def test_a_full_spec_compiles_to_the_schedulers_workload() -> None:
    spec = parse_job_spec(FULL)
    workload = spec.to_workload("j-1", submit=1000.0)
    assert (workload.pods, workload.gpus_per_pod, workload.gpu_milli) == (2, 4, 1000)
    assert workload.pod.models == frozenset({"A100", "H100"})
    assert (workload.cpu, workload.memory_gib, workload.priority, workload.sensitive) == (16, 256, 5, True)
    assert workload.checkpoint_seconds == 600 and workload.duration == 7200
    assert workload.deadline == 1796148000.0
    assert spec.env == {"WANDB_MODE": "offline"}


def test_a_share_with_gpu_memory() -> None:
    spec = parse_job_spec("name: nb\ncommand: jupyter lab\nresources: {gpus: 0.5, gpu_memory: 20GiB}\n")
    workload = spec.to_workload("j-2", submit=0.0)
    assert (workload.gpus_per_pod, workload.gpu_milli, workload.gpu_memory_gib) == (1, 500, 20.0)


def test_a_cpu_only_job_asks_no_gpu() -> None:
    workload = parse_job_spec("name: etl\ncommand: [python, etl.py]\n").to_workload("j-3", submit=0.0)
    assert (workload.gpus_per_pod, workload.gpu_milli, workload.pod.gpus) == (0, 0, 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "name: a\ncommand: x\nresources:\n  gpu: 2\n",
            "<job spec>:4: resources.gpu: unknown field: remove it",
        ),
        (
            "name: a\ncommand: x\nresources:\n  gpus: 1.5\n",
            "<job spec>:4: resources.gpus: 1.5 GPUs: ask for whole",
        ),
        ("name: a\n", "<job spec>:1: command: field required: add it"),
        ("name: Big Job\ncommand: x\n", "<job spec>:1: name: String should match pattern"),
        ("name: a\ncommand: x\npods: 0\n", "<job spec>:3: pods: Input should be greater than or equal to 1"),
        ("name: a\ncommand: x\nresources: {gpu_memory: 8GiB}\n", "gpu_memory is set but no gpus"),
        ("name: a\ncommand: x\ndeadline: 2026-12-01T18:00:00\n", "deadline needs a time zone"),
        ("name: a\ncommand: '  '\n", "command is empty"),
        ("- name: a\n", "expected a mapping with at least name and command"),
        ("name: [a\n", "not valid YAML"),
        ("name: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested too deeply"),
    ],
)
def test_bad_specs_name_the_line_the_field_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(SpecError) as error:
        parse_job_spec(text)
    assert message in str(error.value)


def test_load_job_spec_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: a\ncommand: x\nretries: -1\n")
    with pytest.raises(SpecError, match=r"job.yaml:3: retries"):
        load_job_spec(path)
    with pytest.raises(SpecError, match="file not found"):
        load_job_spec(tmp_path / "missing.yaml")


def test_a_spec_round_trips_through_its_stored_json() -> None:
    """The store keeps ``model_dump(mode="json")``; reading it back gives the same spec."""
    spec = parse_job_spec(FULL)
    assert type(spec).model_validate(spec.model_dump(mode="json")) == spec


@pytest.mark.parametrize("amount", ["inf", "Infinity", "nan", "-2", "1e3"])
def test_a_number_python_reads_but_corral_does_not_is_no_gpu_model(amount: str) -> None:
    """`gpus: inf` once became one GPU of a model named "inf", waiting forever for such a node."""
    with pytest.raises(SpecError, match="is not a GPU count: write a whole number"):
        parse_job_spec(f'name: j\ncommand: x\nresources: {{gpus: "{amount}"}}')
