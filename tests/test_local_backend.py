"""The local backend runs the pods the store says should run, each on its GPUs, and records how they end;
a restarted backend adopts pods that kept running instead of starting them twice."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from unittest.mock import patch

from builders import make_cluster, make_pool

from corral.backends.local import LocalBackend, desired_pods
from corral.backends.pods import DesiredPod
from corral.control.reconcile import Inventory, reconcile
from corral.scheduling import get_policy
from corral.spec.job import parse_job_spec
from corral.store.jobs import JobEnd, JobStore

INVENTORY = Inventory(clusters=[make_cluster("lab", [make_pool("n", flavor="gpu", count=2, gpus=2)])])
POLICY = get_policy("default")


def submit(store: JobStore, command: str, resources: str = "{gpus: 1, cpu: 1}", pods: int = 1) -> str:
    spec = parse_job_spec(f"name: job\ncommand: {command!r}\npods: {pods}\nresources: {resources}\n")
    return store.submit(spec).id


def run_until_ended(store: JobStore, backend: LocalBackend, job_id: str) -> str:
    for _ in range(200):
        reconcile(store.engine, INVENTORY, POLICY, now=time.time())
        backend.sync()
        status = store.get(job_id).status
        if status in ("finished", "failed", "cancelled"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"{job_id} still {store.get(job_id).status}")


def sync_until_stopped(backend: LocalBackend, pid: int) -> None:
    """Stopping does not wait for the processes: a later sync sees them gone (and reaps them)."""
    for _ in range(200):
        backend.sync()
        if not backend.runner.alive(pid):
            return
        time.sleep(0.05)
    raise AssertionError(f"pod {pid} still runs")


def test_pods_see_their_gpus_and_a_clean_exit_finishes_the_job(store: JobStore, tmp_path: Path) -> None:
    backend = LocalBackend(store, tmp_path)
    job = submit(store, "echo gpus=$CUDA_VISIBLE_DEVICES share=$CORRAL_GPU_FRACTION", "{gpus: 2, cpu: 1}")
    assert run_until_ended(store, backend, job) == "finished"
    assert backend.runner.files(job, 1, 0).log.read_text().strip() == "gpus=0,1 share=1"


def test_a_gang_spans_nodes_and_each_pod_sees_its_own_gpus(store: JobStore, tmp_path: Path) -> None:
    backend = LocalBackend(store, tmp_path)
    job = submit(store, "echo pod=$CORRAL_POD_INDEX gpus=$CUDA_VISIBLE_DEVICES", "{gpus: 2, cpu: 1}", pods=2)
    assert run_until_ended(store, backend, job) == "finished"
    logs = sorted(backend.runner.files(job, 1, pod).log.read_text().strip() for pod in (0, 1))
    assert logs == ["pod=0 gpus=0,1", "pod=1 gpus=0,1"]


def test_a_share_is_told_its_fraction(store: JobStore, tmp_path: Path) -> None:
    backend = LocalBackend(store, tmp_path)
    job = submit(store, "echo $CORRAL_GPU_FRACTION $CORRAL_GPU_MEMORY_GIB", "{gpus: 0.25, gpu_memory: 10GiB}")
    assert run_until_ended(store, backend, job) == "finished"
    assert backend.runner.files(job, 1, 0).log.read_text().strip() == "0.25 10"


def test_a_nonzero_exit_fails_the_job_with_the_code(store: JobStore, tmp_path: Path) -> None:
    job = submit(store, "exit 3")
    assert run_until_ended(store, LocalBackend(store, tmp_path), job) == "failed"
    assert store.get(job).reason == "pod 0 exited with code 3"


def test_cancel_stops_the_process(store: JobStore, tmp_path: Path) -> None:
    backend = LocalBackend(store, tmp_path)
    job = submit(store, "sleep 30")
    reconcile(store.engine, INVENTORY, POLICY, now=0.0)
    backend.sync()
    pid = int(backend.runner.files(job, 1, 0).pid.read_text())
    assert backend.runner.alive(pid)
    store.cancel(job)
    sync_until_stopped(backend, pid)


def test_a_restarted_backend_adopts_a_running_pod_instead_of_starting_it_again(
    store: JobStore, tmp_path: Path
) -> None:
    job = submit(store, "sleep 30")
    reconcile(store.engine, INVENTORY, POLICY, now=0.0)
    first = LocalBackend(store, tmp_path)
    first.sync()
    files = first.runner.files(job, 1, 0)
    pid = files.pid.read_text()
    restarted = LocalBackend(store, tmp_path)  # a new server process
    restarted.sync()
    assert files.pid.read_text() == pid and not restarted.runner._children
    store.cancel(job)
    sync_until_stopped(first, int(pid))


def test_a_pod_whose_process_vanished_fails_once_and_is_not_started_again(
    store: JobStore, tmp_path: Path
) -> None:
    """The pod and its wrapper were killed together (no exit code written): the job fails with 137
    instead of the pod quietly running a second time."""
    job = submit(store, "sleep 30")
    reconcile(store.engine, INVENTORY, POLICY, now=0.0)
    backend = LocalBackend(store, tmp_path)
    backend.sync()
    files = backend.runner.files(job, 1, 0)
    pid = int(files.pid.read_text())
    os.killpg(pid, signal.SIGKILL)
    backend.runner._children.pop(pid).wait(timeout=10)
    backend.sync()
    assert store.get(job).status == "failed" and store.get(job).reason == "pod 0 exited with code 137"
    assert int(files.pid.read_text()) == pid


def test_exits_found_in_one_look_are_recorded_together_and_the_next_round_hands_their_gpus_on(
    store: JobStore, tmp_path: Path
) -> None:
    backend = LocalBackend(store, tmp_path)
    first = [submit(store, "exit 0") for _ in range(3)] + [submit(store, "exit 3")]  # every GPU
    waiting = [submit(store, "sleep 30") for _ in range(4)]
    reconcile(store.engine, INVENTORY, POLICY, now=time.time())
    backend.sync()
    for _ in range(200):  # until every pod of the first four has exited (none is recorded yet)
        if all(backend.runner.exit_code(pod) is not None for pod in desired_pods(store)):
            break
        time.sleep(0.05)
    assert {store.get(job).status for job in first} == {"running"}
    with patch.object(store, "finish", side_effect=AssertionError("one transaction per job")):
        backend.record_exits()
    assert [store.get(job).status for job in first] == ["finished"] * 3 + ["failed"]
    assert store.get(first[3]).reason == "pod 0 exited with code 3"
    result = reconcile(store.engine, INVENTORY, POLICY, now=time.time())
    assert sorted(start.job for start in result.starts) == sorted(waiting)
    for job in waiting:
        store.cancel(job)
    backend.sync()


def test_a_job_cancelled_before_its_exit_is_recorded_stays_cancelled(store: JobStore) -> None:
    jobs = [submit(store, "true") for _ in range(2)]
    reconcile(store.engine, INVENTORY, POLICY, now=time.time())
    store.cancel(jobs[0])
    recorded = store.finish_many([JobEnd(job, succeeded=True) for job in jobs])
    assert [end.job_id for end in recorded] == [jobs[1]]
    assert [store.get(job).status for job in jobs] == ["cancelled", "finished"]


def test_ends_recorded_together_free_the_gpus_retry_what_may_and_refuse_a_second_end(
    store: JobStore,
) -> None:
    spec = parse_job_spec("name: flaky\ncommand: 'false'\nretries: 1\nresources: {gpus: 1, cpu: 1}\n")
    ok, flaky, hopeless = submit(store, "true"), store.submit(spec).id, submit(store, "false")
    reconcile(store.engine, INVENTORY, POLICY, now=time.time())
    ends = [JobEnd(ok, succeeded=True), JobEnd(flaky, succeeded=False, reason="exit 1")]
    ends += [JobEnd(hopeless, succeeded=False, reason="exit 1"), JobEnd(ok, succeeded=False)]
    recorded = store.finish_many(ends)
    assert recorded == ends[:3]  # the second end of `ok` is refused: it had ended
    assert [store.get(job).status for job in (ok, flaky, hopeless)] == ["finished", "pending", "failed"]
    assert store.get(flaky).reason == "exit 1; retry 1 of 1"
    assert all(store.placements(job) == [] for job in (ok, flaky, hopeless))
    assert [s.job for s in reconcile(store.engine, INVENTORY, POLICY, now=time.time()).starts] == [flaky]
    assert store.finish_many([JobEnd(flaky, succeeded=False, reason="exit 1")]) == [
        JobEnd(flaky, succeeded=False, reason="exit 1")
    ]
    assert store.get(flaky).status == "failed"  # its one retry is used


def test_pods_started_in_the_background_start_once_and_their_exits_are_recorded(
    store: JobStore, tmp_path: Path
) -> None:
    backend = LocalBackend(store, tmp_path, background_starts=True)
    assert backend.starts is not None
    jobs = [submit(store, "echo started >> runs.log") for _ in range(4)]
    reconcile(store.engine, INVENTORY, POLICY, now=time.time())
    backend.sync()
    backend.sync()  # while the starts may still be in flight: none is handed over twice
    backend.starts.wait()
    for _ in range(200):
        backend.record_exits()
        if all(store.get(job).status == "finished" for job in jobs):
            break
        time.sleep(0.05)
    assert [store.get(job).status for job in jobs] == ["finished"] * 4
    for job in jobs:
        assert backend.runner.files(job, 1, 0).log.read_text() == ""
        assert (backend.runner.files(job, 1, 0).work / "runs.log").read_text() == "started\n"


def test_a_pod_gets_its_jobs_tracking_on_the_thread_that_starts_it_and_only_once(
    store: JobStore, tmp_path: Path
) -> None:
    """Making a job's MLflow run is start work: done for the pods that start, by the start threads,
    never for pods already started (nor on the thread that runs the rounds)."""
    asked: list[tuple[list[tuple[str, int, int]], str]] = []

    def tracking(pods: list[DesiredPod]) -> list[DesiredPod]:
        asked.append(([pod.key for pod in pods], threading.current_thread().name))
        return [pod.model_copy(update={"tracking": {"MLFLOW_RUN_ID": f"run-{pod.job_id}"}}) for pod in pods]

    backend = LocalBackend(store, tmp_path, tracking=tracking, background_starts=True)
    assert backend.starts is not None
    gang = submit(store, 'echo "$MLFLOW_RUN_ID" > run', pods=2)
    reconcile(store.engine, INVENTORY, POLICY, now=time.time())
    for _ in range(200):
        backend.sync()
        backend.starts.wait()
        if store.get(gang).status == "finished":
            break
        time.sleep(0.05)
    assert store.get(gang).status == "finished"
    assert sorted(keys for keys, _ in asked) == [[(gang, 1, 0), (gang, 1, 1)]] * 2  # a pod each, told both
    assert all(thread.startswith("corral-pod-start") for _, thread in asked)
    for pod in (0, 1):
        assert (backend.runner.files(gang, 1, pod).work / "run").read_text() == f"run-{gang}\n"
