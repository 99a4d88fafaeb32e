"""The `corral` command as a user runs it: reports, files written, errors without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.cli.main import app

REPO = Path(__file__).resolve().parents[1]
CLUSTER = str(REPO / "examples" / "demo" / "cluster.yaml")
WORKLOAD = str(REPO / "examples" / "demo" / "workload.jsonl")
FAILURES = str(REPO / "examples" / "demo" / "failures.jsonl")

runner = CliRunner()


def test_sim_writes_events_and_summary_that_check_clean(tmp_path: Path) -> None:
    events, summary = tmp_path / "out" / "events.jsonl", tmp_path / "out" / "summary.json"
    result = runner.invoke(
        app,
        [
            "sim",
            CLUSTER,
            WORKLOAD,
            "--failures",
            FAILURES,
            "--events",
            str(events),
            "--summary",
            str(summary),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Replay with policy default" in result.output
    data = json.loads(summary.read_text())
    for field in (
        "jobs",
        "finished",
        "rejected",
        "gpu_hours_used",
        "gpu_allocation",
        "makespan",
        "wait_p50",
        "wait_p95",
        "jct_mean",
        "jct_p95",
        "cost_usd",
        "deadline_misses",
        "scheduler_seconds",
        "policy",
    ):
        assert field in data
    assert data["jobs"] == 40 and data["finished"] == 40
    assert sorted(data["queues"]) == ["clinical", "nlp", "vision"]
    assert sum(q["jobs"] for q in data["queues"].values()) == 40
    assert sum(q["preemptions"] for q in data["queues"].values()) == data["preemptions"]
    assert "Per queue" in result.output
    assert any('"node_down"' in line for line in events.read_text().splitlines())
    checked = runner.invoke(app, ["check", CLUSTER, WORKLOAD, str(events)])
    assert checked.exit_code == 0, checked.output
    assert "no invariant is violated" in checked.output


def test_check_reports_first_violation(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    runner.invoke(app, ["sim", CLUSTER, WORKLOAD, "--events", str(events), "-q"])
    lines = events.read_text().splitlines()
    finished = next(i for i, line in enumerate(lines) if '"finished"' in line)
    record = json.loads(lines[finished])
    record["t"] += 1.0
    lines[finished] = json.dumps(record)
    events.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["check", CLUSTER, WORKLOAD, str(events)])
    assert result.exit_code == 1
    assert "invariant 4" in result.output


def test_check_accepts_the_head_of_a_replay_when_told_it_is_truncated(tmp_path: Path) -> None:
    events, head = tmp_path / "events.jsonl", tmp_path / "head.jsonl"
    runner.invoke(app, ["sim", CLUSTER, WORKLOAD, "--events", str(events), "-q"])
    head.write_text("".join(events.read_text().splitlines(keepends=True)[:60]))
    complete = runner.invoke(app, ["check", CLUSTER, WORKLOAD, str(head)])
    assert complete.exit_code == 1 and "invariant 6" in complete.output
    cut = runner.invoke(app, ["check", CLUSTER, WORKLOAD, str(head), "--truncated", "--work-conserving"])
    assert cut.exit_code == 0, cut.output
    assert "no invariant is violated" in cut.output
    assert " running, " in cut.output and " waiting" in cut.output


def test_check_work_conserving_flags_strict_fifo_head_of_line_blocking(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    runner.invoke(app, ["sim", CLUSTER, WORKLOAD, "--policy", "strict-fifo", "--events", str(events), "-q"])
    assert runner.invoke(app, ["check", CLUSTER, WORKLOAD, str(events)]).exit_code == 0
    result = runner.invoke(app, ["check", CLUSTER, WORKLOAD, str(events), "--work-conserving"])
    assert result.exit_code == 1
    assert "invariant 7 (work conserving)" in result.output


def test_every_policy_runs(tmp_path: Path) -> None:
    for policy in ("default", "strict-fifo", "spread", "fifo"):
        result = runner.invoke(
            app, ["sim", CLUSTER, WORKLOAD, "--policy", policy, "--fail", "dgx-0@600:1200"]
        )
        assert result.exit_code == 0, result.output
        assert f"policy {policy}" in result.output


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "w.jsonl"
    bad.write_text('{"id": "x", "duration": "long"}\n')
    result = runner.invoke(app, ["sim", CLUSTER, str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:1: duration" in result.output
    assert "Traceback" not in result.output


def test_unknown_policy_lists_choices() -> None:
    result = runner.invoke(app, ["sim", CLUSTER, WORKLOAD, "--policy", "magic"])
    assert result.exit_code == 2
    assert "unknown policy 'magic'; choose one of: default" in result.output


@pytest.mark.parametrize("spec", ["dgx-0", "dgx-0@1.2.3", "dgx-0@10:5"])
def test_bad_fail_flag_explains_format(spec: str) -> None:
    result = runner.invoke(app, ["sim", CLUSTER, WORKLOAD, "--fail", spec])
    assert result.exit_code == 2
    assert "--fail" in result.output and "Traceback" not in result.output


def test_unknown_node_in_failures_is_reported() -> None:
    result = runner.invoke(app, ["sim", CLUSTER, WORKLOAD, "--fail", "nope-3@10"])
    assert result.exit_code == 2
    assert "node 'nope-3': node names are {pool}-{i}" in result.output


def test_sim_lists_rejected_jobs_with_their_reasons(tmp_path: Path) -> None:
    workload = tmp_path / "workload.jsonl"
    lines = Path(WORKLOAD).read_text().splitlines()[:3]
    lines.append(json.dumps({"id": "stray", "queue": "nowhere", "submit": 1.0, "duration": 10.0}))
    workload.write_text("\n".join(lines) + "\n")
    summary = tmp_path / "summary.json"
    result = runner.invoke(app, ["sim", CLUSTER, str(workload), "--summary", str(summary)])
    assert result.exit_code == 0, result.output
    assert "1 (unknown_queue 1)" in result.output
    assert "Rejected (1)" in result.output and "stray" in result.output
    data = json.loads(summary.read_text())
    assert data["rejected_by_reason"] == {"unknown_queue": 1}
    assert data["rejected_jobs"][0]["job"] == "stray"
    assert "does not exist" in data["rejected_jobs"][0]["message"]


def test_a_server_that_does_not_answer_is_one_line_naming_the_url() -> None:
    from corral.server.process import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = runner.invoke(app, ["--url", url, "ls"])
    assert result.exit_code == 2, result.output
    assert f"cannot reach a corral server at {url}" in result.output and "CORRAL_URL" in result.output
    assert "Traceback" not in result.output


def test_the_url_corral_up_prints_and_the_bare_one_are_the_same_server() -> None:
    from corral.client import Client

    for url in ("http://127.0.0.1:8765/api/v1", "http://127.0.0.1:8765/api/v1/", "http://127.0.0.1:8765/"):
        assert Client(url, token="t").url == "http://127.0.0.1:8765"


def test_agent_follows_the_global_url_unless_it_names_its_own_server() -> None:
    from corral.cli.connection import Connection

    connection = Connection("http://10.0.0.5:8765/api/v1")
    assert connection.client().url == "http://10.0.0.5:8765"
    assert connection.client("http://10.0.0.6:9000", timeout=2.5).url == "http://10.0.0.6:9000"
    assert connection.client(timeout=2.5).timeout == 2.5


def test_error_text_is_printed_as_it_is_not_as_rich_markup(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    from corral.cli.render import print_error

    print_error(Console(file=None, force_terminal=False), "name: should match pattern '^[a-z0-9]+$'")
    assert "error: name: should match pattern '^[a-z0-9]+$'" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_a_cpu_count_no_machine_has_is_refused_before_anything_is_sent(value: str) -> None:
    result = runner.invoke(app, ["--url", "http://127.0.0.1:9", "run", "--cpu", value, "--", "true"])
    assert result.exit_code == 2 and "Invalid value for '--cpu'" in result.output
    assert not isinstance(result.exception, ValueError)


def test_folders_pods_cannot_pass_through_are_named_outermost_first(tmp_path: Path) -> None:
    from corral.paths import closed_parents

    outer, inner = tmp_path / "home", tmp_path / "home" / "clone"
    (inner / "out").mkdir(parents=True)
    tmp_path.chmod(0o711)
    outer.chmod(0o700)
    inner.chmod(0o750)
    assert [p for p in closed_parents(inner / "out") if p.is_relative_to(tmp_path) and p != tmp_path] == [
        outer,
        inner,
    ]
    outer.chmod(0o711)
    inner.chmod(0o755)
    assert not [p for p in closed_parents(inner / "out") if p.is_relative_to(tmp_path) and p != tmp_path]


def test_an_unexpected_error_is_one_line_unless_debug_is_asked_for(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from corral.cli import main as cli

    def broken() -> None:
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(cli, "app", broken)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "RuntimeError: the disk caught fire" in err and "--debug" in err and "Traceback" not in err
    monkeypatch.setattr(cli.connection, "debug", True)
    with pytest.raises(RuntimeError, match="caught fire"):
        cli.main()
