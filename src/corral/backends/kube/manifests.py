"""A corral pod as a Kubernetes Pod, and a Pod's status as what corral records.

corral is the scheduler: ``spec.nodeName`` is the node it chose, so kube-scheduler never sees the Pod.
GPUs are asked for as the device plugins that enforce them expect:

- whole GPUs: ``limits: {nvidia.com/gpu: N}`` (the NVIDIA device plugin / GPU Operator);
- a share of one GPU: HAMi's ``nvidia.com/gpu: 1``, ``nvidia.com/gpumem`` (MiB) and ``nvidia.com/gpucores``
  (percent), with the annotations HAMi's own scheduler would have written naming the device corral chose
  (``hami.io/vgpu-devices-to-allocate``/``-allocated`` as ``UUID,NVIDIA,MiB,cores:;``, ``hami.io/vgpu-node``,
  ``hami.io/bind-phase: allocating``) and ``nvidia.com/use-gpuuuid``, so HAMi's device plugin hands the
  Pod that GPU and enforces the share's memory and compute.

A Pod is untrusted code, so it is confined as Kubernetes' ``restricted`` Pod Security level asks, whatever
its image says: it runs as ``run_as_user`` (never root), without privilege escalation or capabilities,
under the runtime's default seccomp profile, with no ServiceAccount token (the API server gets nothing
from it) and no environment variables naming the cluster's Services; its memory request is also its
limit. The spec cannot name host namespaces, volumes, node selectors or annotations (its fields are
closed). Each tenant's Pods get a NetworkPolicy that lets in only that tenant's own Pods, and a tenant's
namespace (``tenant_namespaces``) carries the ``restricted`` enforcement labels.

Inside a container its GPUs are numbered from 0, whichever they are on the node: the Pod gets
``CUDA_VISIBLE_DEVICES=0..N-1``, ``NVIDIA_VISIBLE_DEVICES`` with the chosen GPUs' UUIDs (what the NVIDIA
container runtime selects by, where no device plugin chooses) and ``CORRAL_GPU_INDEXES`` with corral's
node-level indexes. Labels name the job, attempt, pod, tenant and queue, so the backend (and a restarted
server) finds its Pods by label.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from typing import Any

from corral.backends.kube.nodes import GPU_RESOURCE
from corral.backends.pods import DesiredPod
from corral.core.units import MILLI_PER_GPU

MANAGED_BY = "app.kubernetes.io/managed-by"
CORRAL = "corral"
JOB_LABEL = "corral.dev/job"
ATTEMPT_LABEL = "corral.dev/attempt"
POD_LABEL = "corral.dev/pod"
TENANT_LABEL = "corral.dev/tenant"
QUEUE_LABEL = "corral.dev/queue"
CONTAINER = "main"
GPU_MEMORY_RESOURCE = "nvidia.com/gpumem"
GPU_CORES_RESOURCE = "nvidia.com/gpucores"
HAMI_TO_ALLOCATE = "hami.io/vgpu-devices-to-allocate"
HAMI_ALLOCATED = "hami.io/vgpu-devices-allocated"
HAMI_NODE = "hami.io/vgpu-node"
HAMI_BIND_PHASE = "hami.io/bind-phase"
HAMI_BIND_TIME = "hami.io/bind-time"
HAMI_USE_UUID = "nvidia.com/use-gpuuuid"
PENDING_ERRORS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
"""Waiting reasons that will not clear by themselves: past the pending timeout they end the attempt."""
NO_EXIT_CODE = 137
NAME_LIMIT = 63
"""Longest namespace name and label value Kubernetes takes."""
POD_SECURITY = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}
"""Namespace labels of Pod Security admission (Kubernetes 1.25+): what corral's Pods already are."""
ISOLATION_POLICY = "corral-tenant-"
"""A Pod that failed without its container reporting an exit code (evicted, deadline): as if killed."""


class MissingImage(ValueError):
    """The job has no ``image:``, which a Kubernetes cluster needs."""


def pod_name(key: tuple[str, int, int]) -> str:
    job_id, attempt, pod = key
    return _dns(f"corral-{job_id}-a{attempt}-p{pod}")


def pod_key(labels: dict[str, str] | None) -> tuple[str, int, int] | None:
    """(job, attempt, pod) of a Pod corral created, from its labels; None for any other Pod."""
    labels = labels or {}
    try:
        return labels[JOB_LABEL], int(labels[ATTEMPT_LABEL]), int(labels[POD_LABEL])
    except (KeyError, ValueError):
        return None


def tenant_namespace(prefix: str, tenant: str) -> str:
    """``<prefix>-<tenant>``; a name too long for a namespace keeps a digest of the whole, so two tenants
    whose names share their first 55 characters never share a namespace."""
    return _bounded(f"{prefix}-{tenant}".lower())


def namespace_manifest(name: str) -> dict[str, Any]:
    """A tenant's namespace, marked as corral's and enforcing the ``restricted`` Pod Security level."""
    return {"metadata": {"name": name, "labels": {MANAGED_BY: CORRAL} | POD_SECURITY}}


def isolation_policy(namespace: str, tenant: str) -> dict[str, Any]:
    """A NetworkPolicy for the tenant's Pods in ``namespace``: in-bound traffic only from the same
    tenant's Pods there (a gang's pods reach each other), so another tenant's Pods, and anything else in
    the cluster, cannot reach them. Out-bound traffic is left alone: jobs fetch data and images."""
    label = label_value(tenant)
    own = {"matchLabels": {MANAGED_BY: CORRAL, TENANT_LABEL: label}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": _bounded(ISOLATION_POLICY + label.lower()),
            "namespace": namespace,
            "labels": {MANAGED_BY: CORRAL},
        },
        "spec": {
            "podSelector": own,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": own}]}],
        },
    }


def pod_manifest(
    pod: DesiredPod,
    namespace: str,
    uuids: tuple[str, ...],
    gpu_memory_gib: float,
    port: int | None = None,
    run_as_user: int = 1000,
) -> dict[str, Any]:
    """The Pod that runs ``pod`` (see the module docstring). ``uuids``: the node's GPUs by index;
    ``gpu_memory_gib``: each GPU's memory, for a share that names none of its own; ``run_as_user``:
    the uid and gid its container runs as."""
    spec = pod.spec
    if spec.image is None:
        raise MissingImage(
            "this job was placed on a Kubernetes cluster, whose pods run in containers: add `image:` "
            "(e.g. image: nvcr.io/nvidia/pytorch:24.05-py3) to the job spec"
        )
    chosen = [uuids[i] if i < len(uuids) else str(i) for i in pod.gpus]
    share = bool(pod.gpus) and pod.gpu_milli < MILLI_PER_GPU
    limits: dict[str, str] = {}
    annotations: dict[str, str] = {}
    if pod.gpus:
        limits[GPU_RESOURCE] = str(len(pod.gpus))
    if share:
        mebibytes = round((pod.gpu_memory_gib or gpu_memory_gib * pod.gpu_milli / MILLI_PER_GPU) * 1024)
        cores = max(1, round(100 * pod.gpu_milli / MILLI_PER_GPU))
        limits |= {GPU_MEMORY_RESOURCE: str(mebibytes), GPU_CORES_RESOURCE: str(cores)}
        devices = "".join(f"{uuid},NVIDIA,{mebibytes},{cores}:" for uuid in chosen) + ";"
        annotations = {
            HAMI_TO_ALLOCATE: devices,
            HAMI_ALLOCATED: devices,
            HAMI_NODE: pod.node,
            HAMI_BIND_PHASE: "allocating",
            HAMI_BIND_TIME: str(int(time.time())),
            HAMI_USE_UUID: ",".join(chosen),
        }
    memory = {"memory": f"{round(pod.memory_gib * 1024)}Mi"} if pod.memory_gib else {}
    requests = {"cpu": f"{pod.cpu:g}"} | memory
    limits |= memory  # what the scheduler reserved is all it may take: no node runs out of memory for it
    env = (
        pod.environment()
        | {
            "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(pod.gpus))),
            "NVIDIA_VISIBLE_DEVICES": ",".join(chosen) if chosen else "void",
            "CORRAL_GPU_INDEXES": ",".join(str(i) for i in pod.gpus),
        }
        | ({"PORT": str(port), "CORRAL_PORT": str(port)} if port is not None else {})
    )
    command = ["/bin/sh", "-c", spec.command] if isinstance(spec.command, str) else list(spec.command)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "command": command,
        "env": [{"name": name, "value": value} for name, value in sorted(env.items())],
        "resources": {"requests": requests | limits, "limits": limits} if limits else {"requests": requests},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if spec.workdir:
        container["workingDir"] = spec.workdir
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(pod.key),
            "namespace": namespace,
            "labels": {
                MANAGED_BY: CORRAL,
                JOB_LABEL: pod.job_id,
                ATTEMPT_LABEL: str(pod.attempt),
                POD_LABEL: str(pod.pod),
                TENANT_LABEL: label_value(pod.tenant),
                QUEUE_LABEL: label_value(spec.queue),
            },
            "annotations": annotations,
        },
        "spec": {
            "nodeName": pod.node,
            "restartPolicy": "Never",
            "activeDeadlineSeconds": max(1, round(spec.enforced_time_limit)),
            "terminationGracePeriodSeconds": round(spec.stop_grace_period),
            "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists"}],
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": run_as_user,
                "runAsGroup": run_as_user,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
        },
    }


@dataclass(frozen=True)
class PodOutcome:
    """How a Pod ended: an exit code to record, or a failure of the attempt with a reason."""

    exit_code: int | None = None
    failure: str | None = None


def pod_outcome(pod: Any, now: float, pending_timeout: float) -> PodOutcome | None:
    """What to record for a Pod (None: it still runs, or waits without a lasting error)."""
    status = pod.status
    phase = status.phase if status else None
    terminated = (
        [c.state.terminated for c in (status.container_statuses or []) if c.state and c.state.terminated]
        if status
        else []
    )
    if phase == "Succeeded":
        return PodOutcome(exit_code=max((t.exit_code for t in terminated), default=0))
    if phase == "Failed":
        codes = [t.exit_code for t in terminated if t.exit_code]
        if codes:
            return PodOutcome(exit_code=codes[0])
        why = ": ".join(part for part in (status.reason, status.message) if part) or "the Pod failed"
        return PodOutcome(failure=f"Kubernetes: {why}")
    if phase == "Pending" and status is not None:
        created = pod.metadata.creation_timestamp
        waited = now - created.timestamp() if created is not None else 0.0
        for container in status.container_statuses or []:
            waiting = container.state.waiting if container.state else None
            if waiting is not None and waiting.reason in PENDING_ERRORS and waited > pending_timeout:
                return PodOutcome(failure=f"Kubernetes: {waiting.reason}: {waiting.message or 'no message'}")
    return None


def is_share(pod: Any) -> bool:
    """Whether a Pod corral created holds a share of a GPU (HAMi's memory limit), not whole GPUs."""
    limits = pod.spec.containers[0].resources.limits if pod.spec.containers[0].resources else None
    return GPU_MEMORY_RESOURCE in (limits or {})


def _dns(text: str) -> str:
    """A DNS-1123 name: lowercase letters, digits and ``-``, at most 63 characters."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].rstrip("-")


def label_value(text: str) -> str:
    """A label value: at most 63 of letters, digits, ``-``, ``_`` and ``.``, alphanumeric at both ends;
    one that had to be changed or cut keeps a digest of the original, so two texts (two tenants whose
    long names share a beginning) never share one."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-_.")
    if cleaned == text and len(text) <= NAME_LIMIT:
        return text
    return _bounded(cleaned, changed=text)


def _bounded(name: str, changed: str | None = None) -> str:
    """``name`` if it fits in 63 characters and ``changed`` is None, else its first part and a digest
    of ``changed`` (or of ``name``): distinct originals stay distinct once cut."""
    if len(name) <= NAME_LIMIT and changed is None:
        return name
    digest = hashlib.sha256((changed if changed is not None else name).encode()).hexdigest()[:8]
    return f"{name[: NAME_LIMIT - len(digest) - 1].rstrip('-_.')}-{digest}".lstrip("-_.")
