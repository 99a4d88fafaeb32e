"""A pipeline across two agents' machines: a step's outputs, made on one, reach the step that needs them
on the other, through the server and the agents' node tokens; another agent may not fetch them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import admin_client, free_port, start_server, stop

from corral.client import APIError, Client


def _agent(node: str, model: str, port: int, folder: Path, token: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "corral",
        "agent",
        "--node",
        node,
        "--server",
        f"http://127.0.0.1:{port}",
    ]
    command += ["--data-dir", str(folder / node), "--interval", "0.2", "--gpus", "1", "--gpu-model", model]
    with open(folder / f"{node}.log", "ab") as log:
        env = os.environ | {"CORRAL_TOKEN": token}
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Client, Path, dict[str, str]]]:
    """A server without a local backend and two agents: m-t4 has one T4, m-l4 one L4."""
    port = free_port()
    server = start_server(tmp_path, port, cluster=None, extra=["--no-local"])
    agents: list[subprocess.Popen[bytes]] = []
    tokens: dict[str, str] = {}
    try:
        with admin_client(tmp_path, port) as client:
            for node, model in (("m-t4", "T4"), ("m-l4", "L4")):
                tokens[node] = client.create_user(f"agent-{node}", "default", "agent", node=node).token
                agents.append(_agent(node, model, port, tmp_path, tokens[node]))
            deadline = time.monotonic() + 30
            while len(client.nodes()) < 2:
                assert time.monotonic() < deadline, "the agents did not register"
                time.sleep(0.1)
            yield client, tmp_path, tokens | {"port": str(port)}
    finally:
        for process in [*agents, server]:
            stop(process)


def test_outputs_made_on_one_agent_reach_a_step_on_another(lab) -> None:
    client, folder, tokens = lab
    spec = {
        "type": "pipeline",
        "name": "two-machines",
        "steps": {
            "make": {
                "resources": {"gpus": "T4:1"},
                "command": "mkdir -p out && echo made on $(hostname) GPU $CUDA_VISIBLE_DEVICES > out/note.txt",
                "outputs": {"note": "out"},
            },
            "read": {
                "needs": ["make"],
                "resources": {"gpus": "L4:1"},
                "inputs": {"note": "make.note"},
                "command": "cat out/note.txt",
            },
        },
    }
    run = client.run_pipeline(spec)
    deadline = time.monotonic() + 60
    while run.status == "running":
        assert time.monotonic() < deadline, run
        time.sleep(0.1)
        run = client.pipeline(run.id)
    assert run.status == "succeeded", run
    make, read = run.steps
    assert list(folder.glob(f"m-t4/runs/{make.job_id}"))  # made on the T4 machine
    assert list(folder.glob(f"m-l4/runs/{read.job_id}"))  # the other machine
    assert client.logs(read.job_id).startswith("made on ")
    assert (
        folder / "m-l4" / "runs" / read.job_id / "attempt-1" / "pod-0" / "work" / "out" / "note.txt"
    ).is_file()

    # Only the agent of the node a pod runs on may fetch what it mounts, and only while it runs.
    digest = make.outputs["note"]
    with Client(f"http://127.0.0.1:{tokens['port']}", token=tokens["m-t4"]) as other:
        with pytest.raises(APIError) as refused:
            other.pod_mount(read.job_id, 1, 0, digest)
        assert refused.value.status == 409  # the job ended: its attempt is over
