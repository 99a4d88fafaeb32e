"""Cost accounting: what each tenant, queue and cluster spent on GPUs over a period.

A pod's charge opens when it starts (its GPUs and the price of its node's pool) and closes when it stops
for any reason: it finished, failed, was cancelled, preempted, or its node was lost. Cost over a period
is the sum over charges of GPUs x hours inside the period x price, so a report for last week does not
change when jobs start today.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Engine, delete, or_, select, update
from sqlalchemy.orm import Session

from corral.scheduling.decisions import Placement
from corral.store.schema import ChargeRow, PlacementRow

Grouping = Literal["tenant", "queue", "cluster"]


@dataclass(frozen=True)
class Spend:
    key: str
    usd: float
    gpu_hours: float


def open_charges(
    session: Session,
    job: tuple[str, int, str, str],
    placements: Iterable[Placement],
    where: dict[str, tuple[str, str, float]],
    now: float,
) -> None:
    """Charges for a job's pods that start now. ``job``: (id, attempt, tenant, queue); ``where``: node ->
    (cluster, pool, price per GPU-hour)."""
    job_id, attempt, tenant, queue = job
    for placement in placements:
        cluster, pool, price = where[placement.node]
        session.add(
            ChargeRow(
                job_id=job_id,
                attempt=attempt,
                pod=placement.pod,
                tenant=tenant,
                queue=queue,
                cluster=cluster,
                pool=pool,
                gpus=len(placement.gpus) * placement.gpu_milli / 1000,
                gpu_hour_cost=price,
                started_at=now,
            )
        )


def release(session: Session, job_id: str, now: float) -> None:
    """The job's pods stop holding anything: placements go, charges close."""
    release_many(session, [job_id], now)


def release_many(session: Session, job_ids: Sequence[str], now: float) -> None:
    """``release`` for several jobs in two statements (a round's exits)."""
    if not job_ids:
        return
    session.execute(delete(PlacementRow).where(PlacementRow.job_id.in_(job_ids)))
    open_ones = (ChargeRow.job_id.in_(job_ids), ChargeRow.ended_at.is_(None))
    session.execute(update(ChargeRow).where(*open_ones).values(ended_at=now))


def spend(engine: Engine, since: float, until: float, by: Grouping, tenant: str | None = None) -> list[Spend]:
    """USD and GPU-hours per ``by`` over [since, until), most expensive first; charges still open count
    up to ``until``. With ``tenant``, only that tenant's charges."""
    query = select(ChargeRow).where(
        ChargeRow.started_at < until, or_(ChargeRow.ended_at.is_(None), ChargeRow.ended_at > since)
    )
    if tenant is not None:
        query = query.where(ChargeRow.tenant == tenant)
    usd: dict[str, float] = defaultdict(float)
    hours: dict[str, float] = defaultdict(float)
    with Session(engine) as session:
        for row in session.scalars(query):
            gpu_hours = _gpu_hours_within(row, since, until)
            key = getattr(row, by)
            hours[key] += gpu_hours
            usd[key] += gpu_hours * row.gpu_hour_cost
    return sorted((Spend(key, usd[key], hours[key]) for key in hours), key=lambda s: (-s.usd, s.key))


def public_spend(
    session: Session, periods: dict[str, float], public_clusters: set[str], now: float
) -> dict[str, float]:
    """USD each queue spent on ``public_clusters`` from its budget period's start (``periods``) to ``now``:
    what the scheduler checks hard budgets against."""
    spent = dict.fromkeys(periods, 0.0)
    if not periods or not public_clusters:
        return spent
    query = select(ChargeRow).where(
        ChargeRow.queue.in_(list(periods)),
        ChargeRow.cluster.in_(list(public_clusters)),
        ChargeRow.started_at < now,
        or_(ChargeRow.ended_at.is_(None), ChargeRow.ended_at > min(periods.values())),
    )
    for row in session.scalars(query):
        spent[row.queue] += _gpu_hours_within(row, periods[row.queue], now) * row.gpu_hour_cost
    return spent


def _gpu_hours_within(row: ChargeRow, since: float, until: float) -> float:
    """GPU-hours of one charge inside [since, until); an open charge runs to ``until``."""
    end = min(row.ended_at if row.ended_at is not None else until, until)
    return max(0.0, end - max(row.started_at, since)) / 3600 * row.gpus
