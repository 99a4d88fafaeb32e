"""The Ray backend: a Ray cluster's nodes become a corral cluster's nodes, and corral's placements run there.

corral stays the only scheduler; Ray executes. After every reconcile round ``sync``:

1. reads the Ray cluster's alive nodes and registers each as a node of the corral cluster (CPUs, memory,
   GPUs, with their model from Ray's ``accelerator_type:*`` resource), heartbeating it; a node Ray reports
   dead is marked down at once, so the next round requeues its work (to resume from its checkpoint);
2. starts each pod corral placed on one of these nodes: every job gets a placement group whose bundles are
   pinned to the nodes corral chose (each bundle asks for a sliver of the node's own resource), and each
   pod runs as a detached actor in its bundle, asking Ray for the same CPUs and (fractional) GPUs corral
   reserved. The pod's process sees the GPU ids corral chose in ``CUDA_VISIBLE_DEVICES``, not the ones Ray
   would pick: corral never over-commits a node, so Ray's accounting and corral's agree in totals;
3. ships each pod's new output to the store, records exit codes, and stops pods (actors and placement
   groups) that should no longer run: cancelled, preempted, or moved.

Actors and placement groups are detached and named after the job, attempt and pod, so a restarted server
adopts the pods that kept running instead of starting them twice.

Each GPU has the memory the node declares as ``corral-gpu-memory-gib`` (Ray does not know it), else 16 GiB:
GPU shares are placed by memory too. NVLink groups come from a declared ``corral-nvlink:0-1-2-3/4-5-6-7``
resource, so gangs are placed on NVLink-connected GPUs as on any other node. A node's own resource is ``corral-node-<name>`` when the node declares one (``ray start --resources``),
else Ray's ``node:<ip>``; the corral node is named ``<name>``, or ``ray-<first 8 of the node id>``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shlex
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from corral.api_models import GpuReport, NodeRegistration
from corral.backends.local import desired_pods
from corral.backends.pod_users import NoPodUser, PodIdentity, PodUsers
from corral.backends.pods import DesiredPod, free_port, host_environment
from corral.core.cluster import ClusterSpec
from corral.core.units import MILLI_PER_GPU
from corral.store.code import CodeStore
from corral.store.jobs import JobAlreadyEnded, JobNotFound, JobStore, StaleAttempt
from corral.store.logs import LogStore
from corral.store.nodes import NodeStore
from corral.workdirs import unpack

log = logging.getLogger(__name__)

NAMESPACE = "corral"
NODE_RESOURCE_PREFIX = "corral-node-"
NVLINK_RESOURCE_PREFIX = "corral-nvlink:"
GPU_MEMORY_RESOURCE = "corral-gpu-memory-gib"
"""Ray does not report GPU memory; a node may declare it (``--resources '{"corral-gpu-memory-gib": 80}'``)."""
DEFAULT_GPU_MEMORY_GIB = 16.0
READ_SECONDS = 0.5
"""Longest a sync waits for pods' output: a pod that does not answer in time is asked again next round."""
STOP_SECONDS = 5.0
"""How long stopping pods waits for their processes to end (SIGTERM) before their actors are killed."""
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PIN = 0.001
"""How much of a node's own resource a bundle asks for: enough to pin it there, never a limit."""


@dataclass(frozen=True)
class RayNode:
    name: str
    node_id: str
    resource: str
    """The resource only this node has, to pin bundles to it."""
    registration: NodeRegistration
    address: str | None = None
    """Ray's address of the node (``NodeManagerAddress``): where the gateway reaches its service
    replicas, which are told it in ``CORRAL_NODE_ADDRESS``."""


class RayBackend:
    def __init__(
        self,
        cluster: ClusterSpec,
        store: JobStore,
        on_exit: Callable[[], None] | None = None,
        code: CodeStore | None = None,
    ) -> None:
        """``on_exit``: called when a pod's exit is recorded (the loop's poke), so the next round runs now.
        ``code``: the server's uploaded working folders; a pod of a job with ``code`` gets its archive
        through Ray's object store and starts in a fresh copy on whichever Ray node runs it."""
        if cluster.backend.kind != "ray" or cluster.backend.address is None:
            raise ValueError(f"cluster {cluster.name} has no ray backend")
        self.cluster = cluster
        self.address = cluster.backend.address
        self.store = store
        self.on_exit = on_exit
        self.code = code
        self.nodes_store = NodeStore(store.engine, store.clock)
        self.logs = LogStore(store.engine)
        self._nodes: dict[str, RayNode] = {}
        self._shipped: dict[tuple[str, int, int], int] = {}
        self._reported: set[tuple[str, int, int]] = set()

    def connect(self) -> None:
        if not ray.is_initialized():
            if os.environ.get("RAY_AUTH_MODE") != "token":
                log.warning(
                    "Ray cluster %s: this server does not use Ray's token authentication (RAY_AUTH_MODE=token "
                    "on every node and here): then anything that reaches its GCS port, a member's pod on one "
                    "of its nodes included, can drive the cluster: run code as the Ray workers' user, read or "
                    "kill other tenants' pods (docs/security.md)",
                    self.address,
                )
            ray.init(address=self.address, namespace=NAMESPACE, logging_level="ERROR", log_to_driver=False)

    def sync(self) -> None:
        """Match the Ray cluster to the store (see the module docstring)."""
        self.connect()
        self._discover()
        placed = desired_pods(self.store)
        desired = [pod for pod in placed if pod.node in self._nodes]
        wanted = {_actor_name(pod.key) for pod in desired}
        lost = {_actor_name(pod.key) for pod in placed if pod.node not in self._nodes}
        self._stop_others(wanted, lost, {_group_name(pod.job_id, pod.attempt) for pod in desired})
        by_job: dict[tuple[str, int], list[DesiredPod]] = {}
        for pod in desired:
            by_job.setdefault((pod.job_id, pod.attempt), []).append(pod)
        reads: dict[Any, tuple[DesiredPod, int]] = {}
        for pods in by_job.values():
            for pod, actor in self._ensure(sorted(pods, key=lambda p: p.pod)):
                offset = self._shipped.get(pod.key, 0)
                reads[actor.read.remote(offset)] = (pod, offset)
        if reads:  # wait for all at once, briefly: an actor on a dying node must not hold up the rest
            ready, _ = ray.wait(list(reads), num_returns=len(reads), timeout=READ_SECONDS)
            for ref in ready:
                self._collect(ref, *reads[ref])

    def read_log(self, job_id: str, pod: int) -> str | None:
        return self.logs.read(job_id, pod)

    def _discover(self) -> None:
        alive: dict[str, RayNode] = {}
        for info in ray.nodes():
            node = _ray_node(info, self.cluster)
            if not info.get("Alive"):
                if node.name in self._nodes:
                    log.warning("ray reports node %s dead; its work is requeued", node.name)
                    self.nodes_store.mark_down(node.name)
                continue
            alive[node.name] = node
            known = self._nodes.get(node.name)
            if known is None or known.registration != node.registration:
                self.nodes_store.register(node.name, node.registration, node.address)
            else:
                self.nodes_store.heartbeat(node.name, node.address)
        for name in set(self._nodes) - set(alive):
            self.nodes_store.mark_down(name)
        self._nodes = alive

    def _ensure(self, pods: list[DesiredPod]) -> list[tuple[DesiredPod, Any]]:
        """Start the job's pods that are not running; return those still to hear from, with their actor."""
        actors = {pod.pod: _named_actor(_actor_name(pod.key)) for pod in pods}
        if any(actor is None for actor in actors.values()):
            group = self._group(pods)
            for pod in pods:
                if actors[pod.pod] is None:
                    node = self._nodes.get(pod.node)
                    address = node.address if node is not None else None
                    actors[pod.pod] = _start(pod, group, self._archive(pod), address)
        return [(pod, actors[pod.pod]) for pod in pods if pod.key not in self._reported]

    def _archive(self, pod: DesiredPod) -> bytes | str | None:
        """The archive of the pod's uploaded code, None without any, or why it cannot be had."""
        if pod.spec.code is None:
            return None
        if self.code is None:
            return f"code {pod.spec.code}: this server keeps no uploaded code for its Ray cluster"
        try:
            return self.code.path(pod.tenant, pod.spec.code).read_bytes()
        except OSError as error:
            return f"code {pod.spec.code} could not be read: {error}"

    def _collect(self, ref: Any, pod: DesiredPod, offset: int) -> None:
        """Store a pod's new output, and its exit code once it ended."""
        try:
            text, code, port = ray.get(ref)
        except ray.exceptions.RayActorError as error:
            log.warning("pod %s of %s attempt %s: %s", pod.pod, pod.job_id, pod.attempt, error)
            return
        if port is not None and pod.port is None and code is None:
            with contextlib.suppress(JobNotFound, StaleAttempt):
                self.store.record_port(pod.job_id, pod.attempt, pod.pod, port)
        if text or pod.key not in self._shipped:
            stored = self.logs.append(pod.job_id, pod.attempt, pod.pod, offset, text)
            self._shipped[pod.key] = stored
            if stored != offset + len(text.encode()):
                # Read from before what is stored (a restarted server's first read): the end is recorded
                # only once the output from there on is, else the rest of it would be lost.
                return
        if code is not None:
            try:
                self.store.record_exit(pod.job_id, pod.attempt, pod.pod, code)
            except (JobNotFound, JobAlreadyEnded):
                pass
            self._reported.add(pod.key)
            if self.on_exit is not None:
                self.on_exit()

    def _group(self, pods: list[DesiredPod]) -> Any:
        name = _group_name(pods[0].job_id, pods[0].attempt)
        try:
            return ray.util.get_placement_group(name)
        except ValueError:
            pass
        bundles = [
            {
                "CPU": pod.cpu,
                **({"GPU": _ray_gpus(pod)} if pod.gpus else {}),
                self._nodes[pod.node].resource: PIN,
            }
            for pod in pods
        ]
        return placement_group(bundles, strategy="PACK", name=name, lifetime="detached")

    def _stop_others(self, actors: set[str], lost: set[str], groups: set[str]) -> None:
        """Stop pods that should not run: ask every one to stop its process at once and wait briefly for
        all together, then kill the actors and free their groups. Pods of nodes that died (``lost``) are
        only killed: nothing there would answer."""
        unwanted, gone = [], []
        for entry in ray.util.list_named_actors(all_namespaces=False):
            name = entry if isinstance(entry, str) else entry["name"]
            actor = _named_actor(name) if name.startswith("pod:") and name not in actors else None
            if actor is not None:
                (gone if name in lost else unwanted).append(actor)
        for actor in gone:
            ray.kill(actor)
        if unwanted:
            ray.wait(
                [actor.stop.remote() for actor in unwanted], num_returns=len(unwanted), timeout=STOP_SECONDS
            )
            for actor in unwanted:
                ray.kill(actor)
        for info in ray.util.placement_group_table().values():
            name = info.get("name", "")
            if name.startswith("job:") and name not in groups and info.get("state") != "REMOVED":
                remove_placement_group(ray.util.get_placement_group(name))


@ray.remote(num_cpus=0, max_restarts=0)
class PodActor:
    """One pod's process on a Ray node; its output goes to a file the backend reads by offset."""

    def __init__(
        self,
        command: str,
        env: dict[str, str],
        workdir: str | None,
        code: bytes | str | None,
        listen_port: bool = False,
        tenant: str = "default",
    ) -> None:
        """``code``: the archive of the job's uploaded working folder, unpacked into a fresh folder the
        pod starts in; a string says why there is none, and the pod fails with it (127).
        ``listen_port``: choose a port free on this Ray node for the pod (``PORT``), which ``read``
        reports. ``tenant``: whose pod it is. A Ray worker that runs as root (``ray start`` as root)
        runs the pod's process as the tenant's pod user (``corral-<tenant>``, ``corral-pod``, else
        ``nobody``; no other groups, no new privileges), as the local backend does: the pod's command
        would otherwise be root on the node, reading the server's data dir, the worker's environment
        (``/proc/<ppid>/environ``) and Ray's own files."""
        self.log = tempfile.NamedTemporaryFile(prefix="corral-pod-", suffix=".log", delete=False)
        self.home = tempfile.mkdtemp(prefix="corral-pod-home-")
        """The pod's own ``HOME`` and ``TMPDIR`` on this node, its user's, removed when it is stopped."""
        try:
            identity = _identity(tenant)
        except NoPodUser as error:
            identity, code = None, str(error)
        node = {"CORRAL_RAY_NODE_ID": ray.get_runtime_context().get_node_id()}
        self.port = free_port(env.get("CORRAL_NODE_ADDRESS", "0.0.0.0")) if listen_port else None
        if self.port is not None:
            node |= {"PORT": str(self.port), "CORRAL_PORT": str(self.port)}
        self.folder: str | None = None
        """The fresh copy of uploaded code the pod runs in, removed when it is stopped."""
        if isinstance(code, bytes):
            try:
                workdir = self.folder = _unpacked(code)
            except (OSError, tarfile.TarError) as error:
                code = f"the uploaded code could not be unpacked: {error}"
        if isinstance(code, str):
            command = f"echo {shlex.quote('corral: the pod could not start: ' + code)}; exit 127"
            workdir = None
        own = {"HOME": self.home, "TMPDIR": self.home}
        if identity is not None:
            own |= {"USER": identity.name, "LOGNAME": identity.name}
            for folder in (self.home, self.folder):
                if folder is not None:
                    _give(Path(folder), identity)
        self.process = subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=os.path.expanduser(workdir) if workdir else self.home,
            env=host_environment() | own | env | node,  # nothing of the Ray worker's own (keys, tokens)
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # stop() signals its whole process group
            user=identity.uid if identity is not None else None,
            group=identity.gid if identity is not None else None,
            extra_groups=[] if identity is not None else None,
            preexec_fn=_confine,
        )
        self._lock = threading.Lock()

    def read(self, offset: int) -> tuple[str, int | None, int | None]:
        """Output from byte ``offset`` (whole lines while running), the exit code once it ended, and the
        port it was given (``listen_port``)."""
        code = self.process.poll()
        with self._lock, open(self.log.name, "rb") as file:
            file.seek(offset)
            data = file.read(1 << 20)
        if code is None:
            data = data[: data.rfind(b"\n") + 1]
        elif len(data) == 1 << 20:
            code = None  # more to read before the end is reported
        return data.decode(errors="replace"), code, self.port

    def stop(self) -> None:
        """SIGTERM to the pod's process group, then SIGKILL to whatever of it is left (children that
        ignore SIGTERM, or outlived the command), so the GPU Ray frees is free."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for folder in (self.folder, self.home):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)


def _unpacked(archive: bytes) -> str:
    """A fresh folder on this Ray node holding the uploaded code."""
    folder = tempfile.mkdtemp(prefix="corral-pod-")
    with tempfile.NamedTemporaryFile(suffix=".tar.gz") as file:
        file.write(archive)
        file.flush()
        unpack(Path(file.name), Path(folder))
    return folder


def _identity(tenant: str) -> PodIdentity | None:
    """Who the pod runs as on this Ray node: its tenant's pod user when the worker is root, else None
    (the worker's own user: isolation is then the Ray deployment's, see docs/security.md)."""
    return PodUsers()(tenant)


def _give(folder: Path, identity: PodIdentity) -> None:
    """Make a folder made for the pod (its home, its copy of the uploaded code) its user's, links
    included as links (``lchown``: never what they point at)."""
    os.lchown(folder, identity.uid, identity.gid)
    for parent, folders, files in os.walk(folder):
        for name in (*folders, *files):
            os.lchown(os.path.join(parent, name), identity.uid, identity.gid)


def _confine() -> None:
    """In the pod's process, after it took its user (``subprocess`` switches before calling this) and
    before it runs: no new privileges (setuid programs stay unprivileged), and die when the actor's
    worker dies (its node was lost), as the pod would with its machine. The death signal is set here,
    after the switch, because changing users clears it."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _start(pod: DesiredPod, group: Any, code: bytes | str | None, address: str | None) -> Any:
    strategy = PlacementGroupSchedulingStrategy(placement_group=group, placement_group_bundle_index=pod.pod)
    options: dict[str, Any] = {
        "name": _actor_name(pod.key),
        "lifetime": "detached",
        "num_cpus": pod.cpu,
        "scheduling_strategy": strategy,
    }
    if pod.gpus:
        options["num_gpus"] = _ray_gpus(pod)
    env = pod.environment() | ({"CORRAL_NODE_ADDRESS": address} if address else {})
    return PodActor.options(**options).remote(
        pod.command_line, env, pod.spec.workdir, code, pod.spec.listen_port, pod.tenant
    )


def _ray_gpus(pod: DesiredPod) -> float:
    """Whole GPUs as a count; a share as Ray's fraction of one GPU."""
    return len(pod.gpus) * pod.gpu_milli / MILLI_PER_GPU


def _ray_node(info: dict[str, Any], cluster: ClusterSpec) -> RayNode:
    resources: dict[str, float] = info.get("Resources") or info.get("resources_total") or {}
    declared = [key for key in resources if key.startswith(NODE_RESOURCE_PREFIX)]
    if declared:
        name, resource = declared[0].removeprefix(NODE_RESOURCE_PREFIX), declared[0]
    else:
        name = f"ray-{info['NodeID'][:8]}"
        resource = f"node:{info['NodeManagerAddress']}"
    models = [
        key.removeprefix("accelerator_type:") for key in resources if key.startswith("accelerator_type:")
    ]
    memory = resources.get(GPU_MEMORY_RESOURCE, DEFAULT_GPU_MEMORY_GIB)
    groups = _nvlink_groups(resources)
    gpus = [
        GpuReport(
            index=i, model=models[0] if models else "ray-gpu", memory_gib=memory, nvlink_group=groups.get(i)
        )
        for i in range(int(resources.get("GPU", 0)))
    ]
    registration = NodeRegistration(
        cluster=cluster.name,
        private=cluster.private,
        cpu=max(resources.get("CPU", 1.0), 1.0),
        memory_gib=round(resources.get("memory", 2**30) / 2**30, 1),
        gpus=gpus,
    )
    return RayNode(
        name=name,
        node_id=info["NodeID"],
        resource=resource,
        registration=registration,
        address=info.get("NodeManagerAddress"),
    )


def _nvlink_groups(resources: dict[str, float]) -> dict[int, int]:
    """GPU index -> NVLink group, from a resource ``corral-nvlink:0-1-2-3/4-5-6-7`` (groups separated by
    ``/``, GPUs by ``-``), which a node declares when it starts; {} when it declares none."""
    declared = [
        key.removeprefix(NVLINK_RESOURCE_PREFIX)
        for key in resources
        if key.startswith(NVLINK_RESOURCE_PREFIX)
    ]
    if not declared:
        return {}
    return {
        int(index): group
        for group, members in enumerate(declared[0].split("/"))
        for index in members.split("-")
        if index.isdigit()
    }


def _actor_name(key: tuple[str, int, int]) -> str:
    job_id, attempt, pod = key
    return f"pod:{job_id}:{attempt}:{pod}"


def _group_name(job_id: str, attempt: int) -> str:
    return f"job:{job_id}:{attempt}"


def _named_actor(name: str) -> Any:
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None
