"""``/mlflow``: MLflow's REST API (tracking, registry, proxied artifacts) behind corral's tokens.

The stock client works with ``MLFLOW_TRACKING_URI=<server>/mlflow`` and ``MLFLOW_TRACKING_TOKEN`` set to a
corral API token or a job's token; tenancy is the gate's (``corral.mlops.gate``). Without MLflow
installed every request is a 404 that says to install ``corral[mlops]`` (a refusal, like every other, is a
4xx); while MLflow opens (seconds after the server starts), or if it failed to, a 503.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from corral.backends.pods import DesiredPod
from corral.mlops import INSTALL_HINT
from corral.mlops.tracking import MOUNT
from corral.server.problems import problem
from corral.server.services import ControlPlane

if TYPE_CHECKING:
    from corral.mlops.gate import Caller, Gate
    from corral.mlops.service import Mlops, MlopsService


def mount(app: FastAPI, plane: ControlPlane, service: MlopsService | None) -> None:
    """Answer MLflow's API at ``/mlflow`` (or say why it is not there)."""
    app.state.mlops = service
    app.mount(MOUNT, _Tracking(plane, service))


def unavailable(service: MlopsService | None) -> tuple[int, str] | None:
    """Why MLflow cannot answer now (a status and a detail), or None when it can."""
    if service is None:
        return 404, INSTALL_HINT
    if service.current is not None:
        return None
    if service.failed:
        return 503, "MLflow could not be opened on this server (its log says why)"
    return 503, "MLflow is starting (it opens a few seconds after the server); try again shortly"


class _Tracking:
    """The gate once MLflow is open; a problem (404, 503) until then."""

    def __init__(self, plane: ControlPlane, service: MlopsService | None) -> None:
        self.plane = plane
        self.service = service
        self._gate: Gate | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        refusal = unavailable(self.service)
        if refusal is not None:
            await problem(*refusal)(scope, receive, send)
            return
        if self._gate is None:
            from corral.mlops.gate import Gate

            mlops = self.service.current  # type: ignore[union-attr]
            self._gate = Gate(mlops.wsgi_app, mlops.owners, _authenticator(self.plane, mlops), _room(mlops))  # type: ignore[union-attr]
        await self._gate(scope, receive, send)


def _authenticator(plane: ControlPlane, mlops: Mlops) -> Any:
    from corral.mlops.gate import Caller, Refused
    from corral.mlops.tokens import is_job_token

    def authenticate(token: str) -> Caller:
        if is_job_token(token):
            job = mlops.tracking.authenticate(token)
            if job is None:
                raise Refused(401, "job token not valid: it works only while its job attempt runs")
            return Caller(f"job {job.job_id}", job.tenant)
        principal = plane.authenticate(token)
        if principal is None:
            raise Refused(401, "API token not recognised: it was revoked, mistyped, or is another server's")
        if principal.expires_at is not None and principal.expires_at <= plane.jobs.clock():
            raise Refused(401, "token expired: make a new one (corral tokens new)")
        if principal.role == "agent":
            raise Refused(403, f"{principal.user} is an agent; tracking needs a person's or a job's token")
        return Caller(principal.user, principal.tenant, principal.is_admin, principal.role != "viewer")

    return authenticate


def _room(mlops: Mlops) -> Any:
    """Each tenant's quota on the server's artifact folder; None when artifacts are kept elsewhere (S3)."""
    from corral.mlops.quota import ArtifactQuota

    root = mlops.registry.stores.location.local_artifacts
    return ArtifactQuota(root, mlops.owners).check if root is not None else None


async def attach_tracking(request: Request, pods: Sequence[DesiredPod]) -> list[DesiredPod]:
    """An agent's pods with their jobs' MLflow variables; the tracking URI is the URL the agent used
    to reach this server (its ``--server``), so it is one the agent's node reaches."""
    service: MlopsService | None = getattr(request.app.state, "mlops", None)
    if service is None or service.current is None or not pods:
        return list(pods)
    server = str(request.base_url).rstrip("/")
    return await run_in_threadpool(service.attach, pods, server)
