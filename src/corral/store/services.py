"""Services in the store: their specs, revisions, replicas and public tokens.

A service is per tenant (``tenant/name``). Applying a spec whose replicas would run differently
(``ServiceSpec.digest``) adds a revision: the first becomes stable at once, later ones are canaries
until the controller promotes or rolls them back. A replica row ties a job to its service and revision;
the job itself is an ordinary job in the job store, and the port its pod was given where it runs is
recorded with its placement when it starts.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.errors import CorralError
from corral.spec.service import ServiceSpec
from corral.store.schema import (
    JobRow,
    NodeRow,
    PlacementRow,
    ServiceReplicaRow,
    ServiceRevisionRow,
    ServiceRow,
)

TOKEN_PREFIX = "corral_svc_"


class ServiceNotFound(CorralError):
    pass


@dataclass(frozen=True)
class Revision:
    number: int
    spec: ServiceSpec
    state: str
    reason: str | None
    created_at: float
    model_version: str | None = None
    model_path: str | None = None


@dataclass(frozen=True)
class ServiceRecord:
    id: str
    tenant: str
    name: str
    spec: ServiceSpec
    stable: int | None
    canary: int | None
    token_digest: str | None
    """SHA-256 of a public service's own token; never shown."""
    created_at: float
    revisions: tuple[Revision, ...]

    @property
    def public(self) -> bool:
        return self.token_digest is not None

    def token_matches(self, token: str) -> bool:
        """Whether ``token`` is this public service's own (compared in constant time)."""
        return self.token_digest is not None and hmac.compare_digest(self.token_digest, _digest(token))

    def revision(self, number: int | None) -> Revision | None:
        return next((r for r in self.revisions if r.number == number), None)

    @property
    def latest(self) -> int:
        return max(r.number for r in self.revisions)


@dataclass(frozen=True)
class Replica:
    job_id: str
    service_id: str
    revision: int
    port: int | None
    """Where it listens on its node: the port reported when its pod started (None until then)."""
    created_at: float
    status: str
    """Its job's: pending, running, finished, failed or cancelled."""
    started_at: float | None
    reason: str | None
    node: str | None = None
    """Where its job is placed (None while it waits for capacity)."""
    address: str | None = None
    """Where that node is reached, as its agent reported (None: the server's own node, loopback)."""
    secret: str | None = None
    """What the gateway sends it in ``X-Corral-Replica-Token`` (its job's ``CORRAL_REPLICA_TOKEN``)."""


@dataclass(frozen=True)
class Applied:
    service: ServiceRecord
    created: bool
    new_revision: bool
    token: str | None
    """A public service's own token, when this call made it (shown once, stored hashed)."""


class ServiceStore:
    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock

    def apply(self, tenant: str, spec: ServiceSpec, model: tuple[str, str] | None = None) -> Applied:
        """Create the service, or update it: a spec that runs differently from its newest revision, or
        whose registry ``model`` (version, path) is another version, adds a revision (the canary,
        replacing a canary not yet promoted)."""
        version, path = model if model is not None else (None, None)
        now = self.clock()
        token: str | None = None
        with Session(self.engine) as session, session.begin():
            row = session.scalar(
                select(ServiceRow).where(ServiceRow.tenant == tenant, ServiceRow.name == spec.name)
            )
            body = spec.model_dump(mode="json")
            created = row is None
            if row is None:
                row = ServiceRow(
                    id=f"s-{uuid.uuid4().hex[:12]}", tenant=tenant, name=spec.name, spec=body, created_at=now
                )
                session.add(row)
                session.flush()
                session.add(
                    ServiceRevisionRow(
                        service_id=row.id,
                        number=1,
                        spec=body,
                        state="stable",
                        model_version=version,
                        model_path=path,
                        created_at=now,
                    )
                )
                row.stable_revision = 1
                new_revision = True
            else:
                revisions = session.scalars(
                    select(ServiceRevisionRow).where(ServiceRevisionRow.service_id == row.id)
                ).all()
                newest = max(revisions, key=lambda r: r.number)
                new_revision = (
                    ServiceSpec.model_validate(newest.spec).digest() != spec.digest()
                    or newest.model_version != version
                )
                if new_revision:
                    for revision in revisions:
                        if revision.number == row.canary_revision:
                            revision.state, revision.reason = (
                                "superseded",
                                f"revision {newest.number + 1} came",
                            )
                    number = newest.number + 1
                    session.add(
                        ServiceRevisionRow(
                            service_id=row.id,
                            number=number,
                            spec=body,
                            state="canary",
                            model_version=version,
                            model_path=path,
                            created_at=now,
                        )
                    )
                    row.canary_revision = number
                row.spec = body
            if spec.public and row.token_digest is None:
                token = TOKEN_PREFIX + secrets.token_urlsafe(32)
                row.token_digest = _digest(token)
            if not spec.public:
                row.token_digest = None
            service_id = row.id
        return Applied(self.get_by_id(service_id), created, new_revision, token)

    def get(self, tenant: str, name: str) -> ServiceRecord:
        with Session(self.engine) as session:
            row = session.scalar(
                select(ServiceRow).where(ServiceRow.tenant == tenant, ServiceRow.name == name)
            )
            if row is None:
                raise ServiceNotFound(f"no service {name!r} in tenant {tenant}")
            return _record(session, row)

    def get_by_id(self, service_id: str) -> ServiceRecord:
        with Session(self.engine) as session:
            row = session.get(ServiceRow, service_id)
            if row is None:
                raise ServiceNotFound(f"no service {service_id}")
            return _record(session, row)

    def list(self, tenant: str | None = None) -> list[ServiceRecord]:
        with Session(self.engine) as session:
            query = select(ServiceRow).order_by(ServiceRow.tenant, ServiceRow.name)
            if tenant is not None:
                query = query.where(ServiceRow.tenant == tenant)
            return [_record(session, row) for row in session.scalars(query)]

    def delete(self, service_id: str) -> list[str]:
        """Forget the service; returns its replicas' jobs, for the caller to cancel."""
        with Session(self.engine) as session, session.begin():
            jobs = list(
                session.scalars(
                    select(ServiceReplicaRow.job_id).where(ServiceReplicaRow.service_id == service_id)
                )
            )
            session.execute(delete(ServiceReplicaRow).where(ServiceReplicaRow.service_id == service_id))
            session.execute(delete(ServiceRevisionRow).where(ServiceRevisionRow.service_id == service_id))
            session.execute(delete(ServiceRow).where(ServiceRow.id == service_id))
        return jobs

    def promote(self, service_id: str, reason: str) -> int | None:
        """Make the canary stable (the old stable one is retired); returns its number, None without one."""
        with Session(self.engine) as session, session.begin():
            row = session.get(ServiceRow, service_id)
            if row is None or row.canary_revision is None:
                return None
            for revision in _revisions(session, service_id):
                if revision.number == row.stable_revision:
                    revision.state, revision.reason = "retired", f"revision {row.canary_revision} promoted"
                elif revision.number == row.canary_revision:
                    revision.state, revision.reason = "stable", reason
            row.stable_revision, row.canary_revision = row.canary_revision, None
            return row.stable_revision

    def roll_back(self, service_id: str, reason: str) -> int | None:
        """Give up the canary; the stable revision keeps all the traffic. Returns the canary's number."""
        with Session(self.engine) as session, session.begin():
            row = session.get(ServiceRow, service_id)
            if row is None or row.canary_revision is None:
                return None
            number = row.canary_revision
            for revision in _revisions(session, service_id):
                if revision.number == number:
                    revision.state, revision.reason = "rolled_back", reason
            row.canary_revision = None
            return number

    def add_replica(self, service_id: str, revision: int, job_id: str, secret: str | None = None) -> None:
        """Tie the job to the service; ``ServiceNotFound`` when the service was removed meanwhile (the
        caller cancels the job, which nothing would stop otherwise)."""
        try:
            with Session(self.engine) as session, session.begin():
                session.add(
                    ServiceReplicaRow(
                        job_id=job_id,
                        service_id=service_id,
                        revision=revision,
                        created_at=self.clock(),
                        secret=secret,
                    )
                )
        except IntegrityError as error:
            raise ServiceNotFound(f"service {service_id} was removed") from error

    def forget_replica(self, job_id: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(delete(ServiceReplicaRow).where(ServiceReplicaRow.job_id == job_id))

    def replicas(self) -> list[Replica]:
        """Every service's replicas with their jobs' status and where they run, in one query."""
        with Session(self.engine) as session:
            query = (
                select(ServiceReplicaRow, JobRow, PlacementRow.node, PlacementRow.port, NodeRow.address)
                .join(JobRow, JobRow.id == ServiceReplicaRow.job_id)
                .outerjoin(
                    PlacementRow, (PlacementRow.job_id == ServiceReplicaRow.job_id) & (PlacementRow.pod == 0)
                )
                .outerjoin(NodeRow, NodeRow.name == PlacementRow.node)
            )
            return [
                Replica(
                    replica.job_id,
                    replica.service_id,
                    replica.revision,
                    replica.port
                    if replica.port is not None
                    else port,  # older replicas: chosen by the server
                    replica.created_at,
                    job.status,
                    job.started_at,
                    job.reason,
                    node,
                    address,
                    replica.secret,
                )
                for replica, job, node, port, address in session.execute(query)
            ]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _revisions(session: Session, service_id: str) -> list[ServiceRevisionRow]:
    query = select(ServiceRevisionRow).where(ServiceRevisionRow.service_id == service_id)
    return list(session.scalars(query.order_by(ServiceRevisionRow.number)))


def _record(session: Session, row: ServiceRow) -> ServiceRecord:
    revisions = tuple(
        Revision(
            r.number,
            ServiceSpec.model_validate(r.spec),
            r.state,
            r.reason,
            r.created_at,
            r.model_version,
            r.model_path,
        )
        for r in _revisions(session, row.id)
    )
    return ServiceRecord(
        row.id,
        row.tenant,
        row.name,
        ServiceSpec.model_validate(row.spec),
        row.stable_revision,
        row.canary_revision,
        row.token_digest,
        row.created_at,
        revisions,
    )
