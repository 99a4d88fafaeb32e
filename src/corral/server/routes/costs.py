"""What GPUs cost, per tenant, queue or cluster over a period. Members and viewers see their tenant's
spend only; admins see everyone's."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from corral.api_models import Spend
from corral.server.auth import EVERYONE, REFUSALS, allow, refuse
from corral.server.services import ControlPlane, control_plane
from corral.store.accounts import Principal
from corral.store.costs import Grouping, spend

router = APIRouter(tags=["costs"], responses=REFUSALS)
Plane = Annotated[ControlPlane, Depends(control_plane)]
Reader = Annotated[Principal, Depends(allow(*EVERYONE))]


@router.get("/cost", response_model=list[Spend])
def cost(
    request: Request,
    plane: Plane,
    principal: Reader,
    since: Annotated[float | None, Query(description="Unix seconds; default: 30 days ago.")] = None,
    until: Annotated[float | None, Query(description="Unix seconds; default: now.")] = None,
    by: Grouping = "tenant",
    tenant: Annotated[str | None, Query(description="Admins only; others always see their own.")] = None,
) -> list[Spend]:
    """USD and GPU-hours over [since, until): allocated GPUs x hours x their pool's `gpu_hour_cost`."""
    end = until if until is not None else time.time()
    start = since if since is not None else end - 30 * 86400
    if start >= end:
        refuse(request, 422, f"since ({start:g}) must be before until ({end:g})", principal)
    scope = tenant if principal.is_admin else principal.tenant
    return [
        Spend(key=s.key, usd=s.usd, gpu_hours=s.gpu_hours)
        for s in spend(plane.jobs.engine, start, end, by, scope)
    ]
