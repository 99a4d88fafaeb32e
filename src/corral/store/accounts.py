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

from sqlalchemy import Engine, exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from corral.api_models import Role
from corral.errors import CorralError
from corral.store.schema import TenantRow, TokenRow, UserRow

ROLES: tuple[Role, ...] = ("admin", "member", "viewer", "agent")
"""admin: everything. member: submit to the tenant's queues, see and cancel the tenant's jobs.
viewer: see the tenant's jobs. agent: one machine's agent (its node's registration, heartbeats, pods,
exit codes and output) and nothing else."""

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
    node: str | None = None
    """An agent's node, the only one it may speak for; None for people and for an agent not bound yet."""
    expires_at: float | None = None
    """When the token stops working (Unix seconds); None: never."""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class User:
    name: str
    tenant: str
    role: Role
    created_at: float
    node: str | None = None


@dataclass(frozen=True)
class Token:
    id: str
    user: str
    created_at: float
    expires_at: float | None = None


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

    def create_user(
        self,
        name: str,
        tenant: str,
        role: Role,
        *,
        node: str | None = None,
        expires_at: float | None = None,
    ) -> tuple[User, str]:
        """A new user with a first token; returns the user and the token (shown once, stored hashed).
        An agent's ``node`` is the one node its tokens may speak for."""
        if node is not None and role != "agent":
            raise AccountError(f"only agents are bound to a node; {name} would be {role}")
        now = self.clock()
        with Session(self.engine) as session, session.begin():
            if session.get(TenantRow, tenant) is None:
                raise AccountError(f"no tenant {tenant!r}: create it first (corral tenants add {tenant})")
            if session.get(UserRow, name) is not None:
                raise AccountError(f"user {name!r} exists already")
            session.add(UserRow(name=name, tenant=tenant, role=role, node=node, created_at=now))
            session.flush()
            token = self._issue(session, name, now, expires_at)
        return User(name, tenant, role, now, node), token

    def users(self, tenant: str | None = None) -> list[User]:
        query = select(UserRow).order_by(UserRow.name)
        if tenant is not None:
            query = query.where(UserRow.tenant == tenant)
        with Session(self.engine) as session:
            return [User(r.name, r.tenant, r.role, r.created_at, r.node) for r in session.scalars(query)]  # type: ignore[arg-type]

    def issue_token(self, user: str, expires_at: float | None = None) -> str:
        """A new token for ``user``; an agent's is bound to the same node as the agent's other tokens."""
        with Session(self.engine) as session, session.begin():
            if session.get(UserRow, user) is None:
                raise AccountError(f"no user {user!r}")
            return self._issue(session, user, self.clock(), expires_at)

    def bind_agent(self, user: str, node: str) -> str | None:
        """Bind an agent user that is not bound yet (made before agents were bound to nodes) to ``node``,
        the first node it speaks for, unless another agent user holds that node. Returns the node the
        user is bound to now (``node``, or the one it was bound to before), or None when ``node`` is
        another agent's. One conditional update, so two requests racing to bind cannot both win."""
        with Session(self.engine) as session, session.begin():
            other = aliased(UserRow)
            held = select(other.name).where(other.node == node, other.name != user).exists()
            session.execute(
                update(UserRow)
                .where(UserRow.name == user, UserRow.role == "agent", UserRow.node.is_(None), ~held)
                .values(node=node)
            )
            return session.scalar(select(UserRow.node).where(UserRow.name == user))

    def tokens(self, user: str | None = None) -> list[Token]:
        query = select(TokenRow).order_by(TokenRow.created_at)
        if user is not None:
            query = query.where(TokenRow.user == user)
        with Session(self.engine) as session:
            return [Token(r.id, r.user, r.created_at, r.expires_at) for r in session.scalars(query)]

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
        """The principal ``token`` belongs to, or None for a malformed, unknown or revoked token. An expired
        token still has its principal (``expires_at`` says when it expired), so the refusal can say so."""
        token_id, secret = _split(token)
        if token_id is None:
            return None
        with Session(self.engine) as session:
            found = session.execute(
                select(
                    TokenRow.digest,
                    TokenRow.expires_at,
                    UserRow.name,
                    UserRow.tenant,
                    UserRow.role,
                    UserRow.node,
                )
                .join(UserRow, UserRow.name == TokenRow.user)
                .where(TokenRow.id == token_id)
            ).first()
        if found is None or not hmac.compare_digest(found.digest, _digest(secret)):
            return None
        return Principal(found.name, found.tenant, found.role, token_id, found.node, found.expires_at)

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

    def _issue(self, session: Session, user: str, now: float, expires_at: float | None = None) -> str:
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        session.add(
            TokenRow(id=token_id, user=user, digest=_digest(secret), created_at=now, expires_at=expires_at)
        )
        return f"{TOKEN_PREFIX}{token_id}_{secret}"


def _split(token: str) -> tuple[str | None, str]:
    if not token.startswith(TOKEN_PREFIX):
        return None, ""
    token_id, _, secret = token[len(TOKEN_PREFIX) :].partition("_")
    return (token_id, secret) if token_id and secret else (None, "")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
