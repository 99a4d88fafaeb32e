"""Tenants, users and tokens. Admins manage everyone; anyone can see who they are and manage their own
tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

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
    return Me(user=principal.user, tenant=principal.tenant, role=principal.role, token_id=principal.token_id)


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
    return [UserInfo(name=u.name, tenant=u.tenant, role=u.role) for u in plane.accounts.users(tenant)]


@router.post("/users", status_code=201, response_model=NewToken, responses=CONFLICT)
def create_user(request: Request, body: NewUser, plane: Plane, principal: Admin) -> NewToken:
    """A user in a tenant with a role, and their first token (shown this once; only its hash is kept)."""
    try:
        user, token = plane.accounts.create_user(body.name, body.tenant, body.role)
    except AccountError as error:
        status = 422 if "no tenant" in str(error) else 409
        refuse(request, status, str(error), principal)
    return NewToken(user=user.name, token=token)


@router.get("/tokens", response_model=list[TokenInfo])
def tokens(plane: Plane, principal: Caller) -> list[TokenInfo]:
    """The caller's tokens (ids only); an admin's call lists everyone's."""
    found = plane.accounts.tokens(None if principal.is_admin else principal.user)
    return [TokenInfo(id=t.id, user=t.user, created_at=t.created_at) for t in found]


@router.post("/tokens", status_code=201, response_model=NewToken)
def create_token(request: Request, plane: Plane, principal: Caller, user: str | None = None) -> NewToken:
    """A new token for the caller, or (admins) for ``user``: to rotate one, make a new one and revoke
    the old."""
    owner = user or principal.user
    if owner != principal.user and not principal.is_admin:
        refuse(request, 403, "only admins make tokens for other users", principal)
    try:
        return NewToken(user=owner, token=plane.accounts.issue_token(owner))
    except AccountError as error:
        refuse(request, 404, str(error), principal)


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(request: Request, token_id: str, plane: Plane, principal: Caller) -> None:
    """Revoke one of the caller's tokens (admins: anyone's); it stops working at once on this server."""
    try:
        owner = plane.accounts.token_owner(token_id)
        if owner != principal.user and not principal.is_admin:
            refuse(request, 404, f"no token {token_id!r}", principal)
        plane.accounts.revoke(token_id)
    except AccountError as error:
        refuse(request, 404, str(error), principal)
    plane.forget_token(token_id)
