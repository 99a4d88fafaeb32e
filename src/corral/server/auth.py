"""Who may call what: bearer tokens, roles, and tenants.

Every route names the roles it admits (``allow``). A request without a valid token is a 401; a role that
may not do something is a 403 that says which roles may; another tenant's job is a 404, the same answer
as a job that does not exist, so ids of other tenants' work cannot be probed; an agent speaking for
another node than its own is a 403 (``speak_for``). Every refusal is logged
(logger ``corral.audit``) with the caller, the route and the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from corral.api_models import Problem
from corral.mlops.tokens import is_job_token
from corral.server.services import ControlPlane, control_plane
from corral.store.accounts import Principal, Role
from corral.store.jobs import JobNotFound, JobRecord

audit = logging.getLogger("corral.audit")

bearer = HTTPBearer(
    auto_error=False,
    description="An API token, `corral_<id>_<secret>`: `corral up` writes the first admin's to "
    "`<data dir>/token`; `corral users add` makes more.",
)

REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No API token, or one that is not recognised."},
    403: {"model": Problem, "description": "The caller's role or tenant may not do this."},
    404: {"model": Problem, "description": "No such thing, or another tenant's."},
}
"""The refusals every authenticated route may answer, for the OpenAPI document."""
TEXT_ROUTE_REFUSALS: dict[int | str, dict[str, Any]] = {
    code: {
        "description": answer["description"],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    for code, answer in REFUSALS.items()
}
"""The same, for a route that answers text: its refusals are still JSON (FastAPI would say text)."""
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "The change conflicts with the current state."}
}

EVERYONE: tuple[Role, ...] = ("admin", "member", "viewer")
"""People, not machines: agents hold tokens for their node's routes only."""
SUBMITTERS: tuple[Role, ...] = ("admin", "member")
AGENTS: tuple[Role, ...] = ("admin", "agent")


def caller(who: Principal | None) -> str:
    """Who made a request, as the audit log names them."""
    return f"{who.user} ({who.role}, tenant {who.tenant})" if who else "anonymous"


def refuse(request: Request, status: int, detail: str, who: Principal | None = None) -> NoReturn:
    audit.warning(
        "refused %s %s for %s: %d %s", request.method, request.url.path, caller(who), status, detail
    )
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    raise HTTPException(status_code=status, detail=detail, headers=headers)


def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    plane: Annotated[ControlPlane, Depends(control_plane)],
) -> Principal:
    if credentials is None:
        refuse(request, 401, "no API token: set CORRAL_TOKEN (corral up writes one to <data dir>/token)")
    principal = plane.authenticate(credentials.credentials)
    if principal is None and is_job_token(credentials.credentials):
        refuse(request, 403, "a job's tracking token works only for MLflow's API under /mlflow")
    if principal is None:
        refuse(request, 401, "API token not recognised: it was revoked, mistyped, or is another server's")
    if principal.expires_at is not None and principal.expires_at <= plane.jobs.clock():
        when = datetime.fromtimestamp(principal.expires_at, UTC).isoformat(timespec="seconds")
        refuse(request, 401, f"token expired at {when}: make a new one (corral tokens new)", principal)
    return principal


def allow(*roles: Role) -> Callable[..., Principal]:
    """A dependency that admits callers whose role is one of ``roles``."""

    def check(request: Request, principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
        if principal.role not in roles:
            refuse(
                request,
                403,
                f"{principal.user} is {principal.role}; this needs {' or '.join(roles)}",
                principal,
            )
        return principal

    return check


def speak_for(request: Request, plane: ControlPlane, principal: Principal, node: str) -> None:
    """Refuse (403) an agent that speaks for another node than its own. An agent user made before agents
    were bound to nodes is bound here to the first node it speaks for, unless another agent holds it.
    No agent speaks for a node this server's local backend runs. Admins speak for any node."""
    if principal.is_admin:
        return
    if node in plane.local_nodes:
        refuse(request, 403, f"node {node} is run by this server itself; no agent speaks for it", principal)
    own = principal.node
    if own is None:
        own = plane.accounts.bind_agent(principal.user, node)
        plane.forget_token(principal.token_id)  # its cached principal does not know the binding yet
    if own is None:
        refuse(request, 403, f"node {node} has another agent; {principal.user} is not bound to it", principal)
    if own != node:
        refuse(request, 403, f"{principal.user} is the agent of node {own}, not of node {node}", principal)


def visible_job(request: Request, plane: ControlPlane, principal: Principal, job_id: str) -> JobRecord:
    """The job, if the caller may see it: admins see every tenant's, others their own tenant's."""
    try:
        record = plane.jobs.get(job_id)
    except JobNotFound as error:
        refuse(request, 404, str(error), principal)
    if not principal.is_admin and record.tenant != principal.tenant:
        refuse(request, 404, f"no job {job_id!r}", principal)
    return record
