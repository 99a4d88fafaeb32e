"""Machines that agents register become nodes; a GPU reported unhealthy is drained and the job on it
resumes elsewhere from its checkpoint; a report that contradicts the cluster file is refused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from builders import make_cluster, make_pool
from fastapi.testclient import TestClient

from corral.api_models import GpuReport, NodeRegistration
from corral.control.reconcile import Inventory, reconcile
from corral.scheduling import get_policy
from corral.server.app import API, create_app
from corral.spec.job import parse_job_spec
from corral.store.accounts import AccountStore
from corral.store.database import open_store
from corral.store.jobs import JobStore
from corral.store.nodes import NodeStore

POLICY = get_policy("default")
NO_FILE = Inventory(clusters=[])


def laptop(gpus: int = 2, unhealthy: tuple[int, ...] = ()) -> NodeRegistration:
    reports = [
        GpuReport(index=i, model="RTX 4090", memory_gib=24, healthy=i not in unhealthy) for i in range(gpus)
    ]
    return NodeRegistration(cpu=16, memory_gib=64, gpus=reports)


@pytest.fixture
def store(database_url: str) -> Iterator[JobStore]:
    store = JobStore(open_store(database_url))
    yield store
    store.engine.dispose()


def job(store: JobStore, gpus: int) -> str:
    text = f"name: train\ncommand: python train.py\nresources: {{gpus: {gpus}, cpu: 1}}\n"
    text += "checkpoint: {dir: /ckpt, interval: 60}\n"
    return store.submit(parse_job_spec(text)).id


def test_a_registered_machine_is_a_node_of_its_own_pool(store: JobStore) -> None:
    NodeStore(store.engine).register("laptop", laptop())
    first = job(store, 2)
    result = reconcile(store.engine, NO_FILE, POLICY, now=0.0)
    [start] = result.starts
    assert start.job == first and start.cluster == "agents" and start.flavor == "rtx-4090"
    assert [(p.node, p.gpus) for p in start.placements] == [("laptop", (0, 1))]


def test_a_failed_gpu_is_drained_and_its_job_resumes_on_a_healthy_one(store: JobStore) -> None:
    nodes = NodeStore(store.engine)
    nodes.register("laptop", laptop())
    first = job(store, 1)
    reconcile(store.engine, NO_FILE, POLICY, now=0.0)
    [(_, _, (gpu,))] = store.placements(first)
    nodes.register("laptop", laptop(unhealthy=(gpu,)))
    result = reconcile(store.engine, NO_FILE, POLICY, now=100.0)
    assert [s.job for s in result.starts] == [first]
    assert store.placements(first) == [(0, "laptop", (1 - gpu,))]
    events = [(e.kind, e.reason) for e in store.events(first)]
    assert ("node_lost", f"GPU {gpu} of laptop failed (drained)") in events
    assert events[-1] == ("started", None)
    second = job(store, 1)
    reconcile(store.engine, NO_FILE, POLICY, now=101.0)
    assert "insufficient GPUs" in (store.get(second).reason or "")


def test_declared_nodes_take_health_from_their_agent_and_refuse_another_shape(store: JobStore) -> None:
    inventory = Inventory(clusters=[make_cluster("lab", [make_pool("dgx", flavor="a100", count=1, gpus=2)])])
    http = TestClient(create_app(store, inventory))
    http.headers["Authorization"] = f"Bearer {AccountStore(store.engine).bootstrap()}"
    wrong = http.put(f"{API}/nodes/dgx-0", json=laptop(gpus=4).model_dump())
    assert wrong.status_code == 409
    assert "declared with 2 GPU(s) in the cluster file; the agent reports 4" in wrong.json()["detail"]
    ok = http.put(f"{API}/nodes/dgx-0", json=laptop(unhealthy=(1,)).model_dump())
    assert ok.status_code == 200, ok.text
    assert ok.json()["unhealthy_gpus"] == [1] and ok.json()["flavor"] == "a100" and ok.json()["registered"]
    new = http.put(f"{API}/nodes/laptop", json=laptop().model_dump()).json()
    assert (new["cluster"], new["pool"], new["gpus"]) == ("agents", "rtx-4090", 2)
    assert {n["name"] for n in http.get(f"{API}/nodes").json()} == {"dgx-0", "laptop"}
    gaps = laptop().model_dump() | {"gpus": [{"index": 1, "model": "T4", "memory_gib": 16}]}
    invalid = http.put(f"{API}/nodes/laptop", json=gaps)
    assert invalid.status_code == 422 and "index order" in invalid.json()["detail"]
