"""Tenants, users and tokens. Admins manage everyone; anyone can see who they are and manage their own
tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from corral.api_models import Me, NewTenant, NewToken, NewUser, TokenInfo, UserInfo
from corral.server.auth import CONFLICT, REFUSALS, allow, authenticated, refuse
from corral.server.services import ControlPlane, control_plane
from corral.store.accounts import AccountError, Principal

router = APIRouter(tags=["accounts"], responses=REFUSALS)
Plane = Annotated[ControlPlane, Depends(control_plane)]
Caller = Annotated[Principal, Depends(authenticated)]
Admin = Annotated[Principal, Depends(allow("admin"))]


@router.get("/me", response_model=Me)
def me(principal: Caller) -> Me:
    return Me(
        user=principal.user,
        tenant=principal.tenant,
        role=principal.role,
        token_id=principal.token_id,
        node=principal.node,
        expires_at=principal.expires_at,
    )


@router.get("/tenants", response_model=list[str])
def tenants(plane: Plane, _: Admin) -> list[str]:
    return plane.accounts.tenants()


@router.post("/tenants", status_code=201, response_model=NewTenant, responses=CONFLICT)
def create_tenant(request: Request, body: NewTenant, plane: Plane, principal: Admin) -> NewTenant:
    try:
        plane.accounts.create_tenant(body.name)
    except AccountError as error:
        refuse(request, 409, str(error), principal)
    return body


@router.get("/users", response_model=list[UserInfo])
def users(plane: Plane, _: Admin, tenant: str | None = None) -> list[UserInfo]:
    return [
        UserInfo(name=u.name, tenant=u.tenant, role=u.role, node=u.node) for u in plane.accounts.users(tenant)
    ]


@router.post("/users", status_code=201, response_model=NewToken, responses=CONFLICT)
def create_user(request: Request, body: NewUser, plane: Plane, principal: Admin) -> NewToken:
    """A user in a tenant with a role, and their first token (shown this once; only its hash is kept).
    An agent names its node: its tokens speak for that node only."""
    expires_at = plane.jobs.clock() + body.expires_in if body.expires_in is not None else None
    try:
        user, token = plane.accounts.create_user(
            body.name, body.tenant, body.role, node=body.node, expires_at=expires_at
        )
    except AccountError as error:
        status = 409 if "exists already" in str(error) else 422
        refuse(request, status, str(error), principal)
    return NewToken(user=user.name, token=token)


@router.get("/tokens", response_model=list[TokenInfo])
def tokens(plane: Plane, principal: Caller) -> list[TokenInfo]:
    """The caller's tokens (ids only); an admin's call lists everyone's."""
    found = plane.accounts.tokens(None if principal.is_admin else principal.user)
    return [TokenInfo(id=t.id, user=t.user, created_at=t.created_at, expires_at=t.expires_at) for t in found]


@router.post("/tokens", status_code=201, response_model=NewToken)
def create_token(
    request: Request,
    plane: Plane,
    principal: Caller,
    user: str | None = None,
    expires_in: Annotated[
        float | None, Query(gt=0, description="Seconds until it expires; default: never.")
    ] = None,
) -> NewToken:
    """A new token for the caller, or (admins) for ``user``: to rotate one, make a new one and revoke
    the old. An agent's token speaks for the agent's node. A token made with one that expires expires
    no later than it, so a leaked token cannot outlive itself."""
    owner = user or principal.user
    if owner != principal.user and not principal.is_admin:
        refuse(request, 403, "only admins make tokens for other users", principal)
    expires_at = plane.jobs.clock() + expires_in if expires_in is not None else None
    if principal.expires_at is not None and not principal.is_admin:
        expires_at = min(expires_at or principal.expires_at, principal.expires_at)
    try:
        return NewToken(user=owner, token=plane.accounts.issue_token(owner, expires_at))
    except AccountError as error:
        refuse(request, 404, str(error), principal)


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(request: Request, token_id: str, plane: Plane, principal: Caller) -> None:
    """Revoke one of the caller's tokens (admins: anyone's); it stops working at once in this process and
    within a second in every other API process (``TOKEN_CACHE_SECONDS``)."""
    try:
        owner = plane.accounts.token_owner(token_id)
        if owner != principal.user and not principal.is_admin:
            refuse(request, 404, f"no token {token_id!r}", principal)
        plane.accounts.revoke(token_id)
    except AccountError as error:
        refuse(request, 404, str(error), principal)
    plane.forget_token(token_id)
