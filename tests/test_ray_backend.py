"""The Ray backend against a real Ray cluster on this machine: a head and one more node, each declaring 2
GPUs (no GPU needed). corral places, Ray runs: a gang's pods land on the nodes corral chose, two GPU
shares run on one GPU, a killed Ray node's job is requeued and completes on the other node, and a
cancelled job's Ray work stops. Every Ray process the tests start is stopped, even when they fail."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from servers import admin_client, start_server, stop, wait_for
from test_serving import service

ray = pytest.importorskip("ray", reason="the Ray backend needs ray (pip install 'corral[ray]')")

from corral.backends.ray import RayBackend  # noqa: E402
from corral.control.reconcile import Inventory, reconcile  # noqa: E402
from corral.core.cluster import BackendSpec, ClusterSpec  # noqa: E402
from corral.scheduling import get_policy  # noqa: E402
from corral.server.process import free_port  # noqa: E402
from corral.spec.job import JobSpec  # noqa: E402
from corral.store.code import CodeStore  # noqa: E402
from corral.store.database import open_store  # noqa: E402
from corral.store.jobs import JobStore  # noqa: E402
from corral.workdirs import pack  # noqa: E402

RAY = str(Path(sys.executable).with_name("ray"))
FAST_HEALTH_CHECKS = {
    "RAY_health_check_initial_delay_ms": "0",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
}
POLICY = get_policy("default")
RAYLET_SECRETS = {"CORRAL_ADMIN_TOKEN": "raylet-admin-secret", "AWS_SECRET_ACCESS_KEY": "raylet-aws-secret"}
"""What an operator's shell may hold when it runs ``ray start``: the raylet and its workers inherit it."""


def _ray_start(*arguments: str) -> None:
    env = os.environ | FAST_HEALTH_CHECKS | RAYLET_SECRETS | {"RAY_USAGE_STATS_ENABLED": "0"}
    command = [RAY, "start", "--num-cpus=4", "--num-gpus=2", "--disable-usage-stats", *arguments]
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=120)


def _ray_stop() -> None:
    subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    if shutil.which(RAY) is None:
        pytest.skip("the ray command is not installed")
    port = free_port()
    try:
        _ray_start(
            "--head", f"--port={port}", "--include-dashboard=false", '--resources={"corral-node-ray-a": 1}'
        )
        _ray_start(f"--address=127.0.0.1:{port}", '--resources={"corral-node-ray-b": 1}')
        yield f"127.0.0.1:{port}"
    finally:
        if ray.is_initialized():
            ray.shutdown()
        _ray_stop()


@pytest.fixture
def lab(ray_address: str, tmp_path: Path) -> Iterator[tuple[JobStore, Inventory, RayBackend]]:
    store = JobStore(open_store(f"sqlite:///{tmp_path / 'corral.db'}"))
    cluster = ClusterSpec(name="ray", backend=BackendSpec(kind="ray", address=ray_address))
    inventory = Inventory([cluster])
    backend = RayBackend(cluster, store, code=CodeStore(tmp_path / "code"))
    backend.sync()
    yield store, inventory, backend
    for job in store.list(limit=1000):
        if job.status in ("pending", "running"):
            store.cancel(job.id)
    backend.sync()  # stops whatever is left
    store.engine.dispose()


def _submit(store: JobStore, **spec: object) -> str:
    return store.submit(JobSpec.model_validate({"name": "job", "command": "true"} | spec)).id


def _rounds(
    lab: tuple[JobStore, Inventory, RayBackend], until: Callable[[], bool], timeout: float = 60
) -> None:
    store, inventory, backend = lab
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not reached in {timeout:g} s: {[(j.id, j.status, j.reason) for j in store.list()]}"
            )
        reconcile(store.engine, inventory, POLICY, time.time())
        backend.sync()
        time.sleep(0.2)


def _ray_ids() -> dict[str, str]:
    """corral node name -> Ray node id."""
    return {
        next(k for k in n["Resources"] if k.startswith("corral-node-")).removeprefix("corral-node-"): n[
            "NodeID"
        ]
        for n in ray.nodes()
        if n["Alive"]
    }


def test_the_ray_cluster_s_nodes_become_corral_nodes(lab) -> None:
    store, _, backend = lab
    registered = backend.nodes_store.registrations()
    assert {"ray-a", "ray-b"} <= set(registered)
    assert all(
        len(registered[name].gpus) == 2 and registered[name].cluster == "ray" for name in ("ray-a", "ray-b")
    )
    addresses = backend.nodes_store.addresses()  # where the gateway reaches their service replicas
    assert {addresses[name] for name in ("ray-a", "ray-b")} == {
        n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]
    }


def test_a_gang_lands_on_the_two_nodes_corral_chose(lab) -> None:
    store = lab[0]
    command = (
        'echo "$CORRAL_POD_INDEX $CORRAL_RAY_NODE_ID $CUDA_VISIBLE_DEVICES $CORRAL_NODE_ADDRESS"; sleep 2'
    )
    job = _submit(store, pods=2, command=command, resources={"gpus": 2, "cpu": 1})
    _rounds(lab, lambda: store.get(job).status == "running")
    chosen = {pod: node for pod, node, _ in store.placements(job)}
    assert set(chosen.values()) == {"ray-a", "ray-b"}
    _rounds(lab, lambda: store.get(job).status == "finished")
    ids = _ray_ids()
    for pod in (0, 1):
        index, ray_node, gpus, address = lab[2].read_log(job, pod).split()
        assert (int(index), ray_node, gpus) == (pod, ids[chosen[pod]], "0,1")
        assert address == lab[2].nodes_store.addresses()[chosen[pod]]  # it listens where it is reached


def test_two_shares_run_on_one_gpu_at_once(lab) -> None:
    store = lab[0]
    command = 'echo "$CUDA_VISIBLE_DEVICES $CORRAL_GPU_FRACTION"; sleep 3'
    jobs = [_submit(store, command=command, resources={"gpus": 0.5, "cpu": 1}) for _ in range(2)]
    _rounds(lab, lambda: all(store.get(j).status == "running" for j in jobs))
    placed = [store.placements(j)[0] for j in jobs]
    assert placed[0][1:] == placed[1][1:]  # same node, same GPU
    _rounds(lab, lambda: all(store.get(j).status == "finished" for j in jobs))
    assert {lab[2].read_log(j, 0) for j in jobs} == {f"{placed[0][2][0]} 0.5\n"}


def test_a_killed_ray_node_s_job_is_requeued_and_completes_elsewhere(lab) -> None:
    """Both nodes busy with a 2-GPU job each; the node that is not the head (the head holds Ray's
    control store, like the machine corral's server talks to) is killed: its job runs again, as attempt
    2, on the head once the other job has finished."""
    store, _, backend = lab
    command = "sleep 3; echo done on attempt $CORRAL_ATTEMPT"
    checkpoint = {"dir": "/tmp/corral-ray-test", "interval": "1s"}
    jobs = [
        _submit(store, command=command, resources={"gpus": 2, "cpu": 1}, checkpoint=checkpoint)
        for _ in range(2)
    ]
    _rounds(lab, lambda: all(store.get(j).status == "running" for j in jobs))
    [lost] = [j for j in jobs if store.placements(j)[0][1] == "ray-b"]
    _kill_raylet(_ray_ids()["ray-b"])
    _rounds(lab, lambda: all(store.get(j).status == "finished" for j in jobs), timeout=90)
    assert store.get(lost).attempt == 2 and backend.read_log(lost, 0) == "done on attempt 2\n"
    assert "node_lost" in [e.kind for e in store.events(lost)]


def test_cancelling_a_job_stops_its_ray_work(lab) -> None:
    store, _, backend = lab
    marker = Path(f"/tmp/corral-ray-cancel-{os.getpid()}")
    marker.unlink(missing_ok=True)
    job = _submit(store, command=f"sleep 3; touch {marker}", resources={"gpus": 1, "cpu": 1})
    _rounds(lab, lambda: store.get(job).status == "running")
    _rounds(lab, lambda: any(n.startswith("pod:") for n in ray.util.list_named_actors()))
    store.cancel(job)
    backend.sync()
    assert not [n for n in ray.util.list_named_actors() if job in n]
    time.sleep(4)
    assert not marker.exists()


def test_a_ray_pod_starts_in_a_copy_of_the_uploaded_code(lab, tmp_path: Path) -> None:
    store, _, backend = lab
    project = tmp_path / "project"
    project.mkdir()
    (project / "run.sh").write_text("cat config.txt; echo changed > config.txt\n")
    (project / "config.txt").write_text("lr=0.1\n")
    packed = pack(project)
    assert backend.code is not None
    backend.code.put("default", packed.digest, packed.data)
    jobs = [_submit(store, command="sh run.sh", code=packed.digest) for _ in range(2)]
    missing = _submit(store, command="true", code="sha256:" + "0" * 64)
    _rounds(lab, lambda: all(store.get(j).status in ("finished", "failed") for j in [*jobs, missing]))
    assert [(store.get(j).status, backend.read_log(j, 0)) for j in jobs] == [("finished", "lr=0.1\n")] * 2
    assert store.get(missing).status == "failed"
    assert "could not be read" in (backend.read_log(missing, 0) or "")


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root Ray worker can run pods as another user")
def test_a_ray_pod_of_a_root_worker_is_neither_root_nor_told_the_worker_s_secrets(lab) -> None:
    """Ray workers run as whoever ran ``ray start`` (root here) with its environment. A member's pod
    there runs as the pod user: not root, no other groups, no new privileges, in a home of its own; it
    cannot read the worker's environment through ``/proc/$PPID/environ``, nor a file only root may read
    (the server's token, its database), and its own environment holds none of the raylet's secrets."""
    store, _, backend = lab
    secret = Path(f"/tmp/corral-ray-secret-{os.getpid()}")
    secret.write_text("admin-token\n")
    secret.chmod(0o600)
    probe = (
        "id -u; grep -E '^(Groups|NoNewPrivs):' /proc/self/status | tr -d '\\t'; "
        "env | grep -c -e raylet- || true; "
        "cat /proc/$PPID/environ >/dev/null 2>&1 && echo worker-env-read || echo worker-env-denied; "
        f"cat {secret} 2>/dev/null || echo secret-denied; "
        'touch "$HOME/mine" && pwd | grep -qx "$HOME" && echo own-home'
    )
    try:
        job = _submit(store, command=probe, resources={"gpus": 1, "cpu": 1})
        _rounds(lab, lambda: store.get(job).status in ("finished", "failed"))
    finally:
        secret.unlink()
    lines = [line.strip() for line in (backend.read_log(job, 0) or "").splitlines()]
    assert store.get(job).status == "finished", lines
    assert lines[0] != "0" and lines[1:] == [
        "Groups:",
        "NoNewPrivs:1",
        "0",
        "worker-env-denied",
        "secret-denied",
        "own-home",
    ]


def _kill_raylet(node_id: str) -> None:
    found = subprocess.run(["pgrep", "-f", f"raylet.*--node_id={node_id}"], capture_output=True, text=True)
    for pid in found.stdout.split():
        os.kill(int(pid), signal.SIGKILL)


def test_one_control_plane_drives_a_local_and_a_ray_cluster(ray_address: str, tmp_path: Path) -> None:
    """`corral server` with a cluster file naming two clusters: `lab` run by the local backend and `ray`
    run by the Ray cluster. A T4 job runs on this machine, a job for Ray's GPUs runs on Ray; both logs
    come back through the API."""
    (tmp_path / "cluster.yaml").write_text(
        "clusters:\n"
        "  - name: lab\n"
        "    pools:\n"
        "      - {name: ws, flavor: t4, count: 1, node: {cpu: 4, memory_gib: 16, gpus: 2, gpu_model: T4}}\n"
        "  - name: ray\n"
        f"    backend: {{kind: ray, address: '{ray_address}'}}\n"
    )
    port = free_port()
    server = start_server(tmp_path, port, cluster=tmp_path / "cluster.yaml", extra=["--interval", "0.5"])
    try:
        with admin_client(tmp_path, port) as client:
            deadline = time.monotonic() + 30
            while not any(n.cluster == "ray" for n in client.nodes()) and time.monotonic() < deadline:
                time.sleep(0.2)
            here = client.submit(
                {"name": "here", "command": "echo on T4 $CUDA_VISIBLE_DEVICES", "resources": {"gpus": "T4:1"}}
            )
            there = client.submit(
                {
                    "name": "there",
                    "command": "echo on ray $CORRAL_RAY_NODE_ID",
                    "resources": {"gpus": "ray-gpu:1"},
                }
            )
            for job in (here, there):
                wait_for(client, job.id, "finished", timeout=60)
            assert client.logs(here.id) == "on T4 0\n"
            assert client.logs(there.id).startswith("on ray ") and len(client.logs(there.id).split()) == 3
            # A service whose replica Ray runs is reached at Ray's address of its node.
            ray_gpu = service(
                "on-ray", replicas={"min": 1, "max": 1}, resources={"gpus": "ray-gpu:1", "cpu": 0.1}
            )
            url = client.apply_service(ray_gpu)["url"]
            token = client._http.headers["authorization"]
            answer = httpx.get(url, headers={"Authorization": token}, timeout=60)
            assert answer.status_code == 200, answer.text
            addresses = {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
            assert answer.json()["host"] in addresses and answer.json()["gateway"]
            client.remove_service("on-ray")
    finally:
        stop(server, kill=False)


def test_a_restarted_server_adopts_its_running_ray_pods(lab) -> None:
    """A new backend (the server restarted) finds the pod's detached actor by name and keeps it: the
    command ran once, and its output arrives whole, even when the pod ended while no server ran (its
    first read then starts before what was stored)."""
    store, inventory, backend = lab
    job = _submit(store, command="echo begin; sleep 2; echo end", resources={"gpus": 1, "cpu": 1})
    _rounds(lab, lambda: store.get(job).status == "running" and bool(backend.read_log(job, 0)))
    time.sleep(3)  # the command ends before the restarted backend first looks
    restarted = RayBackend(inventory.clusters[0], store)
    _rounds((store, inventory, restarted), lambda: store.get(job).status == "finished")
    assert restarted.read_log(job, 0) == "begin\nend\n" and store.get(job).attempt == 1


def test_a_ray_node_s_declared_resources_become_its_shape() -> None:
    """No Ray needed: what `ray.nodes()` reports about a node, turned into a corral node."""
    from corral.backends.ray import _ray_node

    info = {
        "NodeID": "abcdef0123456789",
        "NodeManagerAddress": "10.0.0.7",
        "Alive": True,
        "Resources": {
            "CPU": 64.0,
            "memory": 512 * 2**30,
            "GPU": 4.0,
            "accelerator_type:A100": 1.0,
            "corral-node-dgx1": 1.0,
            "corral-gpu-memory-gib": 80.0,
            "corral-nvlink:0-1/2-3": 1.0,
        },
    }
    node = _ray_node(info, ClusterSpec(name="ray", backend=BackendSpec(kind="ray", address="head:6379")))
    assert (node.name, node.resource) == ("dgx1", "corral-node-dgx1")
    gpus = node.registration.gpus
    assert [(g.model, g.memory_gib, g.nvlink_group) for g in gpus] == [
        ("A100", 80.0, 0),
        ("A100", 80.0, 0),
        ("A100", 80.0, 1),
        ("A100", 80.0, 1),
    ]
    anonymous = _ray_node(info | {"Resources": {"CPU": 8.0, "GPU": 1.0}}, ClusterSpec(name="ray"))
    assert (anonymous.name, anonymous.resource) == ("ray-abcdef01", "node:10.0.0.7")
    assert anonymous.registration.gpus[0].model == "ray-gpu"
