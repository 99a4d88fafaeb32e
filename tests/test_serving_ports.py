"""A replica's port is chosen where its pod starts and reported with the start: the local backend
records it with the pod's placement (and catches up after a restart), and the controller neither probes
nor routes to a replica before its port is known."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from builders import make_cluster, make_pool
from prometheus_client import CollectorRegistry

from corral.backends.local import LocalBackend, desired_pods
from corral.control.reconcile import Inventory, reconcile
from corral.scheduling import get_policy
from corral.serving.controller import ServiceController
from corral.serving.gateway import Gateway
from corral.spec.job import parse_job_spec
from corral.spec.service import ServiceSpec
from corral.store.database import open_store
from corral.store.jobs import JobStore
from corral.store.services import ServiceStore

INVENTORY = Inventory(clusters=[make_cluster("lab", [make_pool("n", flavor="cpu", count=1, gpus=0)])])
POLICY = get_policy("default")
LISTENER = (
    "import http.server, os; http.server.ThreadingHTTPServer((os.environ['CORRAL_NODE_ADDRESS'], "
    "int(os.environ['PORT'])), http.server.SimpleHTTPRequestHandler).serve_forever()"
)


def passable(folder: Path) -> Path:
    """Pods run as another user: they must pass through the folders above their own."""
    folder.mkdir()
    for passed_through in [folder, *folder.parents[:3]]:
        passed_through.chmod(passed_through.stat().st_mode | 0o711)
    return folder


def stop(backend: LocalBackend, job_id: str) -> None:
    """Sync until the cancelled job's pod is gone (stopping does not wait for it)."""
    pid_file = backend.runner.files(job_id, 1, 0).pid
    pid = int(pid_file.read_text()) if pid_file.exists() else None
    for _ in range(200):
        backend.sync()
        if pid is None or not backend.runner.alive(pid):
            return
        time.sleep(0.05)
    raise AssertionError(f"pod {pid} of {job_id} still runs")


def test_the_local_backend_records_the_port_a_pod_was_given_even_after_a_restart(tmp_path: Path) -> None:
    store = JobStore(open_store(f"sqlite:///{tmp_path / 'corral.db'}"))
    data = passable(tmp_path / "data")
    spec = parse_job_spec("name: web\ncommand: echo $PORT $CORRAL_PORT; sleep 60\nlisten_port: true\n")
    job = store.submit(spec).id
    reconcile(store.engine, INVENTORY, POLICY, now=time.time())
    first = LocalBackend(store, data)
    first.runner.on_start = None  # the server stops between the pod's start and its record
    (pod,) = desired_pods(store)
    first.runner.ensure(pod)
    port = first.runner.port(pod)
    assert port is not None and desired_pods(store)[0].port is None
    restarted = LocalBackend(store, data)
    restarted.sync()  # adopts the pod and records the port it was given
    (pod,) = desired_pods(store)
    assert pod.port == port
    for _ in range(100):
        if restarted.runner.files(job, 1, 0).log.read_text().strip():
            break
        time.sleep(0.05)
    assert restarted.runner.files(job, 1, 0).log.read_text().split() == [str(port), str(port)]
    store.cancel(job)
    stop(first, job)  # by the backend that started it, which reaps it


def test_a_replica_is_routed_to_only_once_its_reported_port_answers(tmp_path: Path) -> None:
    engine = open_store(f"sqlite:///{tmp_path / 'corral.db'}")
    jobs, services, gateway = JobStore(engine), ServiceStore(engine), Gateway(CollectorRegistry())
    backend = LocalBackend(jobs, passable(tmp_path / "data"))
    spec = ServiceSpec(
        name="web", command=["python3", "-c", LISTENER], replicas={"min": 1, "max": 1}, resources={"cpu": 0.1}
    )
    service = services.apply("default", spec).service
    key = ("default", "web")

    async def scenario() -> None:
        controller = ServiceController(services, jobs, gateway, lambda: None)
        try:
            await controller.step()  # submits the replica
            (replica,) = services.replicas()
            assert replica.port is None and "PORT" not in jobs.get(replica.job_id).spec["env"]
            reconcile(engine, INVENTORY, POLICY, now=time.time())
            await controller.step()  # placed and running, but its pod has not started: no port, no route
            (replica,) = services.replicas()
            assert replica.status == "running" and replica.port is None
            assert not gateway.route(key).endpoints
            backend.sync()  # starts the pod on a port free here, recorded with its start
            (replica,) = services.replicas()
            assert replica.port is not None
            for _ in range(200):
                await controller.step()
                if gateway.route(key).endpoints:
                    break
                await asyncio.sleep(0.05)
            (endpoint,) = gateway.route(key).endpoints.values()
            assert endpoint.url == f"http://127.0.0.1:{replica.port}"
            assert (await controller.probe.get(endpoint.url)).status_code == 200
        finally:
            await controller.stop()

    try:
        asyncio.run(scenario())
    finally:
        for job_id in services.delete(service.id):
            jobs.cancel(job_id)
            stop(backend, job_id)


def test_a_replica_whose_node_never_reports_its_port_is_replaced_after_its_readiness_timeout(
    tmp_path: Path,
) -> None:
    """An agent that does not report ports (older than them): its replica is never reached, and counts
    as not ready, as one that never answers its probe."""
    engine = open_store(f"sqlite:///{tmp_path / 'corral.db'}")
    jobs, services, gateway = JobStore(engine), ServiceStore(engine), Gateway(CollectorRegistry())
    now = [time.time()]
    spec = ServiceSpec(name="web", command=["python3", "-c", LISTENER], replicas={"min": 1, "max": 1})
    service = services.apply("default", spec).service

    async def scenario() -> None:
        controller = ServiceController(services, jobs, gateway, lambda: None, clock=lambda: now[0])
        try:
            await controller.step()
            reconcile(engine, INVENTORY, POLICY, now=time.time())
            await controller.step()
            (waiting,) = services.replicas()
            assert waiting.status == "running" and waiting.port is None
            now[0] = time.time() + spec.readiness.timeout + 1
            await controller.step()
            assert jobs.get(waiting.job_id).status == "cancelled"
            assert "not ready within" in (jobs.get(waiting.job_id).reason or "")
            assert controller.states[service.id].failures == {1: 1}
            assert not gateway.route(("default", "web")).endpoints
        finally:
            await controller.stop()

    asyncio.run(scenario())
