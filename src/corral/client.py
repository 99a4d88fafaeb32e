"""The Python SDK: ``corral.Client(url, token)`` with the CLI's verbs, over httpx.

from corral.client import Client
client = Client()                       # CORRAL_URL, else http://127.0.0.1:8765; CORRAL_TOKEN, else
                                        # (for a server on this machine only) the token `corral up`
                                        # wrote in the default data directory
job = client.submit("jobs/train.yaml")  # a path, a dict or a JobSpec
client.job(job.id).status, client.why(job.id).reason
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from corral.api_models import (
    Artifact,
    CodeUpload,
    Cohort,
    Job,
    JobEventOut,
    Me,
    NewToken,
    NodeRegistration,
    NodeState,
    QueueState,
    Spend,
    TokenInfo,
    UserInfo,
    Why,
)
from corral.backends.pods import DesiredPod
from corral.cleartext import is_loopback, warn_if_cleartext
from corral.errors import CorralError
from corral.paths import read_token
from corral.pipelines.status import PipelineRun
from corral.spec.job import JobSpec, load_job_spec
from corral.spec.pipeline import PipelineSpec, load_pipeline_spec
from corral.workdirs import PackedFolder, pack

DEFAULT_URL = "http://127.0.0.1:8765"
API_PREFIX = "/api/v1"


class APIError(CorralError):
    """The server refused a request; ``status`` is the HTTP status, the message its explanation."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{detail} (HTTP {status})")
        self.status = status
        self.detail = detail


class ServerUnreachable(CorralError):
    """No answer from the server: nothing listens at the URL, or it did not answer in time. The message
    names the URL and how to point the client elsewhere."""

    def __init__(self, url: str, error: httpx.TransportError) -> None:
        cause = str(error) or type(error).__name__
        super().__init__(
            f"cannot reach a corral server at {url} ({cause}): start one with `corral up`, "
            "or point the CLI at yours with --url URL or CORRAL_URL"
        )
        self.url = url


def server_url(url: str | None = None) -> str:
    """The server's base URL: ``url``, else ``CORRAL_URL``, else the default; with or without the
    ``/api/v1`` that `corral up` prints (both are what users paste)."""
    chosen = (url or os.environ.get("CORRAL_URL") or DEFAULT_URL).rstrip("/")
    return chosen.removesuffix(API_PREFIX).rstrip("/")


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = server_url(url)
        self.timeout = timeout
        # The default data dir's token is the local server's admin: only a server on this machine gets it.
        token = token or os.environ.get("CORRAL_TOKEN") or (read_token() if is_loopback(self.url) else None)
        if token:
            warn_if_cleartext(self.url)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=f"{self.url}{API_PREFIX}", headers=headers, timeout=timeout)

    def health(self) -> bool:
        try:
            return self._call("GET", "/health").get("status") == "ok"
        except (ServerUnreachable, APIError):
            return False

    def submit(
        self, spec: JobSpec | dict[str, Any] | str | Path, *, idempotency_key: str | None = None
    ) -> Job:
        """Submit a job; with ``idempotency_key`` a retry after a lost answer returns the same job. A
        spec file's relative ``workdir`` (``.``: the file's folder) is a folder on this machine: it is
        packed and uploaded (``ship_workdir``) and the job runs in copies of it."""
        if isinstance(spec, str | Path):
            path = Path(spec)
            spec = self.ship_workdir(load_job_spec(path), path.parent)
        body = spec.model_dump(mode="json") if isinstance(spec, JobSpec) else spec
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return Job.model_validate(self._call("POST", "/jobs", json=body, headers=headers))

    def ship_workdir(self, spec: JobSpec, base: Path, *, local: bool = False) -> JobSpec:
        """``spec`` with its workdir uploaded as ``code``, when the workdir is relative (to ``base``) or
        ``local`` says it names a folder on this machine; else as it is (a folder on the node)."""
        if spec.workdir is None or not (local or not Path(spec.workdir).expanduser().is_absolute()):
            return spec
        packed = pack(base / Path(spec.workdir).expanduser())
        self.upload_code(packed)
        return spec.model_copy(update={"workdir": None, "code": packed.digest})

    def jobs(self, *, status: str | None = None, queue: str | None = None, limit: int = 100) -> list[Job]:
        params = {
            k: v for k, v in {"status": status, "queue": queue, "limit": limit}.items() if v is not None
        }
        return [Job.model_validate(j) for j in self._call("GET", "/jobs", params=params)]

    def job(self, job_id: str) -> Job:
        return Job.model_validate(self._call("GET", f"/jobs/{job_id}"))

    def why(self, job_id: str) -> Why:
        return Why.model_validate(self._call("GET", f"/jobs/{job_id}/why"))

    def events(self, job_id: str) -> list[JobEventOut]:
        return [JobEventOut.model_validate(e) for e in self._call("GET", f"/jobs/{job_id}/events")]

    def logs(
        self, job_id: str, pod: int = 0, offset: int = 0, *, limit: int | None = None, tail: int | None = None
    ) -> str:
        """A pod's output from its latest run: from byte ``offset`` on (or its last ``tail`` lines), at
        most ``limit`` bytes."""
        return self.log_range(job_id, pod, offset, limit=limit, tail=tail).text

    def log_range(
        self,
        job_id: str,
        pod: int = 0,
        offset: int = 0,
        *,
        limit: int | None = None,
        tail: int | None = None,
        attempt: int | None = None,
    ) -> LogText:
        """Like ``logs``, with which bytes were sent: ``end`` is the ``offset`` to resume from;
        ``attempt``: that run's output (1: the first) instead of the latest's."""
        params = {"pod": pod, "offset": offset, "limit": limit, "tail": tail, "attempt": attempt}
        response = self._response(
            "GET", f"/jobs/{job_id}/logs", params={k: v for k, v in params.items() if v is not None}
        )
        headers = response.headers
        return LogText(
            text=response.text,
            start=int(headers["x-log-start"]),
            end=int(headers["x-log-end"]),
            length=int(headers["x-log-length"]),
            truncated_before=int(headers["x-log-truncated-before"]),
        )

    def follow_logs(
        self, job_id: str, pod: int = 0, *, offset: int = 0, tail: int | None = None
    ) -> Iterator[str]:
        """A pod's output as the server streams it, new output as it is written, until the job ends (a
        resumed job's new attempt announced with a rule line)."""
        params = {"pod": pod, "offset": offset, "follow": True} | ({"tail": tail} if tail is not None else {})
        timeout = httpx.Timeout(self._http.timeout.connect, read=None)  # quiet while the job is
        with (
            self._reaching(),
            self._http.stream("GET", f"/jobs/{job_id}/logs", params=params, timeout=timeout) as response,
        ):
            if response.is_error:
                response.read()
                _raise_for(response)
            yield from response.iter_text()

    def upload_code(self, packed: PackedFolder, progress: Callable[[int], None] | None = None) -> CodeUpload:
        """Upload a packed working folder for the caller's tenant, unless it has it already (then
        nothing is sent): a submit of unchanged code uploads nothing. ``progress`` is told the bytes
        of each chunk as it is sent."""
        try:
            return CodeUpload.model_validate(self._call("GET", f"/code/{packed.digest}"))
        except APIError as error:
            if error.status != 404:
                raise
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(packed.data))}
        content = _chunks(packed.data, progress) if progress is not None else packed.data
        body = self._call("PUT", f"/code/{packed.digest}", content=content, headers=headers)
        return CodeUpload.model_validate(body)

    def pod_code(self, job_id: str, attempt: int, pod: int) -> bytes:
        """What an agent calls for the uploaded code of a pod on its node: the archive's bytes."""
        response = self._response("GET", f"/jobs/{job_id}/pods/{pod}/code", params={"attempt": attempt})
        return response.content

    def pod_mount(self, job_id: str, attempt: int, pod: int, digest: str) -> bytes:
        """What an agent calls for a stored output a pod on its node mounts: the archive's bytes."""
        path = f"/jobs/{job_id}/pods/{pod}/mounts/{digest}"
        return self._response("GET", path, params={"attempt": attempt}).content

    def put_output(self, job_id: str, attempt: int, pod: int, name: str, data: bytes) -> None:
        """What an agent calls with a declared output of a pod on its node, packed (before its exit)."""
        headers = {"Content-Type": "application/octet-stream"}
        path = f"/jobs/{job_id}/pods/{pod}/outputs/{name}"
        self._call("PUT", path, params={"attempt": attempt}, content=data, headers=headers)

    def run_pipeline(
        self, spec: PipelineSpec | dict[str, Any] | str | Path, params: dict[str, str] | None = None
    ) -> PipelineRun:
        """Start a pipeline run; a spec file's steps' relative ``workdir`` are uploaded as for ``submit``."""
        if isinstance(spec, str | Path):
            path = Path(spec)
            loaded = load_pipeline_spec(path)
            steps = {name: self.ship_workdir(step, path.parent) for name, step in loaded.steps.items()}
            spec = loaded.model_copy(update={"steps": steps})
        body = (
            spec.model_dump(mode="json", by_alias=True, exclude_none=True)
            if isinstance(spec, PipelineSpec)
            else spec
        )
        payload = {"spec": body, "params": params or {}}
        return PipelineRun.model_validate(self._call("POST", "/pipelines", json=payload))

    def pipeline(self, run_id: str) -> PipelineRun:
        return PipelineRun.model_validate(self._call("GET", f"/pipelines/{run_id}"))

    def pipelines(self, limit: int = 100) -> list[PipelineRun]:
        return [
            PipelineRun.model_validate(r) for r in self._call("GET", "/pipelines", params={"limit": limit})
        ]

    def cancel_pipeline(self, run_id: str) -> PipelineRun:
        return PipelineRun.model_validate(self._call("POST", f"/pipelines/{run_id}/cancel"))

    def cancel(self, job_id: str) -> Job:
        return Job.model_validate(self._call("POST", f"/jobs/{job_id}/cancel"))

    def push_artifact(self, job_id: str, path: str, *, kind: str, cluster: str) -> Artifact:
        """Copy a file or directory of the job's, a path on the server's machine, to ``cluster``'s object
        store; ``APIError`` 403 when the artifact may not go there (the message says what may)."""
        body = {"path": path, "kind": kind, "cluster": cluster}
        return Artifact.model_validate(self._call("POST", f"/jobs/{job_id}/artifacts", json=body))

    def register_model(self, job_id: str, path: str, name: str) -> dict[str, Any]:
        """A new version of model ``name`` from artifact ``path`` of the job's MLflow run (docs/mlops.md)."""
        body = {"job_id": job_id, "path": path, "name": name}
        return self._call("POST", "/models", json=body)  # type: ignore[no-any-return]

    def models(self) -> list[dict[str, Any]]:
        """The tenant's registered models with their versions and aliases."""
        return self._call("GET", "/models")  # type: ignore[no-any-return]

    def model(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/models/{name}")  # type: ignore[no-any-return]

    def set_model_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        """Point ``alias`` of model ``name`` at ``version`` (one transaction; serving follows it)."""
        body = {"version": version}
        return self._call("PUT", f"/models/{name}/aliases/{alias}", json=body)  # type: ignore[no-any-return]

    def queues(self) -> list[QueueState]:
        return [QueueState.model_validate(q) for q in self._call("GET", "/queues")]

    def put_queue(self, queue: dict[str, Any]) -> dict[str, Any]:
        """Create or replace a queue (admins): ``{"name": ..., "quota": {...}, "cohort": ..., ...}``."""
        return self._call("PUT", f"/queues/{queue['name']}", json=queue)  # type: ignore[no-any-return]

    def delete_queue(self, name: str) -> None:
        self._call("DELETE", f"/queues/{name}")

    def cohorts(self) -> list[Cohort]:
        return [Cohort.model_validate(c) for c in self._call("GET", "/cohorts")]

    def cost(
        self, *, since: float | None = None, until: float | None = None, by: str = "tenant"
    ) -> list[Spend]:
        """USD and GPU-hours per tenant, queue or cluster over [since, until) (default: the last 30 days)."""
        params = {k: v for k, v in {"since": since, "until": until, "by": by}.items() if v is not None}
        return [Spend.model_validate(s) for s in self._call("GET", "/cost", params=params)]

    def me(self) -> Me:
        return Me.model_validate(self._call("GET", "/me"))

    def create_tenant(self, name: str) -> None:
        self._call("POST", "/tenants", json={"name": name})

    def tenants(self) -> list[str]:
        return list(self._call("GET", "/tenants"))

    def create_user(
        self,
        name: str,
        tenant: str,
        role: str = "member",
        *,
        node: str | None = None,
        expires_in: float | None = None,
    ) -> NewToken:
        """A user and their first token (admins); an agent's ``node`` is the one its tokens speak for,
        ``expires_in`` seconds until the token expires."""
        body = {"name": name, "tenant": tenant, "role": role, "node": node, "expires_in": expires_in}
        return NewToken.model_validate(self._call("POST", "/users", json=body))

    def users(self) -> list[UserInfo]:
        return [UserInfo.model_validate(u) for u in self._call("GET", "/users")]

    def create_token(self, user: str | None = None, *, expires_in: float | None = None) -> NewToken:
        params = {k: v for k, v in {"user": user, "expires_in": expires_in}.items() if v is not None}
        return NewToken.model_validate(self._call("POST", "/tokens", params=params))

    def tokens(self) -> list[TokenInfo]:
        return [TokenInfo.model_validate(t) for t in self._call("GET", "/tokens")]

    def revoke_token(self, token_id: str) -> None:
        self._call("DELETE", f"/tokens/{token_id}")

    def nodes(self) -> list[NodeState]:
        return [NodeState.model_validate(n) for n in self._call("GET", "/nodes")]

    def register(self, node: str, registration: NodeRegistration, address: str | None = None) -> NodeState:
        """What an agent calls with its machine's inventory (at start, and when a GPU's health changes);
        ``address``: where its replicas are reached (default: where the server sees it connect from)."""
        body = registration.model_dump(mode="json")
        params = {"address": address} if address else None
        return NodeState.model_validate(self._call("PUT", f"/nodes/{node}", json=body, params=params))

    def remove_node(self, node: str) -> None:
        """Forget a node's registration (admins); its running work is requeued."""
        self._call("DELETE", f"/nodes/{node}")

    def heartbeat(self, node: str, address: str | None = None) -> NodeState:
        """What an agent calls to say its node is alive (``address``: as for ``register``)."""
        params = {"address": address} if address else None
        return NodeState.model_validate(self._call("POST", f"/nodes/{node}/heartbeat", params=params))

    def node_pods(self, node: str) -> list[DesiredPod]:
        """The pods an agent should be running on ``node``."""
        return [DesiredPod.model_validate(p) for p in self._call("GET", f"/nodes/{node}/pods")]

    def watch_pods(
        self, node: str, *, wait: float, known: str | None = None
    ) -> tuple[list[DesiredPod], str | None]:
        """A long-poll for an agent: ``node``'s pods and their tag, as soon as they differ from the
        answer tagged ``known``, else after ``wait`` seconds."""
        headers = {"If-None-Match": known} if known else {}
        response = self._response(
            "GET", f"/nodes/{node}/pods", params={"wait": wait}, headers=headers, timeout=self.timeout + wait
        )
        pods = [DesiredPod.model_validate(p) for p in response.json()]
        return pods, response.headers.get("ETag")

    def ship_logs(self, job_id: str, attempt: int, pod: int, offset: int, text: str) -> int:
        """What an agent calls with a pod's new output; returns the bytes the server now holds."""
        body = {"attempt": attempt, "offset": offset, "text": text}
        return int(self._call("POST", f"/jobs/{job_id}/pods/{pod}/logs", json=body)["length"])

    def report_start(self, job_id: str, attempt: int, pod: int, port: int) -> None:
        """Tell the server the port a pod was given where it started (``JobSpec.listen_port``)."""
        self._call("POST", f"/jobs/{job_id}/pods/{pod}/start", json={"attempt": attempt, "port": port})

    def report_exit(self, job_id: str, attempt: int, pod: int, code: int) -> Job:
        body = {"attempt": attempt, "code": code}
        return Job.model_validate(self._call("POST", f"/jobs/{job_id}/pods/{pod}/exit", json=body))

    def apply_service(self, spec: Any) -> dict[str, Any]:
        """Create or change a service (``ServiceSpec`` or its dict); a new revision when its replicas
        would run differently. Answers its name, url, revision and, once, a public service's token."""
        body = spec.model_dump(mode="json") if hasattr(spec, "model_dump") else spec
        return self._call("POST", "/services", json=body)  # type: ignore[no-any-return]

    def services(self) -> list[dict[str, Any]]:
        return self._call("GET", "/services")  # type: ignore[no-any-return]

    def service(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/services/{name}")  # type: ignore[no-any-return]

    def promote_service(self, name: str) -> dict[str, Any]:
        return self._call("POST", f"/services/{name}/promote")  # type: ignore[no-any-return]

    def remove_service(self, name: str) -> None:
        self._call("DELETE", f"/services/{name}")

    def metrics(self) -> str:
        """The Prometheus text the server exposes at /metrics."""
        with self._reaching():
            response = self._http.get(f"{self.url}/metrics")
        if response.is_error:
            raise APIError(response.status_code, response.text)
        return response.text

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._response(method, path, **kwargs)
        return response.json() if response.content else None

    def _response(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._reaching():
            response = self._http.request(method, path, **kwargs)
        _raise_for(response, self.url)
        return response

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        """httpx's transport errors (refused, timed out, cut off) as ``ServerUnreachable``."""
        try:
            yield
        except httpx.TransportError as error:
            raise ServerUnreachable(self.url, error) from error


@dataclass(frozen=True)
class LogText:
    """Bytes ``[start, end)`` of a pod's output, as text."""

    text: str
    start: int
    end: int
    """Where to resume: the next read's ``offset``."""
    length: int
    """Bytes the pod had written when the server answered."""
    truncated_before: int
    """Output before this offset was dropped (the server keeps only the newest, up to its cap)."""


def _raise_for(response: httpx.Response, url: str | None = None) -> None:
    """``APIError`` with the server's ``detail`` (every refusal is a Problem), or the body's text; a
    route the server does not have says that the URL may not be a corral server's."""
    if not response.is_error:
        return
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    if response.status_code == 404 and detail == "Not Found" and url is not None:
        detail = f"{response.request.url.path} not found: is {url} a corral server's URL?"
    raise APIError(response.status_code, str(detail))


UPLOAD_CHUNK_BYTES = 256 << 10


def _chunks(data: bytes, progress: Callable[[int], None]) -> Iterator[bytes]:
    """``data`` in chunks, telling ``progress`` of each as httpx takes it to send."""
    for start in range(0, len(data), UPLOAD_CHUNK_BYTES):
        chunk = data[start : start + UPLOAD_CHUNK_BYTES]
        yield chunk
        progress(len(chunk))
