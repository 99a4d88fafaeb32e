"""Pipelines on a real `corral up` (local backend): outputs reach the steps that need them, a rerun is all
cache hits and runs no job, a changed parameter reruns exactly what is downstream of it and says so, a
failing step stops its dependents, cancel stops running steps, bad specs are 422s naming the field, and
another tenant's runs are 404s. One server for the module; each test runs pipelines of shell steps."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import free_port, stop

from corral.client import APIError, Client
from corral.paths import read_token
from corral.pipelines.status import PipelineRun
from corral.server.process import start


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Path, int]]:
    data = Path(tempfile.mkdtemp(prefix="corral-pipelines-"))  # pods pass through it: not pytest's folder
    port = free_port()
    process = start(
        ["up", "--gpus", "2", "--data-dir", str(data), "--port", str(port)], data / "up.log", port
    )
    try:
        yield data, port
    finally:
        stop(process)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def client(server: tuple[Path, int]) -> Iterator[Client]:
    data, port = server
    with Client(f"http://127.0.0.1:{port}", token=read_token(data)) as admin:
        yield admin


def wait_for_end(client: Client, run: PipelineRun, timeout: float = 30.0) -> PipelineRun:
    deadline = time.monotonic() + timeout
    while run.status == "running":
        assert time.monotonic() < deadline, f"{run.id} still runs: {run.steps}"
        time.sleep(0.1)
        run = client.pipeline(run.id)
    return run


def chain(name: str, greeting: str = "hello") -> dict[str, Any]:
    """make -> shout (uses param greeting) -> count: each step reads its input and writes an output."""
    return {
        "type": "pipeline",
        "name": name,
        "params": {"greeting": greeting, "unused": 1},
        "steps": {
            "make": {
                "command": f"mkdir -p data && echo words > data/words.txt  # {name}",  # no hits across tests
                "outputs": {"data": "data"},
            },
            "shout": {
                "needs": ["make"],
                "inputs": {"data": "make.data"},
                "command": "echo ${{ params.greeting }} $(cat data/words.txt) > loud.txt",
                "outputs": {"loud": "loud.txt"},
            },
            "count": {
                "needs": ["shout"],
                "inputs": {"loud": {"from": "shout", "output": "loud", "path": "in"}},
                "command": "wc -w < in/loud.txt > count.txt; cat in/loud.txt",
                "outputs": {"count": "count.txt"},
            },
        },
    }


def steps(run: PipelineRun) -> dict[str, Any]:
    return {step.name: step for step in run.steps}


def test_outputs_reach_the_steps_that_need_them_and_a_rerun_is_all_cache_hits(client: Client) -> None:
    first = wait_for_end(client, client.run_pipeline(chain("words")))
    assert first.status == "succeeded", first
    assert [s.cached for s in first.steps] == [False, False, False]
    assert (
        client.logs(steps(first)["count"].job_id) == "hello words\n"
    )  # make's file reached shout, its count
    jobs = len(client.jobs(limit=1000))

    again = wait_for_end(client, client.run_pipeline(chain("words")))

    assert again.status == "succeeded"
    assert [(s.status, s.cached) for s in again.steps] == [("succeeded", True)] * 3
    assert all(s.reason.startswith(f"cache hit: outputs of {s.name} in run {first.id}") for s in again.steps)
    assert [s.outputs for s in again.steps] == [s.outputs for s in first.steps]
    assert len(client.jobs(limit=1000)) == jobs  # no job ran


def test_a_changed_parameter_reruns_exactly_the_steps_downstream_of_it_and_says_why(client: Client) -> None:
    first = wait_for_end(client, client.run_pipeline(chain("params")))
    changed = wait_for_end(client, client.run_pipeline(chain("params"), {"greeting": "bye"}))

    by_name = steps(changed)
    assert changed.status == "succeeded"
    assert by_name["make"].cached  # it names no parameter
    assert not by_name["shout"].cached
    assert (
        by_name["shout"].reason == f"cache miss: param greeting changed hello -> bye (against run {first.id})"
    )
    assert not by_name["count"].cached
    assert "input loud from shout changed" in by_name["count"].reason
    assert client.logs(by_name["count"].job_id) == "bye words\n"
    unused = wait_for_end(client, client.run_pipeline(chain("params"), {"greeting": "bye", "unused": "2"}))
    assert all(s.cached for s in unused.steps)  # no step names it


def test_matrix_instances_each_run_and_a_step_needing_them_gets_all_their_outputs(client: Client) -> None:
    spec = {
        "type": "pipeline",
        "name": "sweep",
        "steps": {
            "train": {
                "matrix": {"lr": [0.1, 0.01]},
                "command": "echo lr=${{ matrix.lr }} step=$CORRAL_PIPELINE_STEP > score.txt",
                "env": {"CORRAL_PIPELINE_STEP": "mine"},
                "outputs": {"score": "score.txt"},
            },
            "best": {
                "needs": ["train"],
                "inputs": {"scores": "train.score"},
                "command": "cat lr=0.1/score.txt lr=0.01/score.txt; echo run $CORRAL_PIPELINE_RUN",
            },
        },
    }
    run = wait_for_end(client, client.run_pipeline(spec))
    assert run.status == "succeeded", run
    assert [s.name for s in run.steps] == ["train[lr=0.1]", "train[lr=0.01]", "best"]
    assert client.logs(steps(run)["best"].job_id) == (
        f"lr=0.1 step=train[lr=0.1]\nlr=0.01 step=train[lr=0.01]\nrun {run.id}\n"
    )


def test_a_failing_step_stops_its_dependents_and_the_run_names_it(client: Client) -> None:
    spec = chain("failing")
    spec["steps"]["shout"]["command"] = "echo oops; exit 3"
    spec["steps"]["side"] = {"needs": ["make"], "command": "true"}

    run = wait_for_end(client, client.run_pipeline(spec))

    assert run.status == "failed"
    assert run.reason.startswith("step shout failed: job ") and "pod 0 exited with code 3" in run.reason
    by_name = steps(run)
    assert (by_name["count"].status, by_name["count"].job_id) == ("upstream_failed", None)
    assert by_name["count"].reason == "shout did not succeed (failed)"
    assert by_name["side"].status == "succeeded"  # not downstream of the failure


def test_a_declared_output_not_written_fails_the_step_with_the_path(client: Client) -> None:
    spec = chain("missing")
    spec["steps"]["make"]["command"] = "true"
    run = wait_for_end(client, client.run_pipeline(spec))
    assert run.status == "failed"
    assert "declared output data (data) was not stored" in steps(run)["make"].reason
    assert "corral: output data was not stored: data was not written" in client.logs(
        steps(run)["make"].job_id
    )


def test_cancel_stops_running_steps_and_starts_no_more(client: Client) -> None:
    spec = chain("cancelled")
    spec["steps"]["make"]["command"] = "sleep 60"
    run = client.run_pipeline(spec)
    deadline = time.monotonic() + 20
    while steps(run)["make"].status != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
        run = client.pipeline(run.id)

    cancelled = client.cancel_pipeline(run.id)

    assert cancelled.status == "cancelled"
    assert [s.status for s in cancelled.steps] == ["cancelled"] * 3
    assert client.job(steps(cancelled)["make"].job_id).status == "cancelled"
    with pytest.raises(APIError) as again:
        client.cancel_pipeline(run.id)
    assert again.value.status == 409


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"make": {"needs": ["count"]}}, "steps.make.needs: a cycle: make -> count -> shout -> make"),
        ({"shout": {"needs": ["nope"]}}, "steps.shout.needs: no step 'nope'"),
        ({"make": {"matrix": {"lr": []}}}, "matrix lr: give at least one value"),
        ({"shout": {"command": "echo ${{ params.nope }}"}}, "steps.shout: ${{ params.nope }} names no param"),
        (
            {"count": {"inputs": {"x": "make.data"}}},
            "steps.count.inputs.x: 'make' is not in this step's needs",
        ),
    ],
    ids=["cycle", "unknown-need", "empty-matrix", "unknown-param", "input-not-needed"],
)
def test_bad_specs_are_422_naming_the_field(client: Client, change: dict[str, Any], expected: str) -> None:
    spec = chain("bad")
    for step, fields in change.items():
        spec["steps"][step] |= fields
    with pytest.raises(APIError) as refused:
        client.run_pipeline(spec)
    assert refused.value.status == 422
    assert expected in refused.value.detail


def test_an_undeclared_param_is_422(client: Client) -> None:
    with pytest.raises(APIError) as refused:
        client.run_pipeline(chain("bad"), {"nope": "1"})
    assert (refused.value.status, refused.value.detail) == (
        422,
        "params: nope not declared by pipeline bad (it has: greeting, unused)",
    )


def test_a_member_sees_only_their_tenant_s_runs(client: Client, server: tuple[Path, int]) -> None:
    _, port = server
    client.create_tenant("other")
    token = client.create_user("outsider", "other", "member").token
    run = client.run_pipeline(chain("private"))
    with Client(f"http://127.0.0.1:{port}", token=token) as outsider:
        for call in (outsider.pipeline, outsider.cancel_pipeline):
            with pytest.raises(APIError) as hidden:
                call(run.id)
            assert hidden.value.status == 404
        assert run.id not in {r.id for r in outsider.pipelines()}
        digest = steps(wait_for_end(client, run))["make"].outputs["data"]
        with pytest.raises(APIError) as refused:  # nor may its jobs mount what another tenant's made
            outsider.submit({"name": "peek", "command": "ls", "mounts": [{"digest": digest}]})
        assert refused.value.status == 422
        assert refused.value.detail == f"mounts: tenant other has no stored output {digest}"


def test_a_run_goes_on_after_the_server_is_killed_9(tmp_path: Path) -> None:
    """Everything is in the store: a server killed -9 while a step runs finishes the run after a restart."""
    data = Path(tempfile.mkdtemp(prefix="corral-pipelines-restart-"))
    port = free_port()
    arguments = ["up", "--gpus", "0", "--data-dir", str(data), "--port", str(port)]
    process = start(arguments, data / "up.log", port)
    try:
        with Client(f"http://127.0.0.1:{port}", token=read_token(data)) as admin:
            spec = chain("restart")
            spec["steps"]["make"]["command"] = "sleep 1; " + spec["steps"]["make"]["command"]
            run = admin.run_pipeline(spec)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            process = start(arguments, data / "up.log", port)
            finished = wait_for_end(admin, admin.pipeline(run.id))
            assert finished.status == "succeeded", finished
            assert admin.logs(steps(finished)["count"].job_id) == "hello words\n"
    finally:
        stop(process)
        shutil.rmtree(data, ignore_errors=True)


def test_a_step_waiting_for_gpus_says_what_corral_why_says(client: Client) -> None:
    blocker = client.submit({"name": "blocker", "command": "sleep 60", "resources": {"gpus": 2}})
    spec = {
        "type": "pipeline",
        "name": "waits",
        "steps": {"gpu": {"command": "true", "resources": {"gpus": 1}}},
    }
    run = client.run_pipeline(spec)
    try:
        deadline = time.monotonic() + 20
        while not (steps(run)["gpu"].status == "pending" and steps(run)["gpu"].reason):
            assert time.monotonic() < deadline, run
            time.sleep(0.1)
            run = client.pipeline(run.id)
        step = steps(run)["gpu"]
        assert step.reason == client.why(step.job_id).reason
        assert "GPU" in step.reason
    finally:
        client.cancel_pipeline(run.id)
        client.cancel(blocker.id)


def test_the_cli_runs_a_spec_file_shipping_its_workdir_and_prints_json(
    client: Client, server: tuple[Path, int], tmp_path: Path
) -> None:
    data, port = server
    (tmp_path / "hello.sh").write_text("echo hello from $CORRAL_PIPELINE_STEP > greeting.txt\n")
    (tmp_path / "pipeline.yaml").write_text(
        "type: pipeline\nname: cli\nsteps:\n"
        "  hello:\n    workdir: .\n    command: sh hello.sh\n    outputs: {greeting: greeting.txt}\n"
        "  show:\n    needs: [hello]\n    inputs: {greeting: hello.greeting}\n    command: cat greeting.txt\n"
    )
    env = os.environ | {"CORRAL_URL": f"http://127.0.0.1:{port}", "CORRAL_TOKEN": read_token(data) or ""}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "corral",
            "pipeline",
            "run",
            str(tmp_path / "pipeline.yaml"),
            "--wait",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert {"id", "status", "steps"} <= printed.keys() and printed["status"] == "succeeded"
    assert [{k: s[k] for k in ("name", "status", "cached")} for s in printed["steps"]] == [
        {"name": "hello", "status": "succeeded", "cached": False},
        {"name": "show", "status": "succeeded", "cached": False},
    ]
    assert all({"job_id", "reason"} <= step.keys() for step in printed["steps"])
    assert client.logs(printed["steps"][1]["job_id"]) == "hello from hello\n"
