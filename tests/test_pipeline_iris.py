"""The iris example (examples/pipelines/iris) on a real `corral up`: prepare, train for two values of C,
evaluate, register the best as iris@champion in corral's registry, through the MLflow tracking the
server gives every pod (its job token, its run); and the register step's clear exit where no tracking URI
is set."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest
from servers import free_port, stop

from corral.client import APIError, Client
from corral.paths import read_token
from corral.server.process import start
from corral.spec.pipeline import load_pipeline_spec

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pipelines" / "iris"


@pytest.mark.filterwarnings(
    "ignore::DeprecationWarning"
)  # MLflow's own use of SQLAlchemy, reading the registry
def test_the_iris_pipeline_registers_the_best_model_as_champion() -> None:
    pytest.importorskip("mlflow")
    data = Path(tempfile.mkdtemp(prefix="corral-iris-"))  # pods pass through it: not pytest's folder
    port = free_port()
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {"PATH": path, "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = start(
        ["up", "--gpus", "0", "--data-dir", str(data), "--port", str(port)], data / "up.log", port, env
    )
    try:
        with Client(f"http://127.0.0.1:{port}", token=read_token(data)) as client:
            _wait_for_tracking(client)
            spec = load_pipeline_spec(EXAMPLE / "pipeline.yaml")
            # Pods may run as another user, who may not read this interpreter's own folder (/root/...):
            # they are pointed at its packages instead.
            packages = {"PYTHONPATH": sysconfig.get_paths()["purelib"], "MLFLOW_DISABLE_TELEMETRY": "true"}
            steps = {
                name: client.ship_workdir(step, EXAMPLE).model_copy(update={"env": step.env | packages})
                for name, step in spec.steps.items()
            }
            run = client.run_pipeline(spec.model_copy(update={"steps": steps}))
            while run.status == "running":
                run = client.pipeline(run.id)
            assert run.status == "succeeded", (run, [client.logs(s.job_id) for s in run.steps if s.job_id])
            by_name = {step.name: step for step in run.steps}
            assert list(by_name) == ["prepare", "train[c=0.1]", "train[c=10.0]", "evaluate", "register"]
            register = by_name["register"]
            assert "as iris@champion" in client.logs(register.job_id)
            model = client.model("iris")
            assert model["aliases"] == {"champion": 1}
            lineage = model["versions"][0]["lineage"]
            assert lineage["job"] == register.job_id and lineage["pipeline_run"] == run.id
        work = data / "runs" / register.job_id / "attempt-1" / "pod-0" / "work"
        report = json.loads((work / "report.json").read_text())
        assert {s["instance"] for s in report["scores"]} == {"c=0.1", "c=10.0"}
        assert report["best"] == max(report["scores"], key=lambda s: (s["accuracy"], -s["c"]))
    finally:
        stop(server)
        shutil.rmtree(data, ignore_errors=True)


def test_the_register_step_says_what_is_missing_without_a_tracking_uri(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "register.py"), "--name", "iris"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "MLFLOW_TRACKING_URI is not set" in done.stderr


def _wait_for_tracking(client: Client, timeout: float = 120.0) -> None:
    """MLflow opens in the background as the server starts (docs/mlops.md): jobs started before it is
    open get no run, so the test waits for it, as the registry's 503 "starting" says to."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.models()
            return
        except APIError as error:
            assert error.status == 503 and time.monotonic() < deadline, error
            time.sleep(0.5)
