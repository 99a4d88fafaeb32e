"""Uploaded working folders: a submitter uploads the archive its job will name (``code: sha256:...``);
its pods start in a copy (``corral.workdirs``). Each tenant has its own uploads: a job may name only
its tenant's, and asking about a digest says nothing about other tenants' code."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from corral.api_models import CodeUpload
from corral.server.auth import EVERYONE, REFUSALS, SUBMITTERS, allow, refuse
from corral.server.services import ControlPlane, control_plane
from corral.spec.job import CODE_DIGEST
from corral.store.accounts import Principal
from corral.store.code import CodeMismatch, CodeQuotaExceeded, CodeStore
from corral.workdirs import MAX_CODE_BYTES

router = APIRouter(tags=["code"], responses=REFUSALS)
Plane = Annotated[ControlPlane, Depends(control_plane)]
Reader = Annotated[Principal, Depends(allow(*EVERYONE))]
Submitter = Annotated[Principal, Depends(allow(*SUBMITTERS))]
Digest = Annotated[str, Path(pattern=CODE_DIGEST, description="sha256:<hex> of the archive.")]
ARCHIVE = {
    "required": True,
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    "description": f"The folder as a gzipped tar (corral.workdirs.pack), at most {MAX_CODE_BYTES >> 20} MiB.",
}


@router.put("/code/{digest}", response_model=CodeUpload, openapi_extra={"requestBody": ARCHIVE})
async def upload(request: Request, digest: Digest, plane: Plane, principal: Submitter) -> CodeUpload:
    """Keep a working folder for the caller's tenant; uploading one it has already stores nothing. The
    body must hash to ``digest`` (422 otherwise). Room is made by removing the tenant's least recently
    used archives that no pending or running job names; 413 when those are not enough."""
    data = await request.body()
    store = _store(request, plane, principal)
    try:
        stored = store.keep(principal.tenant, digest, data, lambda: plane.jobs.codes_in_use(principal.tenant))
    except CodeMismatch as error:
        refuse(request, 422, str(error), principal)
    except CodeQuotaExceeded as error:
        refuse(request, 413, str(error), principal)
    return CodeUpload(digest=digest, size=len(data), stored=stored)


@router.get("/code/{digest}", response_model=CodeUpload)
def uploaded(request: Request, digest: Digest, plane: Plane, principal: Reader) -> CodeUpload:
    """Whether the caller's tenant has uploaded ``digest`` (404 if not): a client asks before uploading."""
    path = _store(request, plane, principal).path(principal.tenant, digest)
    if not path.is_file():
        refuse(request, 404, f"tenant {principal.tenant} has no code {digest}", principal)
    return CodeUpload(digest=digest, size=path.stat().st_size)


def _store(request: Request, plane: ControlPlane, principal: Principal) -> CodeStore:
    if plane.code is None:
        refuse(
            request, 404, "this server keeps no uploaded code (it was started without a data dir)", principal
        )
    return plane.code
