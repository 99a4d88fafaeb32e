"""Artifacts: copying a job's files to a cluster's object store.

Members copy their tenant's jobs' artifacts, admins any job's; viewers may not. Whether an artifact may
go to a cluster is the federation rule's (``corral.federation.artifacts``): a refusal is a 403 whose
message says what would be allowed, logged on ``corral.audit`` by the copy itself.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request

from corral.api_models import Artifact, ArtifactPush, Problem
from corral.federation.artifacts import ArtifactCopy, ArtifactRefused
from corral.federation.job_files import ArtifactNotFound, ArtifactOfAnotherJob, job_folders, locate
from corral.federation.transfer import ArtifactOutside, ObjectStoreError, push
from corral.server.auth import REFUSALS, SUBMITTERS, allow, caller, refuse, visible_job
from corral.server.params import JobId
from corral.server.services import ControlPlane, control_plane
from corral.spec.job import JobSpec
from corral.store.accounts import Principal

router = APIRouter(tags=["artifacts"], responses=REFUSALS)
Plane = Annotated[ControlPlane, Depends(control_plane)]
Submitter = Annotated[Principal, Depends(allow(*SUBMITTERS))]

ANSWERS: dict[int | str, dict[str, Any]] = {
    403: {
        "model": Problem,
        "description": "The artifact may not go to that cluster, is another job's, or the caller may not.",
    },
    422: {
        "model": Problem,
        "description": "No such cluster or object store, no such file of the job, or a link out of its folders.",
    },
    502: {"model": Problem, "description": "The object store did not take the copy."},
}


@router.post("/jobs/{job_id}/artifacts", status_code=201, response_model=Artifact, responses=ANSWERS)
def push_artifact(
    request: Request, job_id: JobId, body: ArtifactPush, plane: Plane, principal: Submitter
) -> Artifact:
    """Copy a file or directory of the job's (on the server's machine) to a cluster's object store, under
    ``<tenant>/<job id>/<path inside the job's folder>``. To a public cluster only models and
    checkpoints of jobs that are not sensitive may go; anything may go to a private cluster. Only files
    the job's own pods wrote are its artifacts: a path into another job's folder is refused (403)."""
    record = visible_job(request, plane, principal, job_id)
    clusters = {cluster.name: cluster for cluster in plane.inventory.clusters}
    cluster = clusters.get(body.cluster)
    if cluster is None:
        known = ", ".join(sorted(clusters)) or "none"
        refuse(request, 422, f"cluster: no cluster {body.cluster!r}; clusters: {known}", principal)
    if cluster.object_store is None:
        refuse(
            request,
            422,
            f"cluster: {cluster.name!r} has no object_store in the cluster file; artifacts cannot go there",
            principal,
        )
    spec = JobSpec.model_validate(record.spec)
    folders = job_folders(record.id, spec, plane.runs)
    try:
        source, name = locate(body.path, record.id, folders, plane.runs)
    except ArtifactNotFound as error:
        refuse(request, 422, str(error), principal)
    except ArtifactOfAnotherJob as error:
        refuse(request, 403, str(error), principal)
    copy = ArtifactCopy(
        job=record.id,
        sensitive=spec.sensitive,
        artifact=name,
        kind=body.kind,
        cluster=cluster.name,
        private=cluster.private,
    )
    try:
        pushed = push(copy, source, record.tenant, cluster.object_store, caller(principal), folders)
    except ArtifactOutside as error:
        refuse(request, 422, f"path: {body.path!r}: {error}", principal)
    except ArtifactRefused as refusal:
        raise HTTPException(status_code=403, detail=str(refusal)) from None
    except ObjectStoreError as error:
        raise HTTPException(status_code=502, detail=str(error)) from None
    return Artifact(
        job_id=record.id,
        name=name,
        kind=body.kind,
        cluster=cluster.name,
        url=pushed.url,
        keys=list(pushed.keys),
        size=pushed.size,
    )
