"""The gateway on its own, against real loopback servers: a replica that refuses connections is retried
once on another, a service without a ready replica holds and then answers 503 with Retry-After, and a
held request is answered as soon as a replica becomes ready."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http.server
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from servers import free_port

from corral.serving.gateway import Endpoint, Gateway

KEY = ("default", "svc")


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        body = f"{self.path} {self.headers.get('authorization')}".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *arguments: object) -> None:
        pass


@pytest.fixture(scope="module")
def replica() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_replica_that_refuses_is_retried_once_on_another(replica: str) -> None:
    async def scenario() -> None:
        failed: list[str] = []
        gateway = Gateway(CollectorRegistry(), on_failure=lambda key, job_id: failed.append(job_id))
        dead = Endpoint("j-dead", 1, f"http://127.0.0.1:{free_port()}")
        gateway.update(KEY, [dead, Endpoint("j-alive", 1, replica)], 1, None, 0.0, 0)
        gateway.route(KEY).busy["j-alive"] = 5  # the dead one has fewer outstanding: it is tried first
        answer = await gateway.forward(KEY, "GET", "/x", b"a=1", [("authorization", "Bearer secret")], b"", 5)
        assert (answer.status, answer.body) == (200, b"/x?a=1 None")  # the token stays at the gateway
        assert failed == ["j-dead"] and list(gateway.route(KEY).endpoints) == ["j-alive"]
        await gateway.close()

    asyncio.run(scenario())


def test_no_ready_replica_holds_then_503_with_retry_after() -> None:
    async def scenario() -> None:
        held: list[tuple[str, str]] = []
        gateway = Gateway(CollectorRegistry(), on_hold=held.append)
        answer = await gateway.forward(KEY, "GET", "/", b"", [], b"", 0.2)
        assert answer.status == 503 and ("retry-after", "5") in answer.headers and held == [KEY]
        await gateway.close()

    asyncio.run(scenario())


def test_a_held_request_is_answered_once_a_replica_is_ready(replica: str) -> None:
    async def scenario() -> None:
        gateway = Gateway(CollectorRegistry())
        request = asyncio.create_task(gateway.forward(KEY, "GET", "/late", b"", [], b"", 30))
        await asyncio.sleep(0.2)
        assert gateway.route(KEY).held == 1 and gateway.sample(KEY) >= 1  # the autoscaler sees it
        gateway.update(KEY, [Endpoint("j-1", 1, replica)], 1, None, 0.0, 0)
        answer = await asyncio.wait_for(request, 10)
        assert answer.status == 200 and gateway.route(KEY).held == 0
        await gateway.close()

    asyncio.run(scenario())


class SetsCookie(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        body = str(self.headers.get("cookie")).encode()
        self.send_response(200)
        self.send_header("set-cookie", "session=of-the-first-caller; Path=/")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *arguments: object) -> None:
        pass


def test_a_cookie_one_replica_sets_goes_to_no_other_request() -> None:
    """Cookies are per host, not port: kept by the gateway's client, one replica's session cookie went
    with every later request to every replica on the machine, other tenants' and other callers'."""
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), SetsCookie) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    lab, rival = (
        Endpoint(f"j-{i}", 1, f"http://127.0.0.1:{s.server_address[1]}") for i, s in enumerate(servers)
    )

    async def scenario() -> None:
        gateway = Gateway(CollectorRegistry())
        gateway.update(("lab", "a"), [lab], 1, None, 0.0, 0)
        gateway.update(("rival", "b"), [rival], 1, None, 0.0, 0)
        first = await gateway.forward(("lab", "a"), "GET", "/", b"", [], b"", 5)
        assert ("set-cookie", "session=of-the-first-caller; Path=/") in first.headers  # for its caller
        assert (await gateway.forward(("rival", "b"), "GET", "/", b"", [], b"", 5)).body == b"None"
        assert (await gateway.forward(("lab", "a"), "GET", "/", b"", [], b"", 5)).body == b"None"
        await gateway.close()

    try:
        asyncio.run(scenario())
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_a_path_is_escaped_again_for_the_replica(replica: str) -> None:
    """The server hands the gateway the decoded path: ``#``, ``?``, NUL and non-ASCII in it are escaped
    again, so the replica gets the path the caller sent (and a NUL is no 500)."""

    async def scenario() -> None:
        gateway = Gateway(CollectorRegistry())
        gateway.update(KEY, [Endpoint("j-1", 1, replica)], 1, None, 0.0, 0)
        answer = await gateway.forward(KEY, "GET", "/a#b?c\x00d/é", b"x=%00&y=\xff", [], b"", 5)
        assert (answer.status, answer.body) == (200, b"/a%23b%3Fc%00d/%C3%A9?x=%00&y=%FF None")
        await gateway.close()

    asyncio.run(scenario())


class Endless(http.server.BaseHTTPRequestHandler):
    """An answer without a length that does not end (until the connection closes), and one gzipped."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        if self.path == "/gzip":
            body = gzip.compress(b"small")
            self.send_response(200)
            self.send_header("content-encoding", "gzip")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        chunk = b"x" * 65536
        with contextlib.suppress(OSError):  # the gateway hung up: what it should do
            for _ in range(1000):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))

    def log_message(self, *arguments: object) -> None:
        pass


def test_a_replica_s_endless_answer_is_a_502_not_the_server_s_memory() -> None:
    """A replica is a tenant's code and the gateway holds answers whole: one larger than its limit is
    cut off there; an encoded answer is passed on as sent, with its own content-encoding."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    async def scenario() -> None:
        gateway = Gateway(CollectorRegistry(), max_answer_bytes=1 << 20)
        gateway.update(
            KEY, [Endpoint("j-1", 1, f"http://127.0.0.1:{server.server_address[1]}")], 1, None, 0, 0
        )
        endless = await gateway.forward(KEY, "GET", "/", b"", [], b"", 5)
        assert (endless.status, endless.body) == (502, b"the replica's answer is larger than 1 MiB\n")
        encoded = await gateway.forward(KEY, "GET", "/gzip", b"", [], b"", 5)
        assert gzip.decompress(encoded.body) == b"small" and ("content-encoding", "gzip") in encoded.headers
        await gateway.close()

    try:
        asyncio.run(scenario())
    finally:
        server.shutdown()
        server.server_close()
