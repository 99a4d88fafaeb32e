"""Nodes and clusters: what the control plane schedules onto, and the routes agents call for their node."""

from __future__ import annotations

import hashlib
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from corral.api_models import (
    Job,
    LogChunk,
    LogLength,
    NodeRegistration,
    NodeState,
    PodExit,
    PodStart,
    Problem,
)
from corral.backends.local import desired_pods
from corral.backends.pods import DesiredPod
from corral.control.addresses import AddressRefused, check_advertised
from corral.control.fleet import RegistrationConflict, check_registration
from corral.control.reconcile import heartbeat_timeout
from corral.core.nodes import Node
from corral.limits import INT32_MAX
from corral.server.auth import AGENTS, CONFLICT, EVERYONE, REFUSALS, allow, audit, caller, refuse, speak_for
from corral.server.params import JobId, NodeName, PodIndex
from corral.server.routes.jobs import as_job
from corral.server.routes.mlflow import attach_tracking
from corral.server.services import ControlPlane, control_plane
from corral.store.accounts import Principal
from corral.store.jobs import JobNotFound, StaleAttempt

router = APIRouter(tags=["nodes"], responses=REFUSALS)
Plane = Annotated[ControlPlane, Depends(control_plane)]
Reader = Annotated[Principal, Depends(allow(*EVERYONE))]
Agent = Annotated[Principal, Depends(allow(*AGENTS))]
Admin = Annotated[Principal, Depends(allow("admin"))]
LONGEST_WAIT_SECONDS = 60.0
"""Most a long-poll for a node's pods may wait: a parked request holds a connection, not a thread."""
NodeAddress = Annotated[
    str | None,
    Query(
        max_length=255,
        pattern=r"^[A-Za-z0-9:][A-Za-z0-9.:-]*$",
        description="Where the node's replicas are reached (an IP address or host name); default: the "
        "address the request comes from.",
    ),
]
STALE = {409: {"model": Problem, "description": "The report is about an attempt that is over."}}


@router.get("/clusters")
def clusters(plane: Plane, _: Reader) -> list[dict[str, Any]]:
    """The clusters and their pools (flavor, tier, node shape, count, cost), as configured."""
    return [cluster.model_dump(mode="json") for cluster in plane.inventory.clusters]


@router.get("/nodes", response_model=list[NodeState])
def list_nodes(plane: Plane, _: Reader) -> list[NodeState]:
    """Every node: declared in the cluster file or registered by an agent, with what runs on it."""
    return _node_states(plane, list(plane.empty_snapshot().nodes.values()))


@router.put("/nodes/{name}", response_model=NodeState, responses=CONFLICT)
def register(
    request: Request,
    name: NodeName,
    registration: NodeRegistration,
    plane: Plane,
    principal: Agent,
    address: NodeAddress = None,
) -> NodeState:
    """An agent registers its machine (again whenever a GPU's health changes). A new name becomes a node
    the next round schedules onto; a name the cluster file declares takes the GPUs' health from here,
    and a different GPU count is refused (409), as is a node this server runs itself. An agent
    registers only its own node (403)."""
    speak_for(request, plane, principal, name)
    if name in plane.local_nodes:
        refuse(request, 409, f"node {name} is run by this server itself; it takes no registration", principal)
    try:
        check_registration(plane.inventory.clusters, name, registration)
    except RegistrationConflict as error:
        refuse(request, 409, str(error), principal)
    plane.nodes.register(name, registration, _address(request, address, principal))
    plane.inventory_changed()
    return _node_states(plane, [plane.empty_snapshot().nodes[name]])[0]


@router.delete("/nodes/{name}", status_code=204)
def remove(request: Request, name: NodeName, plane: Plane, principal: Admin) -> None:
    """Forget a node's registration and heartbeats (admins). A machine only an agent registered leaves
    the fleet and its running work is requeued, as for a node that went down; a node the cluster file
    declares goes back to its declared shape. An agent still running re-registers: revoke its tokens
    first to keep it out."""
    if not plane.nodes.remove(name):
        declared = plane.inventory_node(name) is not None
        hint = " (the cluster file declares it: remove it there)" if declared else ""
        refuse(request, 404, f"no registration of node {name!r}{hint}", principal)
    audit.info("node %s removed by %s", name, caller(principal))
    plane.inventory_changed()


@router.post("/nodes/{name}/heartbeat", response_model=NodeState)
def heartbeat(
    request: Request, name: NodeName, plane: Plane, principal: Agent, address: NodeAddress = None
) -> NodeState:
    """An agent says its node is alive (and where its replicas are reached); nodes silent for longer
    than the answer's ``heartbeat_timeout`` are down and their work is requeued (and their agents stop
    their pods)."""
    node = _known(request, plane, principal, name)
    speak_for(request, plane, principal, name)
    plane.nodes.heartbeat(name, _address(request, address, principal))
    return _node_states(plane, [node])[0]


@router.get("/nodes/{name}/pods", response_model=list[DesiredPod])
async def node_pods(
    request: Request,
    response: Response,
    name: NodeName,
    plane: Plane,
    principal: Agent,
    wait: Annotated[float, Query(ge=0, le=LONGEST_WAIT_SECONDS)] = 0.0,
    if_none_match: Annotated[str | None, Header()] = None,
) -> list[DesiredPod]:
    """The pods the node's agent should be running now; anything else it runs, it stops. The answer's
    ``ETag`` names this set of pods. A long-poll: with ``wait`` and ``If-None-Match`` set to the last
    answer's tag, the answer comes as soon as the node's pods differ from that one (the reconcile
    loop committed a round that changed them), or after ``wait`` seconds with the same pods."""
    await run_in_threadpool(_agent_of, request, plane, principal, name)
    deadline = time.monotonic() + wait
    while True:
        seen = plane.decisions()
        pods = await run_in_threadpool(desired_pods, plane.jobs, name)
        tag = _tag(pods)
        left = deadline - time.monotonic()
        if tag != if_none_match or left <= 0:
            response.headers["ETag"] = tag
            return await attach_tracking(request, pods)
        await plane.wait_for_decisions(seen, left)


@router.post("/jobs/{job_id}/pods/{pod}/start", status_code=204, tags=["jobs"], responses=STALE)
def pod_start(
    request: Request, job_id: JobId, pod: PodIndex, report: PodStart, plane: Plane, principal: Agent
) -> Response:
    """An agent reports the port a pod was given where it started (``listen_port``: a service's
    replica), which the gateway reaches it at. Only the agent of the pod's node may (403), and only for
    the job's current attempt (409)."""
    _reporter(request, plane, principal, job_id, report.attempt, pod)
    try:
        plane.jobs.record_port(job_id, report.attempt, pod, report.port)
    except JobNotFound as error:
        refuse(request, 404, str(error), principal)
    except StaleAttempt as error:
        refuse(request, 409, str(error), principal)
    return Response(status_code=204)


@router.post("/jobs/{job_id}/pods/{pod}/exit", response_model=Job, tags=["jobs"], responses=STALE)
def pod_exit(
    request: Request, job_id: JobId, pod: PodIndex, report: PodExit, plane: Plane, principal: Agent
) -> Job:
    """An agent reports a pod's exit code; the job ends when all its pods have. Only the agent of the
    pod's node may (403), and only for the job's current attempt (409: that attempt is over)."""
    _reporter(request, plane, principal, job_id, report.attempt, pod)
    try:
        job = as_job(plane.jobs.record_exit(job_id, report.attempt, pod, report.code))
    except JobNotFound as error:
        refuse(request, 404, str(error), principal)
    except StaleAttempt as error:
        refuse(request, 409, str(error), principal)
    plane.changed()
    return job


@router.post("/jobs/{job_id}/pods/{pod}/logs", response_model=LogLength, tags=["jobs"], responses=STALE)
def ship_logs(
    request: Request, job_id: JobId, pod: PodIndex, chunk: LogChunk, plane: Plane, principal: Agent
) -> LogLength:
    """An agent ships a pod's new output. A chunk that does not start where the stored output ends is
    ignored; the answer says where it ends, so the agent resumes there. Only the agent of the pod's node
    may (403), and only while the job runs that attempt (409)."""
    _reporter(request, plane, principal, job_id, chunk.attempt, pod)
    return LogLength(length=plane.shipped_logs.append(job_id, chunk.attempt, pod, chunk.offset, chunk.text))


@router.get(
    "/jobs/{job_id}/pods/{pod}/code",
    response_class=FileResponse,
    tags=["jobs", "code"],
    responses={200: {"content": {"application/gzip": {}}, "description": "The job's uploaded code."}} | STALE,
)
def pod_code(
    request: Request,
    job_id: JobId,
    pod: PodIndex,
    plane: Plane,
    principal: Agent,
    attempt: Annotated[int, Query(ge=1, le=INT32_MAX, description="The attempt the pod runs.")],
) -> FileResponse:
    """The job's uploaded working folder (its spec's ``code``), for the agent of the node the pod runs
    on, which unpacks it into the pod's folder (403 for other agents, 409 for an attempt that is over)."""
    _reporter(request, plane, principal, job_id, attempt, pod)
    record = plane.jobs.get(job_id)
    digest = record.spec.get("code")
    path = plane.code.path(record.tenant, digest) if plane.code is not None and digest else None
    if path is None or not path.is_file():
        refuse(request, 404, f"job {job_id} has no uploaded code on this server", principal)
    return FileResponse(path, media_type="application/gzip")


def _reporter(
    request: Request, plane: ControlPlane, principal: Principal, job_id: str, attempt: int, pod: int
) -> None:
    """Refuse a report about a pod from anyone but its node's agent (or an admin), or about an attempt
    that is not the job's current run: the fence that keeps a cut-off agent from changing a job that
    runs again elsewhere."""
    try:
        node = plane.jobs.pod_node(job_id, attempt, pod)
    except JobNotFound as error:
        refuse(request, 404, str(error), principal)
    except StaleAttempt as error:
        refuse(request, 409, str(error), principal)
    speak_for(request, plane, principal, node)


def _agent_of(request: Request, plane: ControlPlane, principal: Principal, name: str) -> None:
    """Refuse anyone but the node's agent (or an admin), and a node this control plane does not know."""
    _known(request, plane, principal, name)
    speak_for(request, plane, principal, name)


def _tag(pods: list[DesiredPod]) -> str:
    """An ETag for a node's pods: a pod's key (job, attempt, pod) fixes all the rest of it."""
    keys = ",".join(f"{job}/{attempt}/{pod}" for job, attempt, pod in sorted(p.key for p in pods))
    return '"' + hashlib.sha256(keys.encode()).hexdigest()[:16] + '"'


def _known(request: Request, plane: ControlPlane, principal: Principal, name: str) -> Node:
    node = plane.inventory_node(name)
    if node is None:
        refuse(request, 404, f"no node {name!r} in this control plane's inventory", principal)
    return node


def _address(request: Request, advertised: str | None, principal: Principal) -> str | None:
    """Where the agent's node is reached: what it advertises (422 for the server's own loopback from
    elsewhere, the cloud's metadata address and other addresses no node has), else the address it
    connects from."""
    seen = request.client.host if request.client is not None else None
    if advertised is None:
        return seen
    try:
        return check_advertised(advertised, seen)
    except AddressRefused as error:
        refuse(request, 422, f"address: {error}", principal)


def _node_states(plane: ControlPlane, nodes: list[Node]) -> list[NodeState]:
    held, registered, heard, addresses = (
        plane.jobs.allocated_gpus(),
        plane.nodes.registrations(),
        plane.nodes.last_heard(),
        plane.nodes.addresses(),
    )
    return [
        NodeState(
            name=node.name,
            cluster=node.cluster,
            pool=node.pool,
            flavor=node.flavor,
            cpu=node.cpu,
            memory_gib=node.memory_gib,
            gpus=len(node.gpus),
            gpu_model=node.gpu_model,
            gpus_allocated=held.get(node.name, 0.0),
            unhealthy_gpus=[gpu.index for gpu in node.gpus if not gpu.healthy],
            registered=node.name in registered,
            gpus_outside=sum(1 for g in registered[node.name].gpus if g.held_by)
            if node.name in registered
            else 0,
            last_heartbeat=heard.get(node.name),
            heartbeat_timeout=heartbeat_timeout(plane.inventory, registered=node.name in registered),
            address=addresses.get(node.name),
        )
        for node in nodes
    ]
