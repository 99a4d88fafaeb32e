"""The /api/v1 job routes over a real store: submit, list, get, why, cancel; bad input gets a clear error
and changes nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from builders import make_cluster, make_pool
from fastapi.testclient import TestClient

from corral.control.reconcile import Inventory, reconcile
from corral.scheduling import get_policy
from corral.server.app import API, create_app
from corral.store.accounts import AccountStore
from corral.store.database import open_store
from corral.store.jobs import JobStore

INVENTORY = Inventory(clusters=[make_cluster("lab", [make_pool("dgx", flavor="a100", count=1, gpus=8)])])
JOB = {"name": "train", "command": "python train.py", "resources": {"gpus": "A100:4", "cpu": 2}}


@pytest.fixture
def store(database_url: str) -> Iterator[JobStore]:
    store = JobStore(open_store(database_url))
    yield store
    store.engine.dispose()


@pytest.fixture
def client(store: JobStore) -> TestClient:
    app = create_app(store, INVENTORY)
    token = AccountStore(store.engine).bootstrap()
    return TestClient(app, headers={"Authorization": f"Bearer {token}"})


def test_health(client: TestClient) -> None:
    assert client.get(f"{API}/health").json() == {"status": "ok"}


def test_submit_then_get_list_and_why(client: TestClient, store: JobStore) -> None:
    created = client.post(f"{API}/jobs", json=JOB)
    assert created.status_code == 201
    job = created.json()
    assert job["status"] == "pending" and job["spec"]["resources"]["gpus"]["count"] == 4
    assert client.get(f"{API}/jobs/{job['id']}").json()["id"] == job["id"]
    assert [j["id"] for j in client.get(f"{API}/jobs", params={"status": "pending"}).json()] == [job["id"]]
    client.post(f"{API}/jobs", json=JOB | {"name": "second", "resources": {"gpus": 8}})
    reconcile(store.engine, INVENTORY, get_policy("default"), now=0.0)
    pending = [j for j in client.get(f"{API}/jobs", params={"status": "pending"}).json()]
    assert len(pending) == 1
    why = client.get(f"{API}/jobs/{pending[0]['id']}/why").json()
    assert why["status"] == "pending" and "insufficient GPUs" in why["reason"]


def test_a_retried_submission_with_the_same_key_is_stored_once(client: TestClient) -> None:
    headers = {"Idempotency-Key": "nightly-2026-11-23"}
    first = client.post(f"{API}/jobs", json=JOB, headers=headers).json()
    second = client.post(f"{API}/jobs", json=JOB, headers=headers).json()
    assert first["id"] == second["id"] and len(client.get(f"{API}/jobs").json()) == 1


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (JOB | {"gpu": 2}, 422, "gpu: unknown field: remove it or check its spelling"),
        (JOB | {"resources": {"gpus": 1.5}}, 422, "resources.gpus: 1.5 GPUs: ask for whole GPUs (2)"),
        ({"name": "x"}, 422, "command: field required: add it"),
        (JOB | {"resources": {"gpus": 16}}, 422, "16"),
        (JOB | {"resources": {"gpus": "H100:1"}}, 422, "H100"),
    ],
)
def test_bad_submissions_say_why_and_store_nothing(
    client: TestClient, body: dict, status: int, message: str
) -> None:
    response = client.post(f"{API}/jobs", json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert client.get(f"{API}/jobs").json() == []


def test_cancel_unknown_and_ended_jobs(client: TestClient) -> None:
    job = client.post(f"{API}/jobs", json=JOB).json()
    assert client.post(f"{API}/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    assert client.post(f"{API}/jobs/{job['id']}/cancel").status_code == 409
    missing = client.get(f"{API}/jobs/j-nope")
    assert missing.status_code == 404 and "no job" in missing.json()["detail"]


def test_the_openapi_document_describes_the_job_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        f"{API}/jobs",
        f"{API}/jobs/{{job_id}}",
        f"{API}/jobs/{{job_id}}/why",
        f"{API}/jobs/{{job_id}}/cancel",
    } <= set(paths)


def test_logs_without_a_backend_and_metrics(client: TestClient) -> None:
    job = client.post(f"{API}/jobs", json=JOB).json()
    missing = client.get(f"{API}/jobs/{job['id']}/logs")
    assert missing.status_code == 404 and "no output" in missing.json()["detail"]
    assert client.get(f"{API}/jobs/j-nope/logs").status_code == 404
    metrics = client.get("/metrics").text
    assert 'corral_queue_depth{queue="default"} 1.0' in metrics


def test_heartbeats_for_known_nodes_only(client: TestClient) -> None:
    assert client.post(f"{API}/nodes/dgx-0/heartbeat").json()["last_heartbeat"] is not None
    unknown = client.post(f"{API}/nodes/nope-7/heartbeat")
    assert unknown.status_code == 404 and "no node 'nope-7'" in unknown.json()["detail"]
    assert [(n["name"], n["gpus"]) for n in client.get(f"{API}/nodes").json()] == [("dgx-0", 8)]


def test_local_cluster_uses_declared_gpus_without_nvml() -> None:
    from corral.control.inventory import local_cluster

    cluster = local_cluster(declared_gpus=3)
    [pool] = cluster.pools
    assert (pool.count, pool.node.gpus, pool.node.gpu_model) == (1, 3, "virtual")
    assert local_cluster(declared_gpus=0).pools[0].node.gpus == 0
    assert pool.gpu_hour_cost == 0.0  # corral up --gpu-hour-cost sets what corral cost charges
    assert local_cluster(declared_gpus=1, gpu_hour_cost=2.5).pools[0].gpu_hour_cost == 2.5


def test_the_api_documentation_is_served_without_the_internet(store: JobStore) -> None:
    """/docs and /redoc load their scripts from this server (a lab's server is often offline), and / leads
    a browser there; neither needs a token."""
    anonymous = TestClient(create_app(store, INVENTORY))
    root = anonymous.get("/", follow_redirects=False)
    assert root.status_code in (302, 307) and root.headers["location"] == "/docs"
    for page in ("/docs", "/redoc"):
        html = anonymous.get(page).text
        scripts = re.findall(r'<script src="([^"]+)"', html)
        assert scripts and all(src.startswith("/") for src in scripts), scripts  # no CDN
        for src in scripts:
            asset = anonymous.get(src)
            assert asset.status_code == 200 and len(asset.content) > 100_000


def test_a_queue_quota_on_a_flavor_no_declared_pool_has_is_refused(client: TestClient) -> None:
    """Every node is declared (lab's one a100 pool), so a quota in h100 could never be used: a typo."""
    refused = client.put(f"{API}/queues/nlp", json={"name": "nlp", "quota": {"h100": 8}})
    assert refused.status_code == 422
    assert "no pool has flavor h100" in refused.json()["detail"]
    assert "flavors: a100" in refused.json()["detail"]
    assert client.put(f"{API}/queues/nlp", json={"name": "nlp", "quota": {"a100": 8}}).status_code == 201
