"""Queues and cohorts: everyone may read them; admins create, change and delete queues.

A cohort is the set of queues that name it, so it is made and unmade by editing queues.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from corral.api_models import Cohort, QueueState
from corral.server.auth import CONFLICT, EVERYONE, REFUSALS, allow, refuse
from corral.server.params import QueueName
from corral.server.services import ControlPlane, control_plane
from corral.spec.queue import QueueConfig
from corral.store.accounts import Principal
from corral.store.queues import QueueInUse, QueueNotFound

router = APIRouter(tags=["queues"], responses=REFUSALS)
Plane = Annotated[ControlPlane, Depends(control_plane)]
Reader = Annotated[Principal, Depends(allow(*EVERYONE))]
Admin = Annotated[Principal, Depends(allow("admin"))]


@router.get("/queues", response_model=list[QueueState])
def list_queues(plane: Plane, principal: Reader) -> list[QueueState]:
    """Every queue with its quota, who may use it, and its pending and running jobs (counted over all
    tenants: queue depth is not any one tenant's secret)."""
    depth = plane.jobs.queue_depths()
    return [
        QueueState(
            **queue.model_dump(),
            pending=depth.get((queue.name, "pending"), 0),
            running=depth.get((queue.name, "running"), 0),
            yours=queue.admits(principal.tenant),
        )
        for queue in plane.queues.list()
    ]


@router.get("/cohorts", response_model=list[Cohort])
def cohorts(plane: Plane, _: Reader) -> list[Cohort]:
    """Cohorts with their member queues and the GPUs per flavor they lend each other (summed quota)."""
    found: dict[str, Cohort] = {}
    for queue in plane.queues.list():
        if queue.cohort is None:
            continue
        cohort = found.setdefault(queue.cohort, Cohort(name=queue.cohort, queues=[], quota={}))
        cohort.queues.append(queue.name)
        for flavor, gpus in (queue.quota or {}).items():
            cohort.quota[flavor] = cohort.quota.get(flavor, 0.0) + gpus
    return sorted(found.values(), key=lambda c: c.name)


@router.put(
    "/queues/{name}",
    response_model=QueueConfig,
    responses={201: {"model": QueueConfig, "description": "Created: a new queue."}},
)
def put_queue(
    request: Request, name: QueueName, queue: QueueConfig, plane: Plane, principal: Admin, response: Response
) -> QueueConfig:
    """Create the queue (201) or replace its settings (200); the next round schedules with them."""
    if queue.name != name:
        refuse(request, 422, f"name: the body names queue {queue.name!r}, the path {name!r}", principal)
    snapshot = plane.empty_snapshot()
    if not snapshot.nodes_may_join:
        flavors = {pool.flavor for pool in snapshot.pools.values()} | {
            n.flavor for n in snapshot.nodes.values()
        }
        unknown = sorted((set(queue.quota or {}) | set(queue.borrowing_limit or {})) - flavors)
        if unknown:
            refuse(
                request,
                422,
                f"quota: no pool has flavor {', '.join(unknown)}, and this cluster's nodes are all declared; "
                f"flavors: {', '.join(sorted(flavors)) or 'none'}",
                principal,
            )
    response.status_code = 201 if plane.queues.put(queue) else 200
    plane.inventory_changed()
    return queue


@router.delete("/queues/{name}", status_code=204, responses=CONFLICT)
def delete_queue(request: Request, name: QueueName, plane: Plane, principal: Admin) -> None:
    """Refused (409) while pending or running jobs use the queue."""
    try:
        plane.queues.delete(name)
    except QueueNotFound as error:
        refuse(request, 404, str(error), principal)
    except QueueInUse as error:
        refuse(request, 409, str(error), principal)
    plane.inventory_changed()
