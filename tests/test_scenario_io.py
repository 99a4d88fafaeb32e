"""Bad scenario input gets an error that names the file, the line and the field, and says the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.errors import SpecError
from corral.scenario.io import load_cluster_file, load_workload, read_events, write_events, write_workload
from corral.scenario.models import Event

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo"

CLUSTER = """\
clusters:
  - name: lab
    pools:
      - name: dgx
        flavor: a100
        count: 2
        node:
          cpu: 64
          memory_gib: 512
          gpus: {gpus}
          gpu_model: A100
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_demo_scenario_loads() -> None:
    cluster = load_cluster_file(DEMO / "cluster.yaml")
    assert [c.name for c in cluster.clusters] == ["lab", "cloud"]
    assert len(load_workload(DEMO / "workload.jsonl")) == 40


def test_cluster_field_error_names_line_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.yaml", CLUSTER.format(gpus="eight"))
    with pytest.raises(SpecError) as info:
        load_cluster_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}:10:")
    assert "clusters[0].pools[0].node.gpus" in message
    assert "'eight'" in message


def test_cluster_missing_field_says_add_it(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.yaml", CLUSTER.format(gpus=8).replace("        flavor: a100\n", ""))
    with pytest.raises(SpecError, match=r"pools\[0\]\.flavor: field required: add it"):
        load_cluster_file(path)


def test_cluster_not_yaml(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.yaml", "clusters: [\n  - name: x\n  bad: : :\n")
    with pytest.raises(SpecError, match=r"c\.yaml:\d+: not valid YAML"):
        load_cluster_file(path)


def test_duplicate_pool_names_rejected(tmp_path: Path) -> None:
    text = CLUSTER.format(gpus=8) + CLUSTER.format(gpus=8).split("\n", 1)[1].replace(
        "name: lab", "name: lab2"
    )
    path = _write(tmp_path, "c.yaml", text)
    with pytest.raises(SpecError, match="pool name 'dgx' is used twice"):
        load_cluster_file(path)


def test_nvlink_group_outside_node_is_explained(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.yaml", CLUSTER.format(gpus=2) + "          nvlink_groups: [[0, 1, 2]]\n")
    with pytest.raises(SpecError, match="names GPU 2, but the node has GPUs 0..1"):
        load_cluster_file(path)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"id": "a", "duration": -1}', "duration: Input should be greater than 0"),
        ('{"id": "a", "duration": 10, "gpus_per_pod": 2, "gpu_milli": 500}', "needs gpus_per_pod: 1"),
        ('{"id": "a"}', "duration: field required: add it"),
        ('{"id": "a", "duration": 10, "pods": 2, "min_pods": 3}', "min_pods (3) must not exceed pods (2)"),
        ("not json", "not valid JSON"),
        ('{"a":' * 100_000 + "1" + "}" * 100_000, "nested too deeply"),
    ],
)
def test_workload_errors_name_line_and_field(tmp_path: Path, line: str, expected: str) -> None:
    good = json.dumps({"id": "ok", "duration": 5})
    path = _write(tmp_path, "w.jsonl", good + "\n\n" + line + "\n")
    with pytest.raises(SpecError) as info:
        load_workload(path)
    assert str(info.value).startswith(f"{path}:3: ")
    assert expected in str(info.value)


def test_duplicate_job_id_names_both_lines(tmp_path: Path) -> None:
    row = json.dumps({"id": "j", "duration": 5})
    path = _write(tmp_path, "w.jsonl", f"{row}\n{row}\n")
    with pytest.raises(SpecError, match=r"w\.jsonl:2: id: 'j' is already used on line 1"):
        load_workload(path)


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="file not found"):
        load_workload(tmp_path / "nope.jsonl")


def test_workload_and_events_round_trip(tmp_path: Path) -> None:
    jobs = load_workload(DEMO / "workload.jsonl")
    write_workload(tmp_path / "w.jsonl", jobs)
    assert load_workload(tmp_path / "w.jsonl") == jobs
    events = [Event(t=1.0, job="a", event="submitted"), Event(t=2.0, event="node_down", node="dgx-0")]
    write_events(tmp_path / "e.jsonl", events)
    assert list(read_events(tmp_path / "e.jsonl")) == events
    assert "placements" not in (tmp_path / "e.jsonl").read_text()
