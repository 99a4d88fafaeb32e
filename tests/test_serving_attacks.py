"""Attacks on services through a real `corral up` (local backend, real replicas): who may call a service
through the gateway, what of the caller's request a replica gets (its path and query exactly, never the
caller's credentials), malformed requests, and `kill -9` of the server while a service serves and a
pipeline runs."""

from __future__ import annotations

import random
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import admin_client, free_port, stop_pods

from corral.client import Client
from corral.limits import MAX_REQUEST_BYTES
from corral.paths import read_token
from corral.server.process import start, stop

ECHO = """
import http.server, json, os
class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        body = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                           "body": len(self.rfile.read(length)), "job": os.environ["CORRAL_JOB_ID"]})
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("set-cookie", "replica=1")
        self.end_headers()
        self.wfile.write(body.encode())
    do_GET = do_POST = answer
    def log_message(self, *arguments):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""
"""A replica that answers what it received: the path with the query, the headers, the body's length."""


def echo_service(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "service",
        "name": name,
        "command": ["python3", "-c", ECHO],
        "resources": {"cpu": 0.1, "memory": "128Mi"},
        "replicas": {"min": 1, "max": 1},
    } | fields


def until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.1)
    raise AssertionError(f"never {what}")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def corral() -> Iterator[tuple[Client, str]]:
    """`corral up` in a folder pods may pass through, with a ready echo service ``echo`` of tenant
    ``default``."""
    folder = Path(tempfile.mkdtemp(prefix="corral-serving-attacks-"))
    folder.chmod(0o1777)
    port = free_port()
    process = start(
        ["up", "--gpus", "0", "--data-dir", str(folder / "up"), "--port", str(port)], folder / "up.log", port
    )
    try:
        with admin_client(folder / "up", port) as client:
            served = client.apply_service(echo_service("echo"))
            until(lambda: answer(client, served["url"]).status_code == 200, 60, "echo answered")
            yield client, f"http://127.0.0.1:{port}"
            client.remove_service("echo")
    finally:
        stop(process)
        stop_pods(folder)
        shutil.rmtree(folder, ignore_errors=True)


def answer(client: Client, url: str, token: str | None = None) -> httpx.Response:
    token = token or client._http.headers["authorization"].removeprefix("Bearer ")
    return httpx.get(url, headers=bearer(token), timeout=30)


def test_a_replica_gets_the_path_and_query_exactly_and_never_the_callers_credentials(corral) -> None:
    """Escapes in the path (``%23``, ``%3F``, ``%00``, UTF-8) reach the replica as sent: decoded and sent
    again they had cut the path at ``#``/``?`` or failed the request with a 500. The caller's token and
    cookies stay at the gateway, and a header byte that is not ASCII is passed on, not a 500."""
    client, base = corral
    member = client.create_user("mia", tenant="default").token
    headers = bearer(member) | {"Cookie": "session=secret", "Proxy-Authorization": "Basic c2VjcmV0"}
    # Not X-Forwarded-For/-Proto: uvicorn believes them from a loopback caller (a trusted proxy).
    headers |= {"X-Real-IP": "10.6.6.6", "Forwarded": "for=10.6.6.6"}
    path = "/a%23b%3Fc%00d/%C3%A9/%25?x=%00&y=1+2&z=%F0"
    with httpx.Client(timeout=30) as http:
        got = http.get(f"{base}/services/default/echo{path}", headers=[*headers.items(), ("X-Raw", b"\xff")])
        assert got.status_code == 200, got.text
        seen = got.json()
        assert seen["path"] == path
        assert not {"authorization", "cookie", "proxy-authorization"} & set(seen["headers"])
        assert not {"x-real-ip", "forwarded"} & set(seen["headers"])  # the caller's claims stay out
        told = {name: seen["headers"][name] for name in ("x-forwarded-for", "x-forwarded-proto")}
        assert told == {"x-forwarded-for": "127.0.0.1", "x-forwarded-proto": "http"}  # the gateway's own
        assert seen["headers"]["x-raw"] == "\xff"  # as http.server reads a header: latin-1
        posted = http.post(
            f"{base}/services/default/echo/upload", headers=bearer(member), content=b"x" * 1000
        )
        assert posted.status_code == 200 and posted.json()["body"] == 1000


def test_who_may_call_a_service_through_the_gateway(corral) -> None:
    """The service's tenant's members and admins; a viewer or agent of it is a 403; another tenant's
    caller gets the 404 a missing service gets; a public service's token opens only that service and
    no API route; a revoked token is a 401; a name no service can have is a 404 without a store read."""
    client, base = corral
    url = f"{base}/services/default/echo/"
    client.create_tenant("rival")
    tokens = {
        "viewer": client.create_user("vic", tenant="default", role="viewer").token,
        "agent": client.create_user("agent-x", tenant="default", role="agent", node="elsewhere").token,
        "stranger": client.create_user("sam", tenant="rival").token,
        "revoked": client.create_user("rex", tenant="default").token,
    }
    public = client.apply_service(echo_service("open", public=True, replicas={"min": 0, "max": 1}))
    (revoked,) = [t for t in client.tokens() if t.user == "rex"]
    client.revoke_token(revoked.id)
    statuses = {who: answer(client, url, token).status_code for who, token in tokens.items()}
    assert statuses == {"viewer": 403, "agent": 403, "stranger": 404, "revoked": 401}
    assert answer(client, url, public["token"]).status_code == 401  # another service's token
    for route in ("/api/v1/jobs", "/api/v1/services", "/metrics"):
        assert httpx.get(base + route, headers=bearer(public["token"])).status_code == 401
    assert httpx.get(url).status_code == 401
    for path in ("/services/default/Echo/", "/services/a%00b/echo/", f"/services/{'x' * 70}/echo/"):
        assert httpx.get(base + path, headers=bearer(tokens["stranger"])).status_code == 404
    too_big = httpx.post(url, headers=bearer(tokens["stranger"]), content=b"x" * (MAX_REQUEST_BYTES + 1))
    assert too_big.status_code == 413
    assert answer(client, url).status_code == 200  # nothing of this stopped the service


PIPELINE_STEP = "echo {name} >> {marks}; sleep {sleep}"


def test_kill_9_while_a_service_serves_and_a_pipeline_runs_loses_nothing_and_runs_no_step_twice() -> None:
    """The server is killed -9 twice at random moments of a three-step pipeline while a service serves:
    each restart adopts the running pods, the run ends succeeded with each step run exactly once, and
    the service answers again."""
    folder = Path(tempfile.mkdtemp(prefix="corral-kill-9-"))
    folder.chmod(0o1777)
    marks = folder / "marks"
    data, port = folder / "up", free_port()
    arguments = ["up", "--gpus", "0", "--data-dir", str(data), "--port", str(port)]
    process = start(arguments, folder / "up.log", port)
    draw = random.Random()
    try:
        with admin_client(data, port) as client:
            url = client.apply_service(echo_service("steady"))["url"]
            until(lambda: answer(client, url).status_code == 200, 30, "the service answered")
            steps: dict[str, Any] = {}
            for name, needs in (("a", []), ("b", ["a"]), ("c", ["b"])):
                command = PIPELINE_STEP.format(name=name, marks=marks, sleep=1)
                steps[name] = {"command": command, "needs": needs, "resources": {"cpu": 0.1}}
            run = client.run_pipeline({"type": "pipeline", "name": "killed", "steps": steps})
            delays = []  # when each kill came after its step started: in the failures' messages
            for step in ("a", "b"):
                until(lambda step=step: step in _marks(marks), 30, f"step {step} started")
                delays.append(round(draw.uniform(0, 1.2), 2))  # before, during or after the step's end
                time.sleep(delays[-1])
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)
                process = start(arguments, folder / "up.log", port)
            with Client(f"http://127.0.0.1:{port}", token=read_token(data)) as again:
                ended = until(lambda: _ended(again, run.id), 60, "the pipeline ended")
                assert ended.status == "succeeded", (delays, ended)
                assert _marks(marks) == ["a", "b", "c"], delays  # each step once, none again after a restart
                assert until(lambda: answer(again, url).status_code == 200, 30, "the service answered")
                again.remove_service("steady")
    finally:
        stop(process)
        stop_pods(folder)
        shutil.rmtree(folder, ignore_errors=True)


def _marks(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _ended(client: Client, run_id: str) -> Any:
    run = client.pipeline(run_id)
    return run if run.status != "running" else None
