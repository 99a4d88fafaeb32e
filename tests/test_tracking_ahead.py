"""Runs made ahead of a job's start (``JobTracking.make_ahead``): the job's pods get that run, tagged with
their nodes when they start; a job cancelled while it waits leaves no RUNNING run; and a run an earlier,
killed server (or writer) made but never recorded is adopted, never made a second time.

One MLflow store (SQLite, migrated once) and one writer process over it for the module; a fresh corral
store per test.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.backends.pods import DesiredPod
from corral.spec.job import parse_job_spec
from corral.store.database import open_store
from corral.store.jobs import JobStore

pytest.importorskip("mlflow")
pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning"
)  # MLflow's own, opening its stores in-process

from corral.mlops.stores import MlflowStores, mlflow_location, open_stores  # noqa: E402
from corral.mlops.tracking import JobTracking  # noqa: E402
from corral.mlops.writer_process import WriterProcess  # noqa: E402

KEY = b"k" * 32
SERVER = "http://127.0.0.1:1"


@pytest.fixture(scope="module")
def stores() -> Iterator[MlflowStores]:
    """MLflow's stores, as a server opens them (which sets its variables in this process: put back)."""
    from mlflow.server import constants

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    variables = (
        constants.BACKEND_STORE_URI_ENV_VAR,
        constants.ARTIFACTS_DESTINATION_ENV_VAR,
        constants.SERVE_ARTIFACTS_ENV_VAR,
    )
    previous = {name: os.environ.get(name) for name in variables}
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder)
        yield open_stores(mlflow_location(data, f"sqlite:///{data / 'corral.db'}"))
    for name, value in previous.items():
        os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


@pytest.fixture(scope="module")
def writer(stores: MlflowStores) -> Iterator[WriterProcess]:
    process = WriterProcess(stores.location.backend_uri)
    assert process.start(120)
    yield process
    process.close()


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[JobStore]:
    store = JobStore(open_store(f"sqlite:///{tmp_path / 'corral.db'}"))
    yield store
    store.engine.dispose()


def submit(jobs: JobStore, name: str = "train") -> str:
    spec = parse_job_spec(f"name: {name}\ncommand: 'true'\nresources: {{gpus: 1}}\n")
    return jobs.submit(spec, tenant="lab").id


def started_pod(jobs: JobStore, job_id: str, node: str = "n1") -> DesiredPod:
    """Pod 0 of the job's first attempt, placed on ``node``: what the local backend starts."""
    record = jobs.get(job_id)
    return DesiredPod(
        job_id=job_id,
        attempt=1,
        pod=0,
        node=node,
        gpus=(0,),
        gpu_milli=1000,
        gpu_memory_gib=0.0,
        cpu=1.0,
        memory_gib=1.0,
        spec=record.spec,
        tenant="lab",
    )


def runs_of(stores: MlflowStores, writer: WriterProcess, job_id: str) -> list[Any]:
    """The job's live runs, once the writer has done what it was sent (tags are sent without waiting)."""
    from mlflow.entities import ViewType

    writer.settle(30)
    experiment = stores.tracking.get_experiment_by_name("lab/default")
    return stores.tracking.search_runs(
        [experiment.experiment_id], f"tags.`corral.job_id` = '{job_id}'", ViewType.ACTIVE_ONLY
    )


def test_the_oldest_waiting_jobs_get_a_run_that_their_start_hands_out_with_its_nodes(
    jobs: JobStore, stores: MlflowStores, writer: WriterProcess
) -> None:
    first, second, third = submit(jobs), submit(jobs), submit(jobs)
    tracking = JobTracking(jobs.engine, writer, KEY, runs_ahead=2)
    assert tracking.make_ahead().result(30) == 2
    assert tracking.make_ahead().result(30) == 0  # the pool is full: nothing is made twice
    (ahead,) = runs_of(stores, writer, first)
    assert ahead.info.status == "RUNNING"
    assert ahead.data.tags["corral.attempt"] == "1" and ahead.data.tags["corral.tenant"] == "lab"
    assert "corral.node" not in ahead.data.tags  # not placed yet
    assert len(runs_of(stores, writer, second)) == 1 and runs_of(stores, writer, third) == []

    (pod,) = tracking.attach([started_pod(jobs, first)], SERVER)
    assert pod.tracking is not None
    assert pod.tracking["MLFLOW_RUN_ID"] == ahead.info.run_id
    assert pod.tracking["MLFLOW_EXPERIMENT_NAME"] == "default"
    (tagged,) = runs_of(stores, writer, first)
    assert tagged.data.tags["corral.node"] == "n1"

    (late,) = tracking.attach([started_pod(jobs, third, "n2")], SERVER)  # started before its run was made
    (made,) = runs_of(stores, writer, third)
    assert late.tracking is not None and late.tracking["MLFLOW_RUN_ID"] == made.info.run_id
    assert made.data.tags["corral.node"] == "n2" and made.data.tags["corral.job_id"] == third


def test_a_job_cancelled_while_it_waits_leaves_its_run_killed_not_running(
    jobs: JobStore, stores: MlflowStores, writer: WriterProcess
) -> None:
    job_id = submit(jobs)
    tracking = JobTracking(jobs.engine, writer, KEY, runs_ahead=4)
    assert tracking.make_ahead().result(30) == 1
    jobs.cancel(job_id)
    tracking.sweep()
    (run,) = runs_of(stores, writer, job_id)
    assert run.info.status == "KILLED"
    assert tracking.make_ahead().result(30) == 0  # an ended job gets no run again


def test_a_run_a_killed_server_made_but_never_recorded_is_adopted_not_made_again(
    jobs: JobStore, stores: MlflowStores, writer: WriterProcess
) -> None:
    job_id = submit(jobs)
    before = JobTracking(jobs.engine, writer, KEY, runs_ahead=1)
    assert before.make_ahead().result(30) == 1
    (orphan,) = runs_of(stores, writer, job_id)
    with jobs.engine.begin() as connection:  # the row a kill -9 kept it from writing
        connection.exec_driver_sql("DELETE FROM job_tracking")

    after = JobTracking(jobs.engine, writer, KEY, runs_ahead=1)  # the restarted server
    assert after.make_ahead().result(30) == 0  # adopted, none made
    (pod,) = after.attach([started_pod(jobs, job_id)], SERVER)
    (run,) = runs_of(stores, writer, job_id)  # still one run
    assert run.info.run_id == orphan.info.run_id
    assert pod.tracking is not None and pod.tracking["MLFLOW_RUN_ID"] == orphan.info.run_id


def test_a_start_while_its_run_is_being_made_ahead_waits_for_that_run_instead_of_making_another(
    jobs: JobStore, stores: MlflowStores, writer: WriterProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = submit(jobs)
    tracking = JobTracking(jobs.engine, writer, KEY, runs_ahead=1)
    make_runs = writer.make_runs
    inside, release = threading.Event(), threading.Event()
    made: list[str] = []

    def held(runs: Any) -> Any:
        inside.set()
        release.wait(30)
        answer = make_runs(runs)
        made.extend(run.run_id for run in answer.result(30))
        return answer

    monkeypatch.setattr(writer, "make_runs", held)
    ahead = threading.Thread(target=tracking.make_ahead)
    ahead.start()
    assert inside.wait(30)
    pods: list[DesiredPod] = []
    start = threading.Thread(target=lambda: pods.extend(tracking.attach([started_pod(jobs, job_id)], SERVER)))
    start.start()
    time.sleep(0.2)  # let the start find the run being made (it finds it recorded otherwise: the same)
    release.set()
    ahead.join(30)
    start.join(30)
    (run,) = runs_of(stores, writer, job_id)
    assert made == [run.info.run_id]  # one run made, by make_ahead
    assert pods[0].tracking is not None and pods[0].tracking["MLFLOW_RUN_ID"] == run.info.run_id
    assert run.data.tags["corral.node"] == "n1"
