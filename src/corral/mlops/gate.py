"""MLflow's REST API behind corral's tokens: an allow-list of MLflow's endpoints, each with its tenant rule.

The stock ``mlflow`` client talks to ``<server>/mlflow`` with ``MLFLOW_TRACKING_TOKEN`` (sent as
``Authorization: Bearer``). Every request is authenticated (an API token of a person, or a job token),
matched against ``ROUTES`` and checked by its rule before MLflow's own handler sees it; anything not
listed is refused (404), never passed through. For a caller that is not an admin a rule

- maps names: the experiments and registered models the caller names get their tenant's prefix on the
  way in, and lose it on the way out (``corral.mlops.names``);
- checks ids: a run, experiment, logged model or artifact path of another tenant is a 404, the answer
  for one that does not exist;
- narrows searches: a search gets a condition on the tenant's prefix, and a run search may name only
  the caller's experiments.

Admins see and write every tenant's objects under their stored names. Viewers may only read. MLflow's
handlers (its own Flask app, holding only the allowed routes) do the protocol: parsing, validation,
paging and the stores' calls.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlencode

import anyio

from corral.mlops import names
from corral.mlops.tenancy import NotFound, Owners

audit = logging.getLogger("corral.audit")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MLFLOW_ERROR_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    503: "TEMPORARILY_UNAVAILABLE",
}


@dataclass(frozen=True)
class Caller:
    """Who calls through the gate, as its rules need it."""

    name: str
    tenant: str
    admin: bool = False
    writes: bool = True
    """False for viewers: reads only."""


class Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class Call:
    """One request's parameters: its query (a GET's, an artifact's), else its JSON body."""

    in_query: bool
    path: str
    params: dict[str, Any]
    path_args: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        value = self.params.get(name)
        if self.in_query and isinstance(value, list):
            return value[0] if value else None
        return value

    def set(self, name: str, value: Any) -> None:
        self.params[name] = [value] if self.in_query else value


Rule = Callable[["Gate", Caller, Call], None]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    rule: Rule
    writes: bool
    family: str = ""
    """``experiment`` or ``model``: names in the answer lose the caller's prefix."""
    json_body: bool = True
    """Its parameters are a JSON body (unless it is a GET); False: the body is an artifact's bytes,
    passed on as they came, and the parameters are in the query."""


def _experiment_name(gate: Gate, caller: Caller, call: Call, param: str = "name") -> None:
    name = call.get(param)
    if not isinstance(name, str) or not name:
        raise Refused(400, f"{param} is required")
    call.set(param, names.stored_experiment(caller.tenant, name))


def _experiment_create(gate: Gate, caller: Caller, call: Call) -> None:
    if call.get("artifact_location"):
        raise Refused(403, "artifact_location is chosen by corral (the server's artifact store)")
    _experiment_name(gate, caller, call)


def _experiment_by_name(gate: Gate, caller: Caller, call: Call) -> None:
    _experiment_name(gate, caller, call, "experiment_name")


def _experiment_id(gate: Gate, caller: Caller, call: Call) -> None:
    gate.own_experiment(caller, call.get("experiment_id"))


def _experiment_update(gate: Gate, caller: Caller, call: Call) -> None:
    _experiment_id(gate, caller, call)
    if call.get("new_name"):
        _experiment_name(gate, caller, call, "new_name")


def _experiment_ids(gate: Gate, caller: Caller, call: Call) -> None:
    ids = call.params.get("experiment_ids") or []
    if not ids:
        raise Refused(400, "name the experiments to search (experiment_ids)")
    for experiment_id in ids:
        gate.own_experiment(caller, experiment_id)


def _search(separator: str) -> Rule:
    def rule(gate: Gate, caller: Caller, call: Call) -> None:
        call.set("filter", names.tenant_filter(caller.tenant, separator, call.get("filter")))

    return rule


def _run_id(gate: Gate, caller: Caller, call: Call) -> None:
    run_id = call.get("run_id") or call.get("run_uuid")
    gate.own_run(caller, run_id)


def _logged_model_create(gate: Gate, caller: Caller, call: Call) -> None:
    _experiment_id(gate, caller, call)
    if call.get("source_run_id"):
        gate.own_run(caller, call.get("source_run_id"))


def _logged_model(gate: Gate, caller: Caller, call: Call) -> None:
    gate.own_logged_model(caller, call.path_args["model_id"])


def _model_name(gate: Gate, caller: Caller, call: Call, param: str = "name") -> None:
    name = call.get(param)
    if not isinstance(name, str) or not name:
        raise Refused(400, f"{param} is required")
    call.set(param, names.stored_model(caller.tenant, name))


def _model_rename(gate: Gate, caller: Caller, call: Call) -> None:
    _model_name(gate, caller, call)
    _model_name(gate, caller, call, "new_name")


def _model_version_create(gate: Gate, caller: Caller, call: Call) -> None:
    _model_name(gate, caller, call)
    if call.get("run_id"):
        gate.own_run(caller, call.get("run_id"))
    if call.get("model_id"):
        gate.own_logged_model(caller, call.get("model_id"))
    gate.own_source(caller, call.get("source") or "")


def _artifact_path(gate: Gate, caller: Caller, call: Call) -> None:
    gate.own_artifact_path(caller, call.path_args["path"])


def _artifact_listing(gate: Gate, caller: Caller, call: Call) -> None:
    path = call.get("path")
    if not path:
        raise Refused(403, "list an experiment's artifacts (path=<experiment id>/...), not the root")
    gate.own_artifact_path(caller, path)


def _anyone(gate: Gate, caller: Caller, call: Call) -> None:
    """Nothing tenant-specific in it (the server's capabilities)."""


API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
MODEL_ID = r"(?P<model_id>[^/]+)"


def _route(
    method: str, path: str, rule: Rule, *, writes: bool, family: str = "", json_body: bool = True
) -> Route:
    return Route(method, re.compile(f"^{path}$"), rule, writes, family, json_body)


def _routes() -> list[Route]:
    read, write = {"writes": False}, {"writes": True}
    exp, model = {"family": "experiment"}, {"family": "model"}
    routes = [
        _route("GET", f"{API}/experiments/get-by-name", _experiment_by_name, **read, **exp),
        _route("POST", f"{API}/experiments/create", _experiment_create, **write, **exp),
        _route("POST", f"{API}/experiments/search", _search(names.EXPERIMENT_SEPARATOR), **read, **exp),
        _route("GET", f"{API}/experiments/search", _search(names.EXPERIMENT_SEPARATOR), **read, **exp),
        _route("GET", f"{API}/experiments/get", _experiment_id, **read, **exp),
        _route("POST", f"{API}/experiments/update", _experiment_update, **write, **exp),
        _route("POST", f"{API}/runs/create", _experiment_id, **write),
        _route("POST", f"{API}/runs/search", _experiment_ids, **read),
        _route("POST", f"{API}/logged-models", _logged_model_create, **write),
        _route("POST", f"{API}/logged-models/search", _experiment_ids, **read),
        _route("GET", f"{API}/logged-models/{MODEL_ID}", _logged_model, **read),
        _route("GET", f"{API}/logged-models/{MODEL_ID}/artifacts/directories", _logged_model, **read),
        _route("PATCH", f"{API}/logged-models/{MODEL_ID}", _logged_model, **write),
        _route("DELETE", f"{API}/logged-models/{MODEL_ID}", _logged_model, **write),
        _route("PATCH", f"{API}/logged-models/{MODEL_ID}/tags", _logged_model, **write),
        _route("DELETE", f"{API}/logged-models/{MODEL_ID}/tags/[^/]+", _logged_model, **write),
        _route("POST", f"{API}/logged-models/{MODEL_ID}/params", _logged_model, **write),
        _route("GET", f"{API}/registered-models/search", _search(names.MODEL_SEPARATOR), **read, **model),
        _route("GET", f"{API}/model-versions/search", _search(names.MODEL_SEPARATOR), **read, **model),
        _route("POST", f"{API}/registered-models/rename", _model_rename, **write, **model),
        _route("POST", f"{API}/model-versions/create", _model_version_create, **write, **model),
        _route("GET", ARTIFACTS, _artifact_listing, **read),
        _route("GET", f"{ARTIFACTS}/(?P<path>.+)", _artifact_path, **read),
        _route("PUT", f"{ARTIFACTS}/(?P<path>.+)", _artifact_path, **write, json_body=False),
        _route("DELETE", f"{ARTIFACTS}/(?P<path>.+)", _artifact_path, **write, json_body=False),
        _route("GET", "/api/3.0/mlflow/server-info", _anyone, **read),
    ]
    for name in ("delete", "restore", "set-experiment-tag", "delete-experiment-tag"):
        routes.append(_route("POST", f"{API}/experiments/{name}", _experiment_id, **write, **exp))
    run_writes = ("update", "delete", "restore", "log-metric", "log-parameter", "set-tag", "delete-tag")
    for name in (*run_writes, "log-batch", "log-model", "log-inputs", "outputs"):
        routes.append(_route("POST", f"{API}/runs/{name}", _run_id, **write))
    for path in ("runs/get", "metrics/get-history", "artifacts/list"):
        routes.append(_route("GET", f"{API}/{path}", _run_id, **read))
    named_reads = [
        ("GET", "registered-models/get"),
        ("GET", "registered-models/get-latest-versions"),
        ("POST", "registered-models/get-latest-versions"),
        ("GET", "model-versions/get"),
        ("GET", "model-versions/get-download-uri"),
        ("GET", "registered-models/alias"),
    ]
    named_writes = [
        ("POST", "registered-models/create"),
        ("PATCH", "registered-models/update"),
        ("DELETE", "registered-models/delete"),
        ("PATCH", "model-versions/update"),
        ("POST", "model-versions/transition-stage"),
        ("DELETE", "model-versions/delete"),
        ("POST", "registered-models/set-tag"),
        ("POST", "model-versions/set-tag"),
        ("DELETE", "registered-models/delete-tag"),
        ("DELETE", "model-versions/delete-tag"),
        ("POST", "registered-models/alias"),
        ("DELETE", "registered-models/alias"),
    ]
    routes += [_route(m, f"{API}/{p}", _model_name, **read, **model) for m, p in named_reads]
    routes += [_route(m, f"{API}/{p}", _model_name, **write, **model) for m, p in named_writes]
    return routes


ROUTES = _routes()
"""Everything the gate lets through; the Flask app behind it holds these routes only."""


def find_route(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    for route in ROUTES:
        if route.method == method and (match := route.pattern.match(path)):
            return route, match.groupdict()
    return None


class Gate:
    """The ASGI app mounted at ``/mlflow``: authenticate, allow, check, then MLflow's handler."""

    def __init__(
        self,
        wsgi_app: Any,
        owners: Owners,
        authenticate: Callable[[str], Caller],
        room: Callable[[str, int], None] | None = None,
    ) -> None:
        """``authenticate`` returns the caller of a bearer token or raises ``Refused`` (401/403); ``room``
        refuses (413) an artifact upload of so many bytes that the tenant has no room for (None: no
        quota, artifacts kept elsewhere than the server's disk)."""
        self.wsgi_app = wsgi_app
        self.owners = owners
        self.authenticate = authenticate
        self.room = room

    def own_experiment(self, caller: Caller, experiment_id: Any) -> None:
        if not isinstance(experiment_id, str) or not experiment_id:
            raise Refused(400, "experiment_id is required")
        try:
            owner = self.owners.experiment(experiment_id)
        except NotFound:
            owner = None
        if owner != caller.tenant:
            raise Refused(404, f"no experiment {experiment_id!r}")

    def own_run(self, caller: Caller, run_id: Any) -> None:
        if not isinstance(run_id, str) or not run_id:
            raise Refused(400, "run_id is required")
        try:
            experiment_id = self.owners.run_experiment(run_id)
            self.own_experiment(caller, experiment_id)
        except (NotFound, Refused):
            raise Refused(404, f"no run {run_id!r}") from None

    def own_logged_model(self, caller: Caller, model_id: Any) -> None:
        try:
            self.own_experiment(caller, self.owners.logged_model_experiment(str(model_id)))
        except (NotFound, Refused):
            raise Refused(404, f"no logged model {model_id!r}") from None

    def own_artifact_path(self, caller: Caller, path: str) -> None:
        experiment_id, _, rest = path.strip("/").partition("/")
        if ".." in rest.split("/") or not experiment_id.isdigit():
            raise Refused(404, f"no artifact {path!r}")
        try:
            self.own_experiment(caller, experiment_id)
        except Refused:
            raise Refused(404, f"no artifact {path!r}") from None

    def own_source(self, caller: Caller, source: str) -> None:
        """A model version's source must be the caller's: their run's or logged model's artifacts."""
        if source.startswith("models:/m-"):
            self.own_logged_model(caller, source.removeprefix("models:/").split("/")[0])
        elif source.startswith("runs:/"):
            self.own_run(caller, source.removeprefix("runs:/").split("/")[0])
        elif source.startswith("mlflow-artifacts:/"):
            self.own_artifact_path(caller, source.removeprefix("mlflow-artifacts:/"))
        else:
            raise Refused(
                403, "a model version's source must be one of your runs' or logged models' artifacts"
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"].removeprefix(scope.get("root_path", ""))
        method = scope["method"]
        caller: Caller | None = None
        try:
            caller = await anyio.to_thread.run_sync(self.authenticate, _bearer(scope))
            found = find_route(method, path)
            if found is None:
                raise Refused(404, f"{method} {path} is not offered through corral (docs/mlops.md)")
            route, path_args = found
            if route.writes and not caller.writes:
                raise Refused(403, f"{caller.name} is a viewer: reading only")
            if "\x00" in path:
                raise Refused(400, "the path holds a NUL character")
            body = await _body(receive)
            in_query = method == "GET" or not route.json_body
            call = Call(in_query, path, _params(in_query, scope, body), path_args)
            if caller.admin:
                await self._forward(scope, path, body, send, None, route)
                return
            await anyio.to_thread.run_sync(route.rule, self, caller, call)
            if method == "PUT" and not route.json_body and self.room is not None:
                await anyio.to_thread.run_sync(self.room, caller.tenant, len(body))
            if in_query:
                scope = dict(scope, query_string=urlencode(call.params, doseq=True).encode())
            else:
                body = json.dumps(call.params).encode()
            await self._forward(scope, path, body, send, caller, route)
        except Refused as refusal:
            who = caller.name if caller else "anonymous"
            audit.warning("refused %s %s for %s: %d %s", method, path, who, refusal.status, refusal.detail)
            await _problem(send, refusal.status, refusal.detail)

    async def _forward(
        self, scope: Scope, path: str, body: bytes, send: Send, caller: Caller | None, route: Route
    ) -> None:
        status, headers, chunks = await anyio.to_thread.run_sync(_call_wsgi, self.wsgi_app, scope, path, body)
        content_type = dict(headers).get("content-type", "")
        if caller is not None and route.family and content_type.startswith("application/json"):
            separator = names.EXPERIMENT_SEPARATOR if route.family == "experiment" else names.MODEL_SEPARATOR
            data = b"".join(chunks)
            try:
                document = _strip_names(json.loads(data), caller.tenant, separator)
                data = json.dumps(document).encode()
            except ValueError:
                pass
            headers = [(k, v) for k, v in headers if k != "content-length"]
            headers.append(("content-length", str(len(data))))
            chunks = iter([data])
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            }
        )
        sentinel = b""
        while True:
            chunk = await anyio.to_thread.run_sync(next, chunks, sentinel)
            if chunk is sentinel:
                break
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _strip_names(document: Any, tenant: str, separator: str) -> Any:
    if isinstance(document, dict):
        return {
            key: names.shown(value, tenant, separator)
            if key == "name" and isinstance(value, str)
            else _strip_names(value, tenant, separator)
            for key, value in document.items()
        }
    if isinstance(document, list):
        return [_strip_names(item, tenant, separator) for item in document]
    return document


def _bearer(scope: Scope) -> str:
    header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refused(401, "no token: set MLFLOW_TRACKING_TOKEN to a corral API token (or a job's token)")
    return token.strip()


async def _body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


def _params(in_query: bool, scope: Scope, body: bytes) -> dict[str, Any]:
    """The request's parameters; a NUL character anywhere in them is refused, since PostgreSQL cannot
    store one (MLflow's store would fail with a 500) and no MLflow name or value needs it."""
    if in_query:
        query = scope["query_string"].decode("latin-1")
        params = parse_qs(query, keep_blank_values=True)
        if any("\x00" in key or any("\x00" in v for v in values) for key, values in params.items()):
            raise Refused(400, "the query holds a NUL character")
        return params
    if not body.strip():
        return {}
    try:
        params = json.loads(body)
    except RecursionError:
        raise Refused(400, "the body's JSON is nested too deeply") from None
    except ValueError:
        raise Refused(400, "the body is not JSON") from None
    if not isinstance(params, dict):
        raise Refused(400, "the body is not a JSON object")
    _check_values(params)
    return params


MAX_DEPTH = 32
"""How deeply a request's JSON may nest: MLflow's requests nest a few levels (a run's tags in a batch)."""


def _check_values(document: Any) -> None:
    """Refuse a document nested deeper than ``MAX_DEPTH`` or holding a NUL character (walked without
    recursion, so a deep one cannot exhaust the stack)."""
    pending = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise Refused(400, f"the body's JSON is nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, str) and "\x00" in value:
            raise Refused(400, "the body holds a NUL character")
        if isinstance(value, dict):
            pending += [(key, depth + 1) for key in value] + [(item, depth + 1) for item in value.values()]
        elif isinstance(value, list):
            pending += [(item, depth + 1) for item in value]


async def _problem(send: Send, status: int, detail: str) -> None:
    body = {
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        # What MLflow's client reads, so its exception says why too.
        "error_code": MLFLOW_ERROR_CODES.get(status, "BAD_REQUEST"),
        "message": detail,
    }
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(data)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _call_wsgi(
    app: Any, scope: Scope, path: str, body: bytes
) -> tuple[int, list[tuple[str, str]], Iterable[bytes]]:
    """Call a WSGI app (MLflow's Flask app) with one request; its answer's body as an iterator."""
    host, port = scope.get("server") or ("127.0.0.1", 80)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": host,
        "SERVER_PORT": str(port),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in scope["headers"]:
        key = name.decode("latin-1").upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if key == "CONTENT_TYPE":
                environ[key] = value.decode("latin-1")
            continue
        if key != "AUTHORIZATION":  # MLflow never needs the caller's token
            environ[f"HTTP_{key}"] = value.decode("latin-1")
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        answer["status"] = int(status.split(" ", 1)[0])
        answer["headers"] = [(k.lower(), v) for k, v in headers]

    chunks = app(environ, start_response)
    return answer["status"], answer["headers"], iter(chunks)


def mlflow_app() -> Any:
    """MLflow's own Flask app, holding only the routes the gate lets through (and their handlers)."""
    from flask import Flask
    from mlflow.server.handlers import get_endpoints

    app = Flask("corral-mlflow")
    for path, handler, methods in get_endpoints():
        sample = re.sub(r"<path:[^>]+>", "1/x", re.sub(r"<(?!path:)[^>]+>", "x", path))
        allowed = [method for method in methods if find_route(method, sample) is not None]
        if allowed:
            app.add_url_rule(path, f"{path} {allowed}", handler, methods=allowed)
    return app
