"""Tenants, users and API tokens: who is calling, for which tenant, with which role.

A token reads ``corral_<id>_<secret>``. The store keeps the id and a SHA-256 digest of the secret, never
the secret: the secret is 256 random bits, so a fast hash is as safe as a slow one here and costs
nothing per request. ``bootstrap`` makes the first admin when the store has no users yet, which is how
``corral up`` can hand its user a working token without any setup.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.api_models import Role
from corral.errors import CorralError
from corral.store.schema import TenantRow, TokenRow, UserRow

ROLES: tuple[Role, ...] = ("admin", "member", "viewer", "agent")
"""admin: everything. member: submit to the tenant's queues, see and cancel the tenant's jobs.
viewer: see the tenant's jobs. agent: a machine's agent (heartbeats, its pods, exit codes) and nothing
else."""

TOKEN_PREFIX = "corral_"


class AccountError(CorralError):
    """A tenant, user or token that does not exist, or already does."""


@dataclass(frozen=True)
class Principal:
    """The caller behind a token."""

    user: str
    tenant: str
    role: Role
    token_id: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class User:
    name: str
    tenant: str
    role: Role
    created_at: float


@dataclass(frozen=True)
class Token:
    id: str
    user: str
    created_at: float


class AccountStore:
    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock

    def create_tenant(self, name: str) -> None:
        try:
            with Session(self.engine) as session, session.begin():
                session.add(TenantRow(name=name, created_at=self.clock()))
        except IntegrityError:
            raise AccountError(f"tenant {name!r} exists already") from None

    def tenants(self) -> list[str]:
        with Session(self.engine) as session:
            return list(session.scalars(select(TenantRow.name).order_by(TenantRow.name)))

    def create_user(self, name: str, tenant: str, role: Role) -> tuple[User, str]:
        """A new user with a first token; returns the user and the token (shown once, stored hashed)."""
        now = self.clock()
        with Session(self.engine) as session, session.begin():
            if session.get(TenantRow, tenant) is None:
                raise AccountError(f"no tenant {tenant!r}: create it first (corral tenants add {tenant})")
            if session.get(UserRow, name) is not None:
                raise AccountError(f"user {name!r} exists already")
            session.add(UserRow(name=name, tenant=tenant, role=role, created_at=now))
            session.flush()
            token = self._issue(session, name, now)
        return User(name, tenant, role, now), token

    def users(self, tenant: str | None = None) -> list[User]:
        query = select(UserRow).order_by(UserRow.name)
        if tenant is not None:
            query = query.where(UserRow.tenant == tenant)
        with Session(self.engine) as session:
            return [User(r.name, r.tenant, r.role, r.created_at) for r in session.scalars(query)]  # type: ignore[arg-type]

    def issue_token(self, user: str) -> str:
        with Session(self.engine) as session, session.begin():
            if session.get(UserRow, user) is None:
                raise AccountError(f"no user {user!r}")
            return self._issue(session, user, self.clock())

    def tokens(self, user: str | None = None) -> list[Token]:
        query = select(TokenRow).order_by(TokenRow.created_at)
        if user is not None:
            query = query.where(TokenRow.user == user)
        with Session(self.engine) as session:
            return [Token(r.id, r.user, r.created_at) for r in session.scalars(query)]

    def token_owner(self, token_id: str) -> str:
        with Session(self.engine) as session:
            row = session.get(TokenRow, token_id)
            if row is None:
                raise AccountError(f"no token {token_id!r}")
            return row.user

    def revoke(self, token_id: str) -> None:
        with Session(self.engine) as session, session.begin():
            row = session.get(TokenRow, token_id)
            if row is None:
                raise AccountError(f"no token {token_id!r}")
            session.delete(row)

    def authenticate(self, token: str) -> Principal | None:
        """The principal ``token`` belongs to, or None for a malformed, unknown or revoked token."""
        token_id, secret = _split(token)
        if token_id is None:
            return None
        with Session(self.engine) as session:
            found = session.execute(
                select(TokenRow.digest, UserRow.name, UserRow.tenant, UserRow.role)
                .join(UserRow, UserRow.name == TokenRow.user)
                .where(TokenRow.id == token_id)
            ).first()
        if found is None or not hmac.compare_digest(found.digest, _digest(secret)):
            return None
        return Principal(found.name, found.tenant, found.role, token_id)

    def bootstrap(self, user: str = "admin", tenant: str = "default") -> str | None:
        """The first admin and their token when the store has no users; None when it has some (or another
        server process made the first admin at the same moment)."""
        try:
            return self._bootstrap(user, tenant)
        except IntegrityError:
            return None

    def _bootstrap(self, user: str, tenant: str) -> str | None:
        with Session(self.engine) as session, session.begin():
            if session.scalar(select(exists().where(UserRow.name.is_not(None)))):
                return None
            now = self.clock()
            if session.get(TenantRow, tenant) is None:
                session.add(TenantRow(name=tenant, created_at=now))
            session.add(UserRow(name=user, tenant=tenant, role="admin", created_at=now))
            session.flush()
            return self._issue(session, user, now)

    def _issue(self, session: Session, user: str, now: float) -> str:
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        session.add(TokenRow(id=token_id, user=user, digest=_digest(secret), created_at=now))
        return f"{TOKEN_PREFIX}{token_id}_{secret}"


def _split(token: str) -> tuple[str | None, str]:
    if not token.startswith(TOKEN_PREFIX):
        return None, ""
    token_id, _, secret = token[len(TOKEN_PREFIX) :].partition("_")
    return (token_id, secret) if token_id and secret else (None, "")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
