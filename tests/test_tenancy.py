"""Auth and tenancy over every API route: no token is a 401; a role that may not is a 403; another
tenant's job is a 404 (as if it did not exist); members submit only into their tenant's queues; every
refusal is logged and changes nothing."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from builders import TextLog, make_cluster, make_pool
from fastapi.testclient import TestClient
from sqlalchemy import text

from corral.control.reconcile import Inventory
from corral.server.app import API, create_app
from corral.store.accounts import AccountStore
from corral.store.database import open_store
from corral.store.jobs import JobStore

LAB_POOLS = [make_pool("dgx", flavor="a100", count=1, gpus=8)]
JOB = {"name": "train", "command": "true", "resources": {"gpus": 1}}
S3_AT_HAND = all(importlib.util.find_spec(module) for module in ("boto3", "moto"))
"""Whether the lab cluster gets an object store (moto on loopback) to copy artifacts to."""


@dataclass
class Lab:
    http: TestClient
    tokens: dict[str, str]
    """user -> token: admin; alice (member, vision); victor (viewer, vision); bob (member, nlp); agent."""
    jobs: dict[str, str]
    """tenant -> the id of a job of that tenant."""
    store: JobStore

    def call(self, who: str | None, method: str, path: str, headers: dict | None = None, **kwargs: object):  # type: ignore[no-untyped-def]
        auth = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return self.http.request(method, f"{API}{path}", headers=auth | (headers or {}), **kwargs)


@pytest.fixture
def lab(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    store = JobStore(open_store(database_url))
    bucket = request.getfixturevalue("bucket") if S3_AT_HAND else None
    inventory = Inventory(clusters=[make_cluster("lab", LAB_POOLS, object_store=bucket)])
    runs = tmp_path / "runs"
    app = create_app(
        store,
        inventory,
        logs=lambda job_id, pod, attempt: TextLog(f"output of {job_id}\n".encode()),
        runs=runs,
    )
    http = TestClient(app)
    accounts = AccountStore(store.engine)
    tokens = {"admin": accounts.bootstrap()}
    for tenant in ("vision", "nlp"):
        accounts.create_tenant(tenant)
    for user, tenant, role in [
        ("alice", "vision", "member"),
        ("victor", "vision", "viewer"),
        ("bob", "nlp", "member"),
        ("agent", "default", "agent"),
    ]:
        tokens[user] = accounts.create_user(user, tenant, role)[1]
    lab = Lab(http, tokens, {}, store)  # type: ignore[arg-type]
    for name, tenants in [("vision-q", ["vision"]), ("nlp-q", ["nlp"]), ("shared", None)]:
        body = {"name": name, "quota": None, "tenants": tenants}
        assert lab.call("admin", "PUT", f"/queues/{name}", json=body).status_code == 201
    for user, tenant in [("alice", "vision"), ("bob", "nlp")]:
        created = lab.call(user, "POST", "/jobs", json=JOB | {"queue": f"{tenant}-q"})
        assert created.status_code == 201, created.text
        lab.jobs[tenant] = created.json()["id"]
    (runs / lab.jobs["vision"]).mkdir(parents=True)
    (runs / lab.jobs["vision"] / "model.pt").write_bytes(b"weights")
    yield lab
    store.engine.dispose()


@dataclass(frozen=True)
class Route:
    """A route as FastAPI names it, a request that is valid apart from who makes it, and the roles it
    admits. ``{job_id}`` is the vision tenant's job, ``{token_id}`` the caller's own token."""

    method: str
    path: str
    roles: frozenset[str]
    name: str = ""
    body: dict | None = None
    needs: str | None = None
    """A module without which the route cannot do its work here (the test is skipped)."""

    def url(self, lab: Lab, who: str) -> str:
        token_id = lab.tokens[who].split("_")[1]
        return self.path.format(job_id=lab.jobs["vision"], token_id=token_id, name=self.name, pod=0)


PEOPLE = frozenset({"admin", "member", "viewer"})
ANYONE = PEOPLE | {"agent"}
SUBMITTERS = frozenset({"admin", "member"})
ADMIN = frozenset({"admin"})
ROUTES = [
    Route("GET", "/jobs", PEOPLE),
    Route("POST", "/jobs", SUBMITTERS, body=JOB | {"queue": "shared"}),
    Route("GET", "/jobs/{job_id}", PEOPLE),
    Route("GET", "/jobs/{job_id}/why", PEOPLE),
    Route("GET", "/jobs/{job_id}/events", PEOPLE),
    Route("GET", "/jobs/{job_id}/logs", PEOPLE),
    Route("POST", "/jobs/{job_id}/cancel", SUBMITTERS),
    Route(
        "POST",
        "/jobs/{job_id}/artifacts",
        SUBMITTERS,
        body={"path": "model.pt", "kind": "model", "cluster": "lab"},
        needs="moto",
    ),
    Route(
        "POST",
        "/jobs/{job_id}/pods/{pod}/exit",
        frozenset({"admin", "agent"}),
        body={"attempt": 1, "code": 0},
    ),
    Route(
        "POST",
        "/jobs/{job_id}/pods/{pod}/logs",
        frozenset({"admin", "agent"}),
        body={"attempt": 1, "offset": 0, "text": "hi\n"},
    ),
    Route("GET", "/queues", PEOPLE),
    Route("PUT", "/queues/{name}", ADMIN, name="extra", body={"name": "extra"}),
    Route("DELETE", "/queues/{name}", ADMIN, name="shared"),
    Route("GET", "/cohorts", PEOPLE),
    Route("GET", "/clusters", PEOPLE),
    Route("GET", "/nodes", PEOPLE),
    Route(
        "PUT",
        "/nodes/{name}",
        frozenset({"admin", "agent"}),
        name="laptop",
        body={"cpu": 8, "memory_gib": 32, "gpus": [{"index": 0, "model": "RTX4090", "memory_gib": 24}]},
    ),
    Route("POST", "/nodes/{name}/heartbeat", frozenset({"admin", "agent"}), name="dgx-0"),
    Route("GET", "/nodes/{name}/pods", frozenset({"admin", "agent"}), name="dgx-0"),
    Route("GET", "/cost", PEOPLE),
    Route("GET", "/me", ANYONE),
    Route("GET", "/tenants", ADMIN),
    Route("POST", "/tenants", ADMIN, body={"name": "robotics"}),
    Route("GET", "/users", ADMIN),
    Route("POST", "/users", ADMIN, body={"name": "carol", "tenant": "vision"}),
    Route("GET", "/tokens", ANYONE),
    Route("POST", "/tokens", ANYONE),
    Route("DELETE", "/tokens/{token_id}", ANYONE),
]
ROLE_USERS = {"admin": "admin", "member": "alice", "viewer": "victor", "agent": "agent"}
OPEN_ROUTES = {("GET", f"{API}/health")}


def test_the_table_covers_every_route_of_the_api(lab: Lab) -> None:
    """Every path and method of the OpenAPI document is in ROUTES (or needs no token)."""
    documented = {
        (method.upper(), path)
        for path, operations in lab.http.app.openapi()["paths"].items()  # type: ignore[attr-defined]
        for method in operations
    }
    tested = {(route.method, API + route.path) for route in ROUTES}
    assert documented - OPEN_ROUTES - {("GET", "/metrics")} == tested


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_every_route_but_health_needs_a_valid_token(lab: Lab, route: Route) -> None:
    url = route.url(lab, "admin")
    assert lab.call(None, route.method, url, json=route.body).status_code == 401
    forged = lab.tokens["admin"][:-4] + "AAAA"
    headers = {"Authorization": f"Bearer {forged}"}
    response = lab.http.request(route.method, f"{API}{url}", headers=headers, json=route.body)
    assert response.status_code == 401 and "not recognised" in response.json()["detail"]


def test_metrics_need_a_token_of_any_role(lab: Lab) -> None:
    assert lab.http.get("/metrics").status_code == 401
    for user in ROLE_USERS.values():
        assert (
            lab.http.get("/metrics", headers={"Authorization": f"Bearer {lab.tokens[user]}"}).status_code
            == 200
        )


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
@pytest.mark.parametrize("role", sorted(ROLE_USERS))
def test_each_route_admits_only_its_roles(lab: Lab, route: Route, role: str, caplog) -> None:
    if route.needs is not None:
        pytest.importorskip(route.needs)
    who = ROLE_USERS[role]
    before = _state(lab)
    with caplog.at_level(logging.WARNING, logger="corral.audit"):
        response = lab.call(who, route.method, route.url(lab, who), json=route.body)
    if role in route.roles:
        assert response.status_code < 400, response.text
    else:
        assert response.status_code == 403, response.text
        assert f"{who} is {role}; this needs" in response.json()["detail"]
        assert f"refused {route.method}" in caplog.text and who in caplog.text
        assert _state(lab) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", ""), ("GET", "/why"), ("GET", "/events"), ("GET", "/logs"), ("POST", "/cancel")],
)
def test_another_tenants_job_is_not_there(lab: Lab, method: str, path: str) -> None:
    """bob (nlp) asks about alice's (vision) job: the same 404 as for a job that does not exist."""
    response = lab.call("bob", method, f"/jobs/{lab.jobs['vision']}{path}")
    assert response.status_code == 404 and lab.jobs["vision"] in response.json()["detail"]
    assert lab.store.get(lab.jobs["vision"]).status == "pending"


def test_lists_show_only_the_callers_tenant_and_admins_see_all(lab: Lab) -> None:
    def ids(who: str, **params: str) -> set[str]:
        return {job["id"] for job in lab.call(who, "GET", "/jobs", params=params).json()}

    assert ids("alice") == ids("victor") == {lab.jobs["vision"]}
    assert ids("bob") == ids("bob", tenant="vision") == {lab.jobs["nlp"]}
    assert ids("admin") == set(lab.jobs.values()) and ids("admin", tenant="nlp") == {lab.jobs["nlp"]}


def test_members_submit_only_to_their_tenants_queues(lab: Lab) -> None:
    refused = lab.call("bob", "POST", "/jobs", json=JOB | {"queue": "vision-q"})
    assert (
        refused.status_code == 403
        and refused.json()["detail"] == "tenant nlp may not submit to queue vision-q"
    )
    unknown = lab.call("bob", "POST", "/jobs", json=JOB | {"queue": "nope"})
    assert unknown.status_code == 422
    assert unknown.json()["detail"] == "queue: no queue 'nope'; yours: default, nlp-q, shared"
    shared = lab.call("bob", "POST", "/jobs", json=JOB | {"queue": "shared"})
    assert shared.status_code == 201 and shared.json()["tenant"] == "nlp"
    queues = {q["name"]: q["yours"] for q in lab.call("bob", "GET", "/queues").json()}
    assert queues == {"default": True, "nlp-q": True, "shared": True, "vision-q": False}


def test_idempotency_keys_are_per_tenant(lab: Lab) -> None:
    key = {"Idempotency-Key": "nightly"}
    alice = lab.call("alice", "POST", "/jobs", json=JOB | {"queue": "shared"}, headers=key).json()
    bob = lab.call("bob", "POST", "/jobs", json=JOB | {"queue": "shared"}, headers=key).json()
    assert alice["id"] != bob["id"] and (alice["tenant"], bob["tenant"]) == ("vision", "nlp")


def test_tokens_are_stored_hashed_and_revoking_one_stops_it_at_once(lab: Lab) -> None:
    new = lab.call("alice", "POST", "/tokens").json()["token"]
    with lab.store.engine.connect() as connection:
        stored = " ".join(str(row) for row in connection.execute(text("SELECT * FROM tokens")))
    assert all(token.split("_", 2)[2] not in stored for token in [*lab.tokens.values(), new])
    assert lab.http.get(f"{API}/me", headers={"Authorization": f"Bearer {new}"}).json()["user"] == "alice"
    token_id = new.split("_")[1]
    assert lab.call("bob", "DELETE", f"/tokens/{token_id}").status_code == 404
    assert lab.call("alice", "DELETE", f"/tokens/{token_id}").status_code == 204
    assert lab.http.get(f"{API}/me", headers={"Authorization": f"Bearer {new}"}).status_code == 401
    assert lab.call("alice", "POST", "/tokens", params={"user": "bob"}).status_code == 403


def test_a_queue_in_use_cannot_be_deleted(lab: Lab) -> None:
    response = lab.call("admin", "DELETE", "/queues/vision-q")
    assert response.status_code == 409
    assert response.json()["detail"].startswith("queue 'vision-q' has 1 pending or running job(s)")
    lab.call("admin", "POST", f"/jobs/{lab.jobs['vision']}/cancel")
    assert lab.call("admin", "DELETE", "/queues/vision-q").status_code == 204
    assert lab.call("admin", "DELETE", "/queues/vision-q").status_code == 404


def test_queue_settings_are_validated_and_cohorts_follow_queues(lab: Lab) -> None:
    bad = lab.call("admin", "PUT", "/queues/x", json={"name": "x", "quota": {"a100": 2}, "colour": "red"})
    assert bad.status_code == 422 and "colour: unknown field" in bad.json()["detail"]
    mismatch = lab.call("admin", "PUT", "/queues/x", json={"name": "y"})
    assert mismatch.status_code == 422
    for name, quota in [("x", 2), ("y", 6)]:
        body = {"name": name, "cohort": "research", "quota": {"a100": quota}}
        assert lab.call("admin", "PUT", f"/queues/{name}", json=body).status_code == 201
    assert (
        lab.call(
            "admin", "PUT", "/queues/y", json={"name": "y", "cohort": "research", "quota": {"a100": 4}}
        ).status_code
        == 200
    )
    [cohort] = lab.call("victor", "GET", "/cohorts").json()
    assert cohort == {"name": "research", "queues": ["x", "y"], "quota": {"a100": 6.0}}


def _state(lab: Lab) -> tuple:
    with lab.store.engine.connect() as connection:
        return tuple(
            tuple(connection.execute(text(f"SELECT * FROM {table} ORDER BY 1")))
            for table in ("jobs", "queues", "tenants", "users", "tokens", "placements")
        )


def test_the_openapi_document_names_the_token_and_the_refusals_of_every_route(lab: Lab) -> None:
    document = lab.http.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for route in ROUTES:
        operation = document["paths"][API + route.path][route.method.lower()]
        assert operation["security"] == [{"HTTPBearer": []}], route
        assert {"401", "403", "404"} <= set(operation["responses"]), route
        assert operation["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "/Problem"
        )
