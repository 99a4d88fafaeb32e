"""``/models``: the model registry of the caller's tenant (register a job's model, list, show, alias).

Names are per tenant (``iris`` of one tenant is not another's); admins name a tenant with ``?tenant=``
(default: their own). An alias move is one transaction: serving follows it (``Registry.alias_version``).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from corral.api_models import Problem
from corral.server.auth import EVERYONE, REFUSALS, SUBMITTERS, allow, refuse, visible_job
from corral.server.routes.mlflow import unavailable
from corral.server.services import ControlPlane, control_plane
from corral.store.accounts import Principal

UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Problem, "description": "MLflow is starting, or could not be opened."},
}
"""Besides the refusals: a server without MLflow installed answers a 404 that says to install it."""
router = APIRouter(tags=["models"], responses=REFUSALS | UNAVAILABLE)
Plane = Annotated[ControlPlane, Depends(control_plane)]
Reader = Annotated[Principal, Depends(allow(*EVERYONE))]
Submitter = Annotated[Principal, Depends(allow(*SUBMITTERS))]
ModelName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", description="Model name.")]
Tenant = Annotated[str | None, Query(description="Admins only: whose models (default: their own tenant's).")]


class ModelVersion(BaseModel):
    name: str
    version: int
    source: str
    run_id: str | None
    created_at: float
    aliases: list[str]
    lineage: dict[str, Any] = Field(
        description="job, attempt, pipeline_run, pipeline_step, code, command_sha256, queue, run_id, inputs."
    )


class Model(BaseModel):
    name: str
    aliases: dict[str, int]
    latest_version: int | None
    versions: list[ModelVersion]
    created_at: float
    updated_at: float


class Registration(BaseModel):
    job_id: str = Field(min_length=1, max_length=40)
    path: str = Field(
        min_length=1, max_length=1000, description="An artifact path in the job's run: `model`."
    )
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class AliasMove(BaseModel):
    version: int = Field(ge=1)


def _registry(request: Request, principal: Principal) -> Any:
    service = getattr(request.app.state, "mlops", None)
    refusal = unavailable(service)
    if refusal is not None:
        refuse(request, *refusal, principal)
    return service.current.registry


def _tenant(principal: Principal, tenant: str | None) -> str:
    return tenant if principal.is_admin and tenant else principal.tenant


def _model(info: Any) -> Model:
    return Model(
        name=info.name,
        aliases=info.aliases,
        latest_version=info.latest_version,
        versions=[ModelVersion(**asdict(v)) for v in info.versions],
        created_at=info.created_at,
        updated_at=info.updated_at,
    )


async def _call(request: Request, principal: Principal, function: Any, *args: Any) -> Any:
    from corral.mlops.registry import RegistryError

    try:
        return await run_in_threadpool(function, *args)
    except RegistryError as error:
        refuse(request, error.status, str(error), principal)


@router.get("/models", response_model=list[Model])
async def list_models(request: Request, principal: Reader, tenant: Tenant = None) -> list[Model]:
    """The tenant's registered models, with their versions and aliases."""
    registry = _registry(request, principal)
    found = await _call(request, principal, registry.models, _tenant(principal, tenant))
    return [_model(info) for info in found]


@router.get("/models/{name}", response_model=Model)
async def show_model(request: Request, name: ModelName, principal: Reader, tenant: Tenant = None) -> Model:
    """A model's versions (with lineage: job, pipeline run and step, code digest, inputs) and aliases."""
    registry = _registry(request, principal)
    return _model(await _call(request, principal, registry.show, _tenant(principal, tenant), name))


@router.post("/models", response_model=ModelVersion, status_code=201)
async def register_model(
    request: Request, registration: Registration, plane: Plane, principal: Submitter
) -> ModelVersion:
    """A new version of ``name`` from artifact ``path`` of a job's run (the job's tenant's model)."""
    registry = _registry(request, principal)
    job = await run_in_threadpool(visible_job, request, plane, principal, registration.job_id)
    version = await _call(
        request, principal, registry.register, job.tenant, job.id, registration.path, registration.name
    )
    return ModelVersion(**asdict(version))


@router.put("/models/{name}/aliases/{alias}", response_model=Model)
async def move_alias(
    request: Request,
    name: ModelName,
    alias: Annotated[str, Path(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")],
    move: AliasMove,
    principal: Submitter,
    tenant: Tenant = None,
) -> Model:
    """Point ``alias`` at ``version`` in one transaction (serving follows it)."""
    registry = _registry(request, principal)
    return _model(
        await _call(
            request, principal, registry.set_alias, _tenant(principal, tenant), name, alias, move.version
        )
    )
