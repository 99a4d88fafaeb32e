"""Hostile and out-of-range input gets a clear 4xx on both stores, never a 500: numbers past what a
column or the domain holds, names longer than their columns, route parameters out of range."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from builders import make_cluster, make_pool
from fastapi.testclient import TestClient
from sqlalchemy.exc import DataError, IntegrityError

from corral.control.reconcile import Inventory
from corral.limits import MAX_REQUEST_BYTES
from corral.server.app import API, create_app
from corral.store.accounts import AccountStore
from corral.store.database import open_store
from corral.store.jobs import JobStore

INVENTORY = Inventory(clusters=[make_cluster("lab", [make_pool("dgx", flavor="a100", count=1, gpus=8)])])
JOB = {"name": "train", "command": "true", "resources": {"gpus": 1}}
BIG = 2**63
INT32_PAST = 2**31


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    store = JobStore(open_store(database_url))
    token = AccountStore(store.engine).bootstrap()
    with TestClient(
        create_app(store, INVENTORY),
        headers={"Authorization": f"Bearer {token}"},
        raise_server_exceptions=False,
    ) as http:
        yield http
    store.engine.dispose()


def _refused(response, status: int = 422) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["detail"], str) and body["status"] == status, body
    return body


def _job(client: TestClient) -> str:
    created = client.post(f"{API}/jobs", json=JOB)
    assert created.status_code == 201, created.text
    return created.json()["id"]


@pytest.mark.parametrize(
    "gpus",
    [
        100000,
        1e20,
        {"count": -3},
        {"count": 2, "milli": 500},
        {"count": 0, "milli": 500},
        {"count": 1, "milli": 0},
    ],
)
def test_out_of_range_gpu_requests_are_422(client: TestClient, gpus: object) -> None:
    _refused(client.post(f"{API}/jobs", json=JOB | {"resources": {"gpus": gpus}}))
    assert client.get(f"{API}/jobs").json() == []


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN", "1e400"])
@pytest.mark.parametrize("field", ["gpus", "cpu", "memory"])
def test_non_finite_numbers_are_422(client: TestClient, literal: str, field: str) -> None:
    body = '{"name": "train", "command": "true", "resources": {"' + field + '": ' + literal + "}}"
    response = client.post(f"{API}/jobs", content=body, headers={"Content-Type": "application/json"})
    _refused(response)


@pytest.mark.parametrize(
    "change",
    [
        {"priority": INT32_PAST},
        {"pods": 10**6},
        {"time_limit": 1e300},
        {"resources": {"cpu": 1e300}},
        {"resources": {"memory": 1e300}},
        {"queue": "q" * 65},
    ],
)
def test_numbers_and_names_past_their_bounds_are_422(client: TestClient, change: dict) -> None:
    _refused(client.post(f"{API}/jobs", json=JOB | change))


def test_an_idempotency_key_up_to_its_documented_length_works(client: TestClient) -> None:
    for length in (1, 120, 121, 128):
        key = "k" * length
        first = client.post(f"{API}/jobs", json=JOB, headers={"Idempotency-Key": key})
        assert first.status_code == 201, (length, first.text)
        again = client.post(f"{API}/jobs", json=JOB, headers={"Idempotency-Key": key})
        assert again.json()["id"] == first.json()["id"]
    _refused(client.post(f"{API}/jobs", json=JOB, headers={"Idempotency-Key": "k" * 129}))


@pytest.mark.parametrize("pod", [BIG, INT32_PAST, -1])
def test_log_and_exit_routes_refuse_out_of_range_pods(client: TestClient, pod: int) -> None:
    job_id = _job(client)
    _refused(client.get(f"{API}/jobs/{job_id}/logs", params={"pod": pod}))
    _refused(client.post(f"{API}/jobs/{job_id}/pods/{pod}/exit", json={"attempt": 1, "code": 0}))
    _refused(
        client.post(f"{API}/jobs/{job_id}/pods/{pod}/logs", json={"attempt": 1, "offset": 0, "text": "x"})
    )


@pytest.mark.parametrize(
    "body",
    [
        {"attempt": BIG, "code": 0},
        {"attempt": INT32_PAST, "code": 0},
        {"attempt": 1, "code": 1e20},
        {"attempt": 1, "code": INT32_PAST},
        {"attempt": 0, "code": 0},
    ],
)
def test_exit_reports_out_of_range_are_422(client: TestClient, body: dict) -> None:
    _refused(client.post(f"{API}/jobs/{_job(client)}/pods/0/exit", json=body))


@pytest.mark.parametrize(
    "body",
    [
        {"attempt": BIG, "offset": 0, "text": "x"},
        {"attempt": INT32_PAST, "offset": 0, "text": "x"},
        {"attempt": 1, "offset": BIG, "text": "x"},
    ],
)
def test_log_chunks_out_of_range_are_422(client: TestClient, body: dict) -> None:
    _refused(client.post(f"{API}/jobs/{_job(client)}/pods/0/logs", json=body))


@pytest.mark.parametrize("params", [{"offset": BIG}, {"offset": -1}, {"tail": -1}, {"tail": BIG}])
def test_log_reads_out_of_range_are_422(client: TestClient, params: dict) -> None:
    _refused(client.get(f"{API}/jobs/{_job(client)}/logs", params=params))


def test_long_queue_and_node_names_are_422(client: TestClient) -> None:
    name = "q" * 65
    _refused(client.put(f"{API}/queues/{name}", json={"name": name}))
    node = "n" * 129
    registration = {"cpu": 8, "memory_gib": 32, "gpus": []}
    _refused(client.put(f"{API}/nodes/{node}", json=registration))
    _refused(client.put(f"{API}/nodes/laptop", json=registration | {"cluster": "c" * 65}))
    _refused(client.put(f"{API}/nodes/laptop", json=registration | {"pool": "p" * 65}))


@pytest.mark.parametrize("node", ["a\x00b", "../dgx-0", "n" * 129, ""])
def test_an_agent_user_s_node_is_a_node_name(client: TestClient, node: str) -> None:
    """An agent bound to a node no registration could have is refused (it was stored on SQLite)."""
    body = {"name": "agent-x", "tenant": "default", "role": "agent", "node": node}
    _refused(client.post(f"{API}/users", json=body))
    assert "agent-x" not in {user["name"] for user in client.get(f"{API}/users").json()}


@pytest.mark.parametrize(
    "queue",
    [
        {"name": "q", "quota": {"a100": float("inf")}},
        {"name": "q", "quota": {"a100": -1}},
        {"name": "q", "weight": 1e400},
        {"name": "q", "burst_after_seconds": INT32_PAST * 1e300},
        {"name": "q", "cohort": "c" * 65, "quota": {}},
    ],
)
def test_queue_settings_out_of_range_are_422(client: TestClient, queue: dict) -> None:
    import json

    body = json.dumps(queue)  # inf and 1e400 as JSON's non-standard literals
    response = client.put(f"{API}/queues/q", content=body, headers={"Content-Type": "application/json"})
    _refused(response)


def test_every_refusal_has_one_shape_and_the_document_says_so(client: TestClient) -> None:
    invalid = _refused(client.post(f"{API}/jobs", json={"name": "x"}))
    assert invalid["errors"][0]["field"] == "command" and invalid["title"]
    _refused(client.get(f"{API}/jobs/j-nope"), 404)
    _refused(client.get(f"{API}/jobs", headers={"Authorization": "Bearer nope"}), 401)
    document = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    problem = document["components"]["schemas"]["Problem"]
    assert problem["properties"]["detail"]["type"] == "string"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                if status.startswith("4"):
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Problem"}, (method, path, status)
            if operation.get("security"):
                assert {"401", "403"} <= set(operation["responses"]), (method, path)
            if operation.get("parameters") or "requestBody" in operation:
                assert "422" in operation["responses"], (method, path)
            if "requestBody" in operation:
                assert {"400", "413"} <= set(operation["responses"]), (method, path)


def test_a_body_too_large_is_413(client: TestClient) -> None:
    body = {"attempt": 1, "offset": 0, "text": "x" * MAX_REQUEST_BYTES}
    _refused(client.post(f"{API}/jobs/{_job(client)}/pods/0/logs", json=body), 413)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (DataError("INSERT", {}, ValueError("value too long")), 422),
        (IntegrityError("INSERT", {}, ValueError("duplicate")), 409),
    ],
)
def test_what_only_the_store_rejects_is_the_clients_4xx(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, error: Exception, status: int
) -> None:
    """A value that slipped past validation and that the database refuses is not a server error."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(client.app.state.control_plane.jobs, "submit", refuse)  # type: ignore[attr-defined]
    _refused(client.post(f"{API}/jobs", json=JOB), status)


@pytest.mark.parametrize(
    "path",
    [
        "/jobs/a%00b",
        "/jobs?queue=a%00b",
        "/jobs?tenant=a%00b",
        "/nodes/a%00b/heartbeat",
        "/services/a%00b",
        "/services?tenant=a%00b",
        "/services/a%00b?tenant=a%00b",
        "/pipelines/a%00b",
        "/pipelines?tenant=a%00b",
        "/models/a%00b",
    ],
)
def test_nul_bytes_in_route_parameters_are_never_a_server_error(client: TestClient, path: str) -> None:
    """PostgreSQL refuses NUL in text (a 422 here); SQLite just finds nothing."""
    method = "POST" if path.endswith("heartbeat") else "GET"
    response = client.request(method, f"{API}{path}")
    assert response.status_code < 500, response.text


@pytest.mark.parametrize(
    "path", ["/services/a%00b/x/", "/services/default/a%00b/", "/services/default/x/a%00b"]
)
def test_nul_bytes_in_a_gateway_path_are_never_a_server_error(client: TestClient, path: str) -> None:
    """The gateway looks the service up by tenant and name before anything else."""
    response = client.get(path)
    assert response.status_code == 404, response.text
