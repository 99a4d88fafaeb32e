"""Auth and tenancy over every API route: no token is a 401; a role that may not is a 403; another
tenant's job is a 404 (as if it did not exist); members submit only into their tenant's queues; every
refusal is logged and changes nothing."""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from builders import TextLog, make_cluster, make_pool
from fastapi.testclient import TestClient
from sqlalchemy import text

from corral.control.reconcile import Inventory, reconcile
from corral.scheduling import get_policy
from corral.server.app import API, create_app
from corral.store.accounts import AccountStore
from corral.store.code import CodeStore
from corral.store.database import open_store
from corral.store.jobs import JobStore
from corral.workdirs import digest_of

LAB_POOLS = [make_pool("dgx", flavor="a100", count=1, gpus=8)]
JOB = {"name": "train", "command": "true", "resources": {"gpus": 1}}
PIPELINE = {"spec": {"type": "pipeline", "name": "p", "steps": {"a": {"command": "true"}}}}
SERVICE = {"type": "service", "name": "web", "queue": "shared", "command": "true"}
ARCHIVE = b"a working folder, as PUT /code/{digest} takes it"
DIGEST = digest_of(ARCHIVE)
S3_AT_HAND = all(importlib.util.find_spec(module) for module in ("boto3", "moto"))
"""Whether the lab cluster gets an object store (moto on loopback) to copy artifacts to."""


@dataclass
class Lab:
    http: TestClient
    tokens: dict[str, str]
    """user -> token: admin; alice (member, vision); victor (viewer, vision); bob (member, nlp); agent
    (of node dgx-0)."""
    jobs: dict[str, str]
    """tenant -> the id of a pending job of that tenant; ``running``: the admin's job, running as attempt
    1 with its one pod on dgx-0."""
    store: JobStore
    run: str = ""
    """A pipeline run of the vision tenant (alice's)."""

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
        code=CodeStore(tmp_path / "code"),
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
    ]:
        tokens[user] = accounts.create_user(user, tenant, role)[1]
    tokens["agent"] = accounts.create_user("agent", "default", "agent", node="dgx-0")[1]
    lab = Lab(http, tokens, {}, store)  # type: ignore[arg-type]
    for who in ("admin", "alice"):  # the default tenant's code (the running job's) and vision's
        assert lab.call(who, "PUT", f"/code/{DIGEST}", content=ARCHIVE).status_code == 200
    for name, tenants in [("vision-q", ["vision"]), ("nlp-q", ["nlp"]), ("shared", None)]:
        body = {"name": name, "quota": None, "tenants": tenants}
        assert lab.call("admin", "PUT", f"/queues/{name}", json=body).status_code == 201
    for who in ("admin", "alice"):  # a service with a canary in the default tenant and in vision
        for revision in ("1", "2"):
            body = SERVICE | {"env": {"REVISION": revision}}
            assert lab.call(who, "POST", "/services", json=body).status_code == 200
    running = JOB | {"code": DIGEST, "outputs": {"model": "model.pt"}, "mounts": [{"digest": DIGEST}]}
    lab.jobs["running"] = lab.call("admin", "POST", "/jobs", json=running).json()["id"]
    reconcile(store.engine, inventory, get_policy("default"), now=time.time())
    assert lab.call("admin", "PUT", "/nodes/laptop", json=LAPTOP).status_code == 200
    for user, tenant in [("alice", "vision"), ("bob", "nlp")]:
        created = lab.call(user, "POST", "/jobs", json=JOB | {"queue": f"{tenant}-q"})
        assert created.status_code == 201, created.text
        lab.jobs[tenant] = created.json()["id"]
    lab.run = lab.call("alice", "POST", "/pipelines", json=PIPELINE).json()["id"]
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
    job: str = "vision"
    """Which of ``Lab.jobs`` ``{job_id}`` is."""
    content: bytes | None = None
    """A body that is not JSON (an uploaded archive)."""
    params: dict | None = None
    unavailable_here: bool = False
    """Needs MLflow behind the server, which this app has not: an admitted role gets a 404 here
    (tests/test_mlops.py covers what it does)."""

    def url(self, lab: Lab, who: str) -> str:
        token_id = lab.tokens[who].split("_")[1]
        return self.path.format(
            job_id=lab.jobs[self.job],
            token_id=token_id,
            name=self.name,
            pod=0,
            digest=DIGEST,
            run_id=lab.run,
            alias="champion",
        )

    def send(self) -> dict:
        """The request's body and query, as httpx takes them."""
        return {"json": self.body, "content": self.content, "params": self.params}


LAPTOP = {"cpu": 8, "memory_gib": 32, "gpus": [{"index": 0, "model": "RTX4090", "memory_gib": 24}]}
"""A machine an agent registers besides the cluster file's dgx-0."""
DGX = {
    "cpu": 64,
    "memory_gib": 512,
    "gpus": [{"index": i, "model": "A100", "memory_gib": 80} for i in range(8)],
}
"""dgx-0 as its agent reports it (the cluster file declares it with 8 GPUs)."""

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
        "/jobs/{job_id}/pods/{pod}/start",
        frozenset({"admin", "agent"}),
        body={"attempt": 1, "port": 8080},
        job="running",
    ),
    Route(
        "POST",
        "/jobs/{job_id}/pods/{pod}/exit",
        frozenset({"admin", "agent"}),
        body={"attempt": 1, "code": 0},
        job="running",
    ),
    Route(
        "POST",
        "/jobs/{job_id}/pods/{pod}/logs",
        frozenset({"admin", "agent"}),
        body={"attempt": 1, "offset": 0, "text": "hi\n"},
        job="running",
    ),
    Route(
        "GET",
        "/jobs/{job_id}/pods/{pod}/code",
        frozenset({"admin", "agent"}),
        job="running",
        params={"attempt": 1},
    ),
    Route(
        "PUT",
        "/jobs/{job_id}/pods/{pod}/outputs/{name}",
        frozenset({"admin", "agent"}),
        name="model",
        job="running",
        content=ARCHIVE,
        params={"attempt": 1},
    ),
    Route(
        "GET",
        "/jobs/{job_id}/pods/{pod}/mounts/{digest}",
        frozenset({"admin", "agent"}),
        job="running",
        params={"attempt": 1},
    ),
    Route("POST", "/pipelines", SUBMITTERS, body=PIPELINE),
    Route("GET", "/pipelines", PEOPLE),
    Route("GET", "/pipelines/{run_id}", PEOPLE),
    Route("POST", "/pipelines/{run_id}/cancel", SUBMITTERS),
    Route("PUT", "/code/{digest}", SUBMITTERS, content=ARCHIVE),
    Route("GET", "/code/{digest}", PEOPLE),
    Route("GET", "/queues", PEOPLE),
    Route("PUT", "/queues/{name}", ADMIN, name="extra", body={"name": "extra"}),
    Route("DELETE", "/queues/{name}", ADMIN, name="shared"),
    Route("GET", "/cohorts", PEOPLE),
    Route("GET", "/clusters", PEOPLE),
    Route("GET", "/nodes", PEOPLE),
    Route("PUT", "/nodes/{name}", frozenset({"admin", "agent"}), name="dgx-0", body=DGX),
    Route("DELETE", "/nodes/{name}", ADMIN, name="laptop"),
    Route("POST", "/nodes/{name}/heartbeat", frozenset({"admin", "agent"}), name="dgx-0"),
    Route("GET", "/nodes/{name}/pods", frozenset({"admin", "agent"}), name="dgx-0"),
    Route("GET", "/cost", PEOPLE),
    Route("GET", "/me", ANYONE),
    Route("GET", "/tenants", ADMIN),
    Route("POST", "/tenants", ADMIN, body={"name": "robotics"}),
    Route("GET", "/users", ADMIN),
    Route("POST", "/users", ADMIN, body={"name": "carol", "tenant": "vision"}),
    Route("GET", "/tokens", ANYONE),
    Route("GET", "/services", PEOPLE),
    Route("POST", "/services", SUBMITTERS, body=SERVICE | {"name": "api"}),
    Route("GET", "/services/{name}", PEOPLE, name="web"),
    Route("POST", "/services/{name}/promote", SUBMITTERS, name="web"),
    Route("DELETE", "/services/{name}", SUBMITTERS, name="web"),
    Route("POST", "/tokens", ANYONE),
    Route("DELETE", "/tokens/{token_id}", ANYONE),
    Route("GET", "/models", PEOPLE, unavailable_here=True),
    Route("GET", "/models/{name}", PEOPLE, name="iris", unavailable_here=True),
    Route(
        "POST",
        "/models",
        SUBMITTERS,
        body={"job_id": "j-1", "path": "model", "name": "iris"},
        unavailable_here=True,
    ),
    Route(
        "PUT",
        "/models/{name}/aliases/{alias}",
        SUBMITTERS,
        name="iris",
        body={"version": 1},
        unavailable_here=True,
    ),
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
    assert lab.call(None, route.method, url, **route.send()).status_code == 401
    forged = lab.tokens["admin"][:-4] + "AAAA"
    headers = {"Authorization": f"Bearer {forged}"}
    response = lab.http.request(route.method, f"{API}{url}", headers=headers, **route.send())
    assert response.status_code == 401 and "not recognised" in response.json()["detail"]


def test_metrics_need_a_token_of_any_role(lab: Lab) -> None:
    """Any role may scrape them, so they name queues and nodes, never a job, its name or its tenant."""
    assert lab.http.get("/metrics").status_code == 401
    for user in ROLE_USERS.values():
        answer = lab.http.get("/metrics", headers={"Authorization": f"Bearer {lab.tokens[user]}"})
        assert answer.status_code == 200
        for job_id in lab.jobs.values():
            assert job_id not in answer.text
        assert "nlp" not in answer.text.replace('queue="nlp-q"', "") and "train" not in answer.text


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
@pytest.mark.parametrize("role", sorted(ROLE_USERS))
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # roles are the API's, not the store's
def test_each_route_admits_only_its_roles(lab: Lab, route: Route, role: str, caplog) -> None:
    if route.needs is not None:
        pytest.importorskip(route.needs)
    who = ROLE_USERS[role]
    before = _state(lab)
    with caplog.at_level(logging.WARNING, logger="corral.audit"):
        response = lab.call(who, route.method, route.url(lab, who), **route.send())
    if role in route.roles:
        assert response.status_code < 400 or (route.unavailable_here and response.status_code == 404), (
            response.text
        )
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


@pytest.mark.parametrize(("method", "path"), [("GET", ""), ("POST", "/cancel")])
def test_another_tenants_pipeline_run_is_not_there(lab: Lab, method: str, path: str) -> None:
    response = lab.call("bob", method, f"/pipelines/{lab.run}{path}")
    assert response.status_code == 404 and lab.run in response.json()["detail"]
    assert lab.call("bob", "GET", "/pipelines").json() == []


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
            for table in ("jobs", "queues", "tenants", "users", "tokens", "placements", "nodes", "log_chunks")
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


def _agent(lab: Lab, user: str, node: str | None) -> None:
    """Another agent user (bound to ``node``; None: made as before agents were bound), token in lab."""
    lab.tokens[user] = AccountStore(lab.store.engine).create_user(user, "default", "agent", node=node)[1]


def test_an_agent_speaks_only_for_its_own_node(lab: Lab, caplog) -> None:
    """The laptop's agent may not register, heartbeat or read the pods of dgx-0, nor report exits or ship
    output for the pod running there: each is a 403 that says whose node it is, and changes nothing."""
    _agent(lab, "laptop-agent", "laptop")
    running = lab.jobs["running"]
    before = _state(lab)
    with caplog.at_level(logging.WARNING, logger="corral.audit"):
        for method, path, body in [
            ("PUT", "/nodes/dgx-0", DGX),
            ("POST", "/nodes/dgx-0/heartbeat", None),
            ("GET", "/nodes/dgx-0/pods", None),
            ("POST", f"/jobs/{running}/pods/0/exit", {"attempt": 1, "code": 1}),
            ("POST", f"/jobs/{running}/pods/0/logs", {"attempt": 1, "offset": 0, "text": "forged\n"}),
        ]:
            response = lab.call("laptop-agent", method, path, json=body)
            assert response.status_code == 403, (path, response.text)
            assert response.json()["detail"] == "laptop-agent is the agent of node laptop, not of node dgx-0"
    assert _state(lab) == before and caplog.text.count("refused") == 5
    assert lab.call("laptop-agent", "POST", "/nodes/laptop/heartbeat").status_code == 200
    assert lab.call("laptop-agent", "GET", "/nodes/laptop/pods").json() == []
    assert (
        lab.call("agent", "POST", f"/jobs/{running}/pods/0/exit", json={"attempt": 1, "code": 0}).json()[
            "status"
        ]
        == "finished"
    )


LOOPBACK = ["127.0.0.1", "localhost", "127.1", "2130706433", "0x7f.0.0.1", "::1", "::ffff:127.0.0.1"]
NO_NODE_S = ["169.254.169.254", "fe80::1", "0.0.0.0", "::", "224.0.0.1"]


def test_an_agent_cannot_point_the_gateway_at_the_server_s_loopback_or_the_cloud_s_metadata(lab: Lab) -> None:
    """A node's address is where the gateway sends callers' requests, from the server's machine: an
    agent elsewhere (the test client is not on loopback) naming loopback would reach the server's own
    ports (MLflow's backend, the database), and 169.254.169.254 the cloud VM's credentials. Each is a
    422 that changes nothing; an address of its own network is taken, and loopback from an agent that
    connects from loopback (one on the server's machine, which reaches those ports anyway)."""
    assert (
        lab.call("agent", "POST", "/nodes/dgx-0/heartbeat", params={"address": "10.0.0.7"}).status_code == 200
    )
    for address in LOOPBACK + NO_NODE_S:
        for method, path, body in [("PUT", "/nodes/dgx-0", DGX), ("POST", "/nodes/dgx-0/heartbeat", None)]:
            refused = lab.call("agent", method, path, json=body, params={"address": address})
            assert refused.status_code == 422 and "address" in refused.json()["detail"], (
                address,
                refused.text,
            )
    assert lab.call("admin", "GET", "/nodes").json()[0]["address"] == "10.0.0.7"
    local = TestClient(lab.http.app, client=("127.0.0.1", 40000))
    for address in ["127.0.0.1", "::1", "localhost"]:
        answer = local.post(
            f"{API}/nodes/dgx-0/heartbeat",
            params={"address": address},
            headers={"Authorization": f"Bearer {lab.tokens['agent']}"},
        )
        assert answer.status_code == 200 and answer.json()["address"] == address, answer.text


def test_an_agent_made_before_binding_is_bound_to_the_first_node_it_names(lab: Lab) -> None:
    """An agent user without a node (made by an older corral) may speak for the first node it names,
    unless another agent holds it, and for no other node from then on."""
    _agent(lab, "old-agent", None)
    _agent(lab, "other-old-agent", None)
    taken = lab.call("old-agent", "POST", "/nodes/dgx-0/heartbeat")
    assert taken.status_code == 403 and taken.json()["detail"].startswith("node dgx-0 has another agent")
    assert lab.call("old-agent", "PUT", "/nodes/desk", json=LAPTOP).status_code == 200
    assert lab.call("old-agent", "GET", "/me").json()["node"] == "desk"
    moved = lab.call("old-agent", "PUT", "/nodes/laptop", json=LAPTOP)
    assert moved.status_code == 403 and "agent of node desk, not of node laptop" in moved.json()["detail"]
    assert lab.call("other-old-agent", "POST", "/nodes/desk/heartbeat").status_code == 403
    users = {u["name"]: u["node"] for u in lab.call("admin", "GET", "/users").json()}
    assert users["old-agent"] == "desk" and users["other-old-agent"] is None


def test_no_agent_speaks_for_the_servers_own_node(database_url: str) -> None:
    """The node `corral up` runs itself takes no registration (which would make it wait for heartbeats
    and go down for good), and no agent token speaks for it, even one made for it."""
    store = JobStore(open_store(database_url))
    inventory = Inventory(clusters=[make_cluster("lab", LAB_POOLS)])
    http = TestClient(create_app(store, inventory, local_nodes={"dgx-0"}))
    accounts = AccountStore(store.engine)
    tokens = {"admin": accounts.bootstrap()}
    tokens["bound"] = accounts.create_user("bound", "default", "agent", node="dgx-0")[1]
    tokens["old"] = accounts.create_user("old", "default", "agent")[1]
    lab = Lab(http, tokens, {}, store)  # type: ignore[arg-type]
    for who in ("bound", "old"):
        for method, path, body in [("PUT", "/nodes/dgx-0", DGX), ("POST", "/nodes/dgx-0/heartbeat", None)]:
            response = lab.call(who, method, path, json=body)
            assert response.status_code == 403
            assert (
                response.json()["detail"] == "node dgx-0 is run by this server itself; no agent speaks for it"
            )
    refused = lab.call("admin", "PUT", "/nodes/dgx-0", json=DGX)
    assert refused.status_code == 409 and "run by this server itself" in refused.json()["detail"]
    assert lab.call("admin", "GET", "/nodes").json()[0]["registered"] is False
    assert lab.call("old", "GET", "/me").json()["node"] is None
    store.engine.dispose()


def test_an_admin_removes_a_registration_and_its_work_is_requeued(lab: Lab) -> None:
    for tenant in ("vision", "nlp"):  # so that the laptop's one GPU is the new job's
        lab.call("admin", "POST", f"/jobs/{lab.jobs[tenant]}/cancel")
    job = lab.call("admin", "POST", "/jobs", json=JOB | {"resources": {"gpus": "RTX4090:1"}}).json()["id"]
    inventory = lab.http.app.state.control_plane.inventory  # type: ignore[attr-defined]
    reconcile(lab.store.engine, inventory, get_policy("default"), now=time.time())
    assert lab.store.placements(job)[0][1] == "laptop"
    assert lab.call("admin", "DELETE", "/nodes/laptop").status_code == 204
    reconcile(lab.store.engine, inventory, get_policy("default"), now=time.time())
    kinds = [(event.kind, event.reason) for event in lab.store.events(job)]
    assert ("node_lost", "node laptop was removed") in kinds and lab.store.placements(job) == []
    assert kinds[-1][0] == "rejected"  # requeued, and no RTX4090 is left to run it
    assert "laptop" not in {node["name"] for node in lab.call("admin", "GET", "/nodes").json()}
    missing = lab.call("admin", "DELETE", "/nodes/laptop")
    assert missing.status_code == 404 and missing.json()["detail"] == "no registration of node 'laptop'"
    declared = lab.call("admin", "DELETE", "/nodes/dgx-0")
    assert declared.status_code == 404 and "the cluster file declares it" in declared.json()["detail"]


def test_a_report_about_an_attempt_that_is_over_is_refused_and_changes_nothing(lab: Lab) -> None:
    """Fencing: the attempt number is the epoch. The job failed and runs again as attempt 2; reports
    about attempt 1 (from a pod that was cut off and kept running) are 409s that change nothing."""
    running = lab.jobs["running"]
    lab.store.finish(running, succeeded=False, reason="attempt 1 lost")
    job = lab.call("admin", "POST", "/jobs", json=JOB | {"retries": 1}).json()["id"]
    inventory = lab.http.app.state.control_plane.inventory  # type: ignore[attr-defined]
    reconcile(lab.store.engine, inventory, get_policy("default"), now=time.time())
    lab.store.finish(job, succeeded=False, reason="pod 0 exited with code 1")
    reconcile(lab.store.engine, inventory, get_policy("default"), now=time.time())
    assert (lab.store.get(job).status, lab.store.get(job).attempt) == ("running", 2)
    before = _state(lab)
    for path, body in [
        (f"/jobs/{job}/pods/0/exit", {"attempt": 1, "code": 0}),
        (f"/jobs/{job}/pods/0/logs", {"attempt": 1, "offset": 0, "text": "late output of attempt 1\n"}),
    ]:
        for who in ("agent", "admin"):
            response = lab.call(who, "POST", path, json=body)
            assert response.status_code == 409, response.text
            assert (
                response.json()["detail"] == f"job {job} runs attempt 2 now; attempt 1 is over: stop its pods"
            )
    assert _state(lab) == before
    ended = lab.call("agent", "POST", f"/jobs/{running}/pods/0/exit", json={"attempt": 1, "code": 0})
    assert ended.json()["detail"] == (
        f"job {running} is not running (it is failed after attempt 1); attempt 1 is over: stop its pods"
    )
    done = lab.call("admin", "POST", f"/jobs/{job}/pods/0/exit", json={"attempt": 2, "code": 0})
    assert done.json()["status"] == "finished"


def test_revoking_a_token_stops_it_in_every_api_process_within_a_second(lab: Lab, monkeypatch) -> None:
    """Another worker of `corral server --workers 2` (another app on the same store) trusts a token it
    checked for at most ``TOKEN_CACHE_SECONDS``, which is at most one second."""
    from corral.server import services

    other = TestClient(create_app(lab.store, Inventory(clusters=[make_cluster("lab", LAB_POOLS)])))
    token = lab.call("alice", "POST", "/tokens").json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert other.get(f"{API}/me", headers=bearer).json()["user"] == "alice"  # now in its cache
    assert lab.call("alice", "DELETE", f"/tokens/{token.split('_')[1]}").status_code == 204
    later = time.monotonic() + 1.0
    monkeypatch.setattr(services, "time", SimpleNamespace(monotonic=lambda: later))
    assert other.get(f"{API}/me", headers=bearer).status_code == 401


def test_tokens_expire(lab: Lab) -> None:
    expired = AccountStore(lab.store.engine).issue_token("alice", expires_at=time.time() - 1)
    response = lab.http.get(f"{API}/me", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401 and response.json()["detail"].startswith("token expired at ")
    made = lab.call("alice", "POST", "/tokens", params={"expires_in": 3600}).json()["token"]
    me = lab.http.get(f"{API}/me", headers={"Authorization": f"Bearer {made}"}).json()
    assert me["user"] == "alice" and 3500 < me["expires_at"] - time.time() <= 3600
    lab.tokens["short"] = made
    renewed = lab.call("short", "POST", "/tokens").json()["token"]  # cannot outlive the token that made it
    assert (
        lab.http.get(f"{API}/me", headers={"Authorization": f"Bearer {renewed}"}).json()["expires_at"]
        == (me["expires_at"])
    )
    assert lab.call("alice", "POST", "/tokens", params={"expires_in": 0}).status_code == 422
    user = lab.call("admin", "POST", "/users", json={"name": "temp", "tenant": "vision", "expires_in": 60})
    listed = {(t["user"], t["expires_at"] is None) for t in lab.call("admin", "GET", "/tokens").json()}
    assert user.status_code == 201 and ("temp", False) in listed and ("temp", True) not in listed
    assert {("alice", True), ("alice", False)} <= listed


def test_an_idempotency_key_reused_with_another_spec_is_a_conflict(lab: Lab) -> None:
    key = {"Idempotency-Key": "nightly"}
    first = lab.call("alice", "POST", "/jobs", json=JOB | {"queue": "shared"}, headers=key).json()
    before = _state(lab)
    other = lab.call(
        "alice", "POST", "/jobs", json=JOB | {"queue": "shared", "command": "rm -rf /"}, headers=key
    )
    assert other.status_code == 409
    assert other.json()["detail"] == (
        f"Idempotency-Key 'nightly' was used for job {first['id']} with a different spec; use a new key for a new job"
    )
    assert _state(lab) == before
    reordered = {"resources": {"gpus": 1}, "command": "true", "queue": "shared", "name": "train"}
    assert lab.call("alice", "POST", "/jobs", json=reordered, headers=key).json()["id"] == first["id"]


def test_a_tenant_uses_only_the_code_it_uploaded(lab: Lab) -> None:
    """bob (nlp) cannot see that vision uploaded a digest, nor name it in a job; once nlp uploads the same
    bytes it can (stored for nlp, apart from vision's)."""
    assert lab.call("bob", "GET", f"/code/{DIGEST}").status_code == 404
    refused = lab.call("bob", "POST", "/jobs", json=JOB | {"queue": "shared", "code": DIGEST})
    assert refused.status_code == 422 and "tenant nlp has not uploaded" in refused.json()["detail"]
    cut = lab.call("bob", "PUT", f"/code/{DIGEST}", content=ARCHIVE[:-1])
    assert cut.status_code == 422 and "the upload was cut or changed" in cut.json()["detail"]
    uploaded = lab.call("bob", "PUT", f"/code/{DIGEST}", content=ARCHIVE)
    assert uploaded.json() == {"digest": DIGEST, "size": len(ARCHIVE), "stored": True}
    assert lab.call("bob", "PUT", f"/code/{DIGEST}", content=ARCHIVE).json()["stored"] is False  # deduped
    accepted = lab.call("bob", "POST", "/jobs", json=JOB | {"queue": "shared", "code": DIGEST})
    assert accepted.status_code == 201, accepted.text


def test_a_tenant_s_uploads_are_bounded_and_make_room_from_code_no_job_needs(
    database_url: str, tmp_path: Path
) -> None:
    """A member cannot fill the server's disk with uploads: past its tenant's limit, the least recently
    used archives no pending or running job names make room, and an upload that only the code of live
    jobs stands in the way of is a 413 that says so."""
    store = JobStore(open_store(database_url))
    accounts = AccountStore(store.engine)
    accounts.bootstrap()
    accounts.create_tenant("vision")
    token = accounts.create_user("alice", "vision", "member")[1]
    app = create_app(
        store, Inventory(clusters=[make_cluster("lab", LAB_POOLS)]), code=CodeStore(tmp_path, 100)
    )
    http = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    first, second = b"a" * 60, b"b" * 60
    assert http.put(f"{API}/code/{digest_of(first)}", content=first).status_code == 200
    job = http.post(f"{API}/jobs", json=JOB | {"code": digest_of(first)}).json()
    refused = http.put(f"{API}/code/{digest_of(second)}", content=second)
    assert refused.status_code == 413 and "pending or running jobs need" in refused.json()["detail"]
    assert http.get(f"{API}/code/{digest_of(first)}").status_code == 200  # nothing was lost
    store.cancel(job["id"])
    assert http.put(f"{API}/code/{digest_of(second)}", content=second).status_code == 200
    assert http.get(f"{API}/code/{digest_of(first)}").status_code == 404  # removed to make room
    store.engine.dispose()
