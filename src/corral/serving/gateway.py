"""The gateway: an async reverse proxy in the server's own event loop that sends a service's requests to
its ready replicas.

Why in the server process and not a process of its own: the controller that decides which replicas are
ready runs on the same event loop, so the routing table is plain memory, changed without locks or a
second protocol, and a request held while a service scales from zero is woken the moment a replica
becomes ready. One more hop (the server) costs a loopback round trip; httpx's pooled connections keep
it under a millisecond. The price is that it needs the server without ``--workers`` (one process).

What it does with a request:

- picks a revision by the traffic split (stable/canary), then the replica of that revision with the
  fewest requests outstanding;
- with no ready replica, **holds** the request (counted as in flight, so the autoscaler sees it) until
  one is ready or the service's ``hold_timeout`` passes, then answers 503 with ``Retry-After``;
- when the connection to the replica fails before any response began (refused, reset, closed without a
  status line), takes the replica out of rotation and tries the request once more on another;
- when a canary answers 5xx, sends the request once to the stable revision, whose answer the caller gets:
  a revision on trial costs no request the old one could serve (the 5xx still counts against it);
- proves itself to each replica with the replica's secret (``X-Corral-Replica-Token``), which the
  built-in runtimes require, so a local process that reaches a replica's port cannot bypass the
  gateway's authentication;
- measures concurrency as requests in flight integrated over time, which the controller samples.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.cookiejar import Cookie, CookieJar, CookiePolicy
from urllib.parse import quote
from urllib.request import Request

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

ServiceKey = tuple[str, str]
"""(tenant, name)."""
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
    }
)
REPLICA_TOKEN_HEADER = "x-corral-replica-token"
NOT_FORWARDED = (
    HOP_BY_HOP
    | {"authorization", "cookie", REPLICA_TOKEN_HEADER}
    | {"forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip"}
)
"""Never sent to a replica: the caller's corral token (replicas are untrusted code), browser cookies, a
replica token of the caller's (the gateway sends the replica's own), and what a caller may claim about
where it is (the gateway says that itself: ``forwarded_for``)."""
RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)
"""Failures before any response began: the replica never answered, so the request may go elsewhere."""
RETRY_AFTER_SECONDS = 5
MAX_ANSWER_BYTES = 64 << 20
"""The most of one replica's answer the gateway holds: answers are held whole in the server's memory,
and a replica is a tenant's code (an endless answer would exhaust the server's memory for everyone)."""
PATH_SAFE = "/:@!$&'()*+,;=~"
"""What a path segment may hold unescaped (RFC 3986 pchar): the rest of a decoded path is escaped again."""
QUERY_SAFE = PATH_SAFE + "?%"
"""The query arrives still escaped: its ``%`` escapes stay, anything a URL may not hold is escaped."""


@dataclass
class Endpoint:
    job_id: str
    revision: int
    url: str
    secret: str | None = None
    """Sent in ``X-Corral-Replica-Token``; None: nothing is sent (a replica made before secrets)."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class RevisionCounts:
    requests: int = 0
    errors: int = 0


@dataclass
class Route:
    """One service's routing table and traffic figures."""

    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    stable: int | None = None
    canary: int | None = None
    canary_share: float = 0.0
    in_flight: int = 0
    held: int = 0
    counts: dict[int, RevisionCounts] = field(default_factory=dict)
    busy: dict[str, int] = field(default_factory=dict)
    """Requests each replica is answering, also after it left the rotation (a draining one)."""
    starting: int = 0
    """Replicas that exist but are not ready (for /metrics)."""
    _area: float = 0.0
    _since: float = 0.0
    _sampled_at: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def _account(self, now: float) -> None:
        self._area += self.in_flight * (now - self._since)
        self._since = now

    def pick(self, exclude: set[str], draw: float, only: int | None = None) -> Endpoint | None:
        """The replica for the next request: a revision by the split (or revision ``only``, and None
        without a ready one), then the least outstanding."""
        candidates = [
            e for e in self.endpoints.values() if e.job_id not in exclude and only in (None, e.revision)
        ]
        if not candidates:
            return None
        revision = self.canary if self.canary is not None and draw < self.canary_share else self.stable
        of_revision = [e for e in candidates if e.revision == revision] or candidates
        return min(of_revision, key=lambda e: self.busy.get(e.job_id, 0))


class KeepNoCookies(CookiePolicy):
    """The gateway's client keeps no cookie a replica sets: cookies are per host, not per port, so one
    kept from a replica on 127.0.0.1 would go with every later request to every replica, another
    tenant's included, on behalf of every caller. A replica's ``Set-Cookie`` still reaches its caller."""

    netscape = True
    rfc2965 = False
    hide_cookie2 = False

    def set_ok(self, cookie: Cookie, request: Request) -> bool:
        return False

    def return_ok(self, cookie: Cookie, request: Request) -> bool:
        return False

    def domain_return_ok(self, domain: str, request: Request) -> bool:
        return False

    def path_return_ok(self, path: str, request: Request) -> bool:
        return False


class Gateway:
    def __init__(
        self,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.monotonic,
        on_hold: Callable[[ServiceKey], None] = lambda key: None,
        on_failure: Callable[[ServiceKey, str], None] = lambda key, job_id: None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        """``on_hold``: a request is waiting for a replica (wake the controller); ``on_failure``: a
        replica's connection failed (the controller probes it again before it takes traffic);
        ``max_answer_bytes``: the most of a replica's answer the gateway holds (502 beyond)."""
        self.max_answer_bytes = max_answer_bytes
        self.routes: dict[ServiceKey, Route] = {}
        self.clock = clock
        self.on_hold = on_hold
        self.on_failure = on_failure
        self.random = random.Random()
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(300.0, connect=2.0),
            limits=httpx.Limits(max_connections=1000),
            cookies=CookieJar(policy=KeepNoCookies()),
        )
        self.requests = Counter(
            "corral_service_requests",
            "Requests through the gateway, by service, revision and status code (503: none ready in time).",
            ["service", "revision", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "corral_service_request_seconds",
            "Time from a request's arrival at the gateway to its answer, holding included.",
            ["service"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        registry.register(_RouteCollector(self))

    def route(self, key: ServiceKey) -> Route:
        route = self.routes.get(key)
        if route is None:
            now = self.clock()
            route = self.routes[key] = Route(_since=now, _sampled_at=now)
        return route

    def update(
        self,
        key: ServiceKey,
        endpoints: Iterable[Endpoint],
        stable: int | None,
        canary: int | None,
        canary_share: float,
        starting: int,
    ) -> None:
        """The controller's view of the service: its ready replicas and the traffic split."""
        route = self.route(key)
        wanted = {e.job_id: e for e in endpoints}
        for job_id in list(route.endpoints):
            if job_id not in wanted:
                del route.endpoints[job_id]
        for job_id, endpoint in wanted.items():
            route.endpoints.setdefault(job_id, endpoint)
        route.stable, route.canary, route.canary_share, route.starting = (
            stable,
            canary,
            canary_share,
            starting,
        )
        if route.endpoints:
            route.changed.set()

    def promote(self, key: ServiceKey, revision: int) -> None:
        """Every request to ``revision`` from now on (the controller drains the old one next tick)."""
        route = self.route(key)
        route.stable, route.canary, route.canary_share = revision, None, 0.0

    def forget(self, key: ServiceKey) -> None:
        route = self.routes.pop(key, None)
        if route is not None:
            route.changed.set()  # held requests give up at once: 503

    def outstanding(self, key: ServiceKey, job_id: str) -> int:
        """Requests a (draining) replica still answers: it is stopped only at 0."""
        route = self.routes.get(key)
        return 0 if route is None else route.busy.get(job_id, 0)

    def sample(self, key: ServiceKey) -> float:
        """Average requests in flight (held ones included) since the last sample."""
        route = self.route(key)
        now = self.clock()
        route._account(now)
        elapsed = now - route._sampled_at
        average = route._area / elapsed if elapsed > 0 else float(route.in_flight)
        route._area, route._sampled_at = 0.0, now
        return max(average, float(route.held))

    def counts(self, key: ServiceKey, revision: int) -> RevisionCounts:
        return self.route(key).counts.setdefault(revision, RevisionCounts())

    async def forward(
        self,
        key: ServiceKey,
        method: str,
        path: str,
        query: bytes,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        hold_timeout: float,
        told: Iterable[tuple[str, str]] = (),
    ) -> Answer:
        """Send one request to the service ``key``; see the module docstring. ``told``: headers the
        gateway itself adds (``forwarded_for``)."""
        route = self.route(key)
        start = self.clock()
        route._account(start)
        route.in_flight += 1
        name = f"{key[0]}/{key[1]}"
        sent = [(k, v.encode("latin-1")) for k, v in headers if k.lower() not in NOT_FORWARDED]
        sent += [(k, v.encode("latin-1")) for k, v in told]
        if not any(k.lower() == "accept-encoding" for k, _ in sent):
            sent.append(("accept-encoding", b"identity"))  # not httpx's gzip: the body is passed on as sent
        try:
            answer, revision = await self._send(
                key, route, method, path, query, sent, body, start + hold_timeout
            )
        finally:
            route._account(self.clock())
            route.in_flight -= 1
        self.requests.labels(name, str(revision) if revision is not None else "", str(answer.status)).inc()
        self.latency.labels(name).observe(self.clock() - start)
        return answer

    def _count(self, key: ServiceKey, revision: int, error: bool) -> None:
        """One request a revision was sent (each try counts, for the error rates rollbacks compare)."""
        counts = self.counts(key, revision)
        counts.requests += 1
        counts.errors += error

    async def _send(
        self,
        key: ServiceKey,
        route: Route,
        method: str,
        path: str,
        query: bytes,
        headers: list[tuple[str, bytes]],
        body: bytes,
        deadline: float,
    ) -> tuple[Answer, int | None]:
        tried: set[str] = set()
        while True:
            endpoint = route.pick(tried, self.random.random())
            if endpoint is None:
                if not await self._hold(key, route, deadline):
                    return _unavailable(key), None
                continue
            tried.add(endpoint.job_id)
            try:
                answer = await self._try(key, route, endpoint, method, path, query, headers, body)
            except RETRYABLE as error:
                log.info("replica %s of %s/%s failed before answering: %s", endpoint.job_id, *key, error)
                route.endpoints.pop(endpoint.job_id, None)
                self.on_failure(key, endpoint.job_id)
                if len(tried) > 1:
                    return _failed("replicas failed before answering"), endpoint.revision
                continue
            except AnswerTooLarge as error:
                return _failed(str(error)), endpoint.revision
            except httpx.HTTPError as error:
                return _failed(f"replica failed: {error}"), endpoint.revision
            on_trial = endpoint.revision != route.stable  # a canary, or one rolled back meanwhile
            if answer.status >= 500 and on_trial:
                stable = route.pick(tried, 1.0, only=route.stable)
                if stable is not None:
                    try:
                        return await self._try(
                            key, route, stable, method, path, query, headers, body
                        ), stable.revision
                    except (httpx.HTTPError, AnswerTooLarge) as error:
                        log.info(
                            "replica %s of %s/%s failed after the canary: %s", stable.job_id, *key, error
                        )
            return answer, endpoint.revision

    async def _try(
        self,
        key: ServiceKey,
        route: Route,
        endpoint: Endpoint,
        method: str,
        path: str,
        query: bytes,
        headers: list[tuple[str, bytes]],
        body: bytes,
    ) -> Answer:
        """Send the request to one replica, counted against its revision (failures included)."""
        route.busy[endpoint.job_id] = route.busy.get(endpoint.job_id, 0) + 1
        if endpoint.secret is not None:
            headers = [*headers, (REPLICA_TOKEN_HEADER, endpoint.secret.encode("latin-1"))]
        try:
            request = self.client.build_request(
                method, _url(endpoint, path, query), headers=headers, content=body
            )
            response = await self.client.send(request, stream=True)
            try:
                content = await _read(response, self.max_answer_bytes)
            finally:
                await response.aclose()
        except (httpx.HTTPError, AnswerTooLarge):
            self._count(key, endpoint.revision, error=True)
            raise
        finally:
            route.busy[endpoint.job_id] -= 1
            if not route.busy[endpoint.job_id]:
                del route.busy[endpoint.job_id]
        self._count(key, endpoint.revision, error=response.status_code >= 500)
        kept = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in HOP_BY_HOP]
        return Answer(response.status_code, kept, content)

    async def _hold(self, key: ServiceKey, route: Route, deadline: float) -> bool:
        """Wait for a ready replica; False once ``deadline`` passed or the service went away."""
        remaining = deadline - self.clock()
        if remaining <= 0 or self.routes.get(key) is not route:
            return False
        route.held += 1
        route.changed.clear()
        self.on_hold(key)
        try:
            await asyncio.wait_for(route.changed.wait(), remaining)
        except TimeoutError:
            return False
        finally:
            route.held -= 1
        return self.routes.get(key) is route

    async def close(self) -> None:
        await self.client.aclose()


def _failed(text: str) -> Answer:
    return Answer(502, [("content-type", "text/plain")], f"{text}\n".encode())


class AnswerTooLarge(Exception):
    """A replica's answer is past ``max_answer_bytes``: the caller gets a 502, the server keeps its memory."""


async def _read(response: httpx.Response, limit: int) -> bytes:
    """The answer's body as the replica sent it (still encoded, as its headers say), at most ``limit``
    bytes: read no further than that (``AnswerTooLarge``)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > limit:
            raise AnswerTooLarge(f"the replica's answer is larger than {limit >> 20} MiB")
        parts.append(chunk)
    return b"".join(parts)


def forwarded_for(client: str | None, scheme: str, host: str | None) -> list[tuple[str, str]]:
    """What a replica is told about its caller, by the gateway and not by the caller: the address the
    server saw (uvicorn's, which trusts a proxy's ``X-Forwarded-For`` only from ``--forwarded-allow-ips``),
    the scheme and the host it was called at."""
    told = [("x-forwarded-proto", scheme)] + ([("x-forwarded-host", host)] if host else [])
    return ([("x-forwarded-for", client)] if client else []) + told


def _url(endpoint: Endpoint, path: str, query: bytes) -> httpx.URL:
    """The replica's URL for a request's path (as the server decoded it) and raw query: escaped again, so
    a ``%23`` or ``%3F`` in the path reaches the replica as one and a ``%00`` or a stray byte is sent
    escaped instead of failing the request."""
    url = httpx.URL(endpoint.url + quote(path, safe=PATH_SAFE))
    return url.copy_with(query=quote(query, safe=QUERY_SAFE).encode()) if query else url


def _unavailable(key: ServiceKey) -> Answer:
    text = f"service {key[0]}/{key[1]} has no ready replica within its hold_timeout; try again shortly\n"
    return Answer(
        503, [("content-type", "text/plain"), ("retry-after", str(RETRY_AFTER_SECONDS))], text.encode()
    )


class _RouteCollector(Collector):
    """Concurrency and replicas per service, read from the routing table when scraped."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterable[GaugeMetricFamily]:
        concurrency = GaugeMetricFamily(
            "corral_service_concurrency",
            "Requests in flight at the gateway, held ones included.",
            labels=["service"],
        )
        replicas = GaugeMetricFamily(
            "corral_service_replicas",
            "Replicas by state (ready: taking traffic).",
            labels=["service", "state"],
        )
        for (tenant, name), route in list(self.gateway.routes.items()):
            concurrency.add_metric([f"{tenant}/{name}"], route.in_flight)
            replicas.add_metric([f"{tenant}/{name}", "ready"], len(route.endpoints))
            replicas.add_metric([f"{tenant}/{name}", "starting"], route.starting)
        yield concurrency
        yield replicas
