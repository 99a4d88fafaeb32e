"""Kubernetes Nodes as corral nodes: their GPUs, whether they are up, and what outside corral holds.

Pure functions of what the API returned (``V1Node``, ``V1Lease``, ``V1Pod``), so they are tested without
a cluster. What is read:

- GPUs: ``status.allocatable["nvidia.com/gpu"]`` (what the device plugin offers; with MIG's ``single``
  strategy those are MIG slices, with ``mixed`` only the whole GPUs); model and memory from GPU Feature
  Discovery's labels ``nvidia.com/gpu.product`` and ``nvidia.com/gpu.memory`` (MiB);
- NVLink groups from the annotation ``corral.dev/nvlink-groups: 0-1-2-3/4-5-6-7`` (groups separated by
  ``/``, GPU indexes by ``-``), which an admin or a node-labelling job sets; none: no NVLink;
- GPU UUIDs (for HAMi's device annotation) from ``corral.dev/gpu-uuids: GPU-...,GPU-...`` or HAMi's own
  ``hami.io/node-nvidia-register``; else the GPUs go by index;
- up: the ``Ready`` condition is True, the latest heartbeat (the Node's Lease in ``kube-node-lease``
  renewed, or the Ready condition's heartbeat) is younger than the backend's ``node_timeout``, and no
  ``NoExecute`` taint evicts corral's Pods. A Node that is not up is node_down at once;
- closed (cordoned, or a ``NoSchedule`` taint corral's Pods do not tolerate): its running work goes on,
  and its free GPUs are held so nothing new is placed there.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.utils import parse_quantity

from corral.api_models import GpuReport, NodeRegistration

GPU_RESOURCE = "nvidia.com/gpu"
PRODUCT_LABEL = "nvidia.com/gpu.product"
MEMORY_LABEL = "nvidia.com/gpu.memory"
"""GFD: each GPU's memory in MiB."""
NVLINK_ANNOTATION = "corral.dev/nvlink-groups"
UUIDS_ANNOTATION = "corral.dev/gpu-uuids"
HAMI_REGISTER_ANNOTATION = "hami.io/node-nvidia-register"
OTHER_PODS = "Pods corral did not place (another scheduler's, or corral's own still stopping)"
DEFAULT_MODEL = "gpu"
DEFAULT_GPU_MEMORY_GIB = 16.0
TOLERATED_TAINTS = frozenset({GPU_RESOURCE})
"""Taint keys corral's Pods tolerate: the GPU Operator's ``nvidia.com/gpu`` on GPU nodes."""
READINESS_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})
"""Taints that only restate the Ready condition, which is read directly."""


@dataclass(frozen=True)
class NodeView:
    """One Kubernetes Node as corral sees it."""

    name: str
    registration: NodeRegistration
    """Its shape; GPUs not yet marked held (see ``with_held``)."""
    down: str | None
    """Why it is down (its work is requeued), or None."""
    closed: str | None
    """Why nothing new may be placed there (cordoned, tainted), or None."""
    uuids: tuple[str, ...]
    """Each GPU's UUID, by index (its index as a string where none is known)."""


def node_view(
    node: Any, lease: Any | None, cluster: str, private: bool, now: float, timeout: float
) -> NodeView:
    """What corral schedules on ``node`` at ``now`` (Unix seconds); ``lease``: its kube-node-lease Lease."""
    labels: Mapping[str, str] = node.metadata.labels or {}
    annotations: Mapping[str, str] = node.metadata.annotations or {}
    allocatable: Mapping[str, str] = (node.status.allocatable if node.status else None) or {}
    count = int(parse_quantity(allocatable.get(GPU_RESOURCE, "0")))
    memory = _gib(labels.get(MEMORY_LABEL))
    groups = nvlink_groups(annotations.get(NVLINK_ANNOTATION, ""))
    model = labels.get(PRODUCT_LABEL) or DEFAULT_MODEL
    gpus = [
        GpuReport(index=i, model=model, memory_gib=memory, nvlink_group=groups.get(i)) for i in range(count)
    ]
    registration = NodeRegistration(
        cluster=cluster,
        private=private,
        cpu=max(float(parse_quantity(allocatable.get("cpu", "1"))), 0.001),
        memory_gib=max(round(float(parse_quantity(allocatable.get("memory", "1Gi"))) / 2**30, 1), 0.1),
        gpus=gpus,
    )
    return NodeView(
        name=node.metadata.name,
        registration=registration,
        down=_down(node, lease, now, timeout),
        closed=_closed(node),
        uuids=gpu_uuids(annotations, count),
    )


def with_held(view: NodeView, used: set[int], outside: int) -> NodeRegistration:
    """The node's registration with ``outside`` GPUs held by other Pods (every free one when it is
    closed), taken from those corral's placements (GPU indexes ``used``) do not hold, highest first."""
    gpus = view.registration.gpus
    free = [g.index for g in reversed(gpus) if g.index not in used]
    reason = f"node closed to new work: {view.closed}" if view.closed else OTHER_PODS
    held = set(free if view.closed else free[:outside])
    return view.registration.model_copy(
        update={"gpus": [g.model_copy(update={"held_by": reason}) if g.index in held else g for g in gpus]}
    )


def foreign_gpus(pods: Iterable[Any]) -> dict[str, int]:
    """Node name -> whole GPUs the given (not terminated, not corral's) Pods hold. A HAMi share holds
    its whole GPU here: corral cannot tell which GPU it is on, and must never over-commit one."""
    held: dict[str, int] = {}
    for pod in pods:
        node = pod.spec.node_name
        if not node or (pod.status and pod.status.phase in ("Succeeded", "Failed")):
            continue
        held[node] = held.get(node, 0) + pod_gpus(pod)
    return held


def pod_gpus(pod: Any) -> int:
    """GPUs a Pod asks for: the most any init container takes, or all its containers together."""

    def gpus(container: Any) -> int:
        resources = container.resources
        amounts = (resources.limits or resources.requests or {}) if resources else {}
        return int(parse_quantity(amounts.get(GPU_RESOURCE, "0")))

    running = sum(gpus(c) for c in pod.spec.containers or [])
    return max([running, *(gpus(c) for c in pod.spec.init_containers or [])])


def nvlink_groups(text: str) -> dict[int, int]:
    """GPU index -> NVLink group from ``0-1-2-3/4-5-6-7``; {} for none (or anything unreadable)."""
    return {
        int(index): group
        for group, members in enumerate(text.split("/"))
        for index in members.split("-")
        if index.strip().isdigit()
    }


def gpu_uuids(annotations: Mapping[str, str], count: int) -> tuple[str, ...]:
    """Each GPU's UUID by index: corral's annotation, else HAMi's registration (``UUID,...`` entries
    separated by ``:``, or a JSON list of objects with ``id``), else the indexes themselves."""
    found: list[str] = []
    if UUIDS_ANNOTATION in annotations:
        found = [part.strip() for part in annotations[UUIDS_ANNOTATION].split(",") if part.strip()]
    elif HAMI_REGISTER_ANNOTATION in annotations:
        text = annotations[HAMI_REGISTER_ANNOTATION].strip()
        try:
            found = [str(entry["id"]) for entry in json.loads(text)] if text.startswith("[") else []
        except (ValueError, KeyError, TypeError):
            found = []
        if not found and not text.startswith("["):
            found = [entry.split(",")[0] for entry in text.split(":") if "," in entry]
    if len(found) != count:
        return tuple(str(i) for i in range(count))
    return tuple(found)


def _gib(mebibytes: str | None) -> float:
    try:
        return round(float(mebibytes) / 1024, 1) if mebibytes else DEFAULT_GPU_MEMORY_GIB
    except ValueError:
        return DEFAULT_GPU_MEMORY_GIB


def _down(node: Any, lease: Any | None, now: float, timeout: float) -> str | None:
    conditions = (node.status.conditions if node.status else None) or []
    ready = next((c for c in conditions if c.type == "Ready"), None)
    if ready is None or ready.status != "True":
        why = f": {ready.reason}" if ready is not None and ready.reason else ""
        return f"its Ready condition is {ready.status if ready is not None else 'missing'}{why}"
    beats = [_seconds(ready.last_heartbeat_time)]
    if lease is not None and lease.spec is not None:
        beats.append(_seconds(lease.spec.renew_time))
    heard = max((beat for beat in beats if beat is not None), default=None)
    if heard is not None and now - heard > timeout:
        return f"no heartbeat (Lease or Ready) for {now - heard:.0f} s"
    evicting = [t.key for t in _taints(node) if t.effect == "NoExecute"]
    if evicting:
        return f"NoExecute taint {', '.join(evicting)}"
    return None


def _closed(node: Any) -> str | None:
    if node.spec is not None and node.spec.unschedulable:
        return "cordoned"
    keeping = [t.key for t in _taints(node) if t.effect == "NoSchedule"]
    return f"NoSchedule taint {', '.join(keeping)}" if keeping else None


def _taints(node: Any) -> list[Any]:
    """Taints that apply to corral's Pods (not tolerated, not a restatement of readiness)."""
    taints = (node.spec.taints if node.spec is not None else None) or []
    return [t for t in taints if t.key not in TOLERATED_TAINTS and t.key not in READINESS_TAINTS]


def _seconds(moment: dt.datetime | None) -> float | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()
