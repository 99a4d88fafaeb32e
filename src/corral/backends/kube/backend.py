"""The Kubernetes backend: a cluster's Nodes become corral nodes, and corral's placements run as Pods.

corral stays the only scheduler; Kubernetes executes (``spec.nodeName`` is set, kube-scheduler is not
involved). Watches (``Informer``) keep caches of the Nodes, their Leases, corral's Pods and everyone
else's; a change pokes the reconcile loop. After every round ``sync``:

1. turns each Node into a corral node (``nodes.node_view``) and registers or heartbeats it; a Node that
   is not up (NotReady, its heartbeat older than ``node_timeout``, a NoExecute taint) is marked down at
   once, so the round requeues its work to resume from its checkpoint. GPUs held by Pods corral did not
   create, and by corral's own Pods still terminating, are registered as held: never placed on;
2. deletes corral's Pods that should not run (cancelled, preempted, moved, ended), with the Pod's own
   grace period (the job's ``stop_grace_period``), or at once where the node is down or the Pod ended;
3. creates the Pods of each placed job together (a gang), once their nodes have the free GPUs (a Pod
   still terminating there holds its GPUs, as the kubelet sees it); a Pod the API refuses (no image, an
   admission webhook, RBAC, a quota) fails the attempt with the API's message;
4. follows each Pod: ships its new output (the Pod's log, through the API) to the store, records exit
   codes from container statuses, and fails the attempt of a Pod that failed without one (evicted, past
   its deadline) or waits too long on an error that will not clear (an image that cannot be pulled).

Pods are found by label, so a restarted server adopts the Pods that kept running instead of creating
them again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from corral.backends.kube.informer import Informer
from corral.backends.kube.manifests import (
    CONTAINER,
    CORRAL,
    MANAGED_BY,
    NO_EXIT_CODE,
    MissingImage,
    is_share,
    isolation_policy,
    namespace_manifest,
    pod_key,
    pod_manifest,
    pod_outcome,
    tenant_namespace,
)
from corral.backends.kube.nodes import NodeView, foreign_gpus, node_view, pod_gpus, with_held
from corral.backends.local import desired_pods
from corral.backends.pods import DesiredPod, free_port
from corral.core.cluster import ClusterSpec
from corral.core.units import MILLI_PER_GPU
from corral.store.jobs import JobAlreadyEnded, JobNotFound, JobStore, StaleAttempt
from corral.store.logs import LogStore
from corral.store.nodes import NodeStore

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
TERMINAL = ("Succeeded", "Failed")
NOT_FOUND, CONFLICT = 404, 409


class KubernetesBackend:
    def __init__(
        self,
        cluster: ClusterSpec,
        store: JobStore,
        on_exit: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``on_exit``: the loop's poke, called when a watched object changes, so the next round runs now."""
        if cluster.backend.kind != "kubernetes":
            raise ValueError(f"cluster {cluster.name} has no kubernetes backend")
        self.cluster = cluster
        self.spec = cluster.backend
        self.store = store
        self.on_exit = on_exit
        self.clock = clock
        self.nodes_store = NodeStore(store.engine, store.clock)
        self.logs = LogStore(store.engine)
        self.core: client.CoreV1Api | None = None
        self.networking: client.NetworkingV1Api | None = None
        self._informers: dict[str, Informer] = {}
        self._registered: dict[str, Any] = {}
        self._views: dict[str, NodeView] = {}
        self._shipped: dict[tuple[str, int, int], int] = {}
        self._reported: set[tuple[str, int, int]] = set()
        self._observed: set[tuple[str, int, int]] = set()
        self._created: set[tuple[str, int, int]] = set()
        self._namespaces: set[str] = set()
        self._isolated: set[tuple[str, str]] = set()

    def connect(self) -> None:
        """Load the kubeconfig (or the in-cluster service account) and start the watches, once."""
        if self.core is not None:
            return
        if self.spec.kubeconfig is None and self.spec.context is None:
            try:
                config.load_incluster_config()
                api = client.ApiClient()
            except config.ConfigException:
                api = config.new_client_from_config()
        else:
            path = os.path.expanduser(self.spec.kubeconfig) if self.spec.kubeconfig else None
            api = config.new_client_from_config(config_file=path, context=self.spec.context)
        core = client.CoreV1Api(api)
        leases = client.CoordinationV1Api(api)
        poke = self._poke
        own = f"{MANAGED_BY}={CORRAL}"
        if self.spec.tenant_namespaces:
            own_pods = Informer(core.list_pod_for_all_namespaces, poke, label_selector=own)
        else:
            own_pods = Informer(
                core.list_namespaced_pod, poke, namespace=self.spec.namespace, label_selector=own
            )
        informers = {
            "nodes": Informer(core.list_node, poke, **_selector(self.spec.node_selector)),
            # A renewed Lease is no news (silence is, and is found by time): no round for it.
            "leases": Informer(leases.list_namespaced_lease, namespace=LEASE_NAMESPACE),
            "pods": own_pods,
            "foreign": Informer(
                core.list_pod_for_all_namespaces,
                poke,
                label_selector=f"{MANAGED_BY}!={CORRAL}",
                field_selector="status.phase!=Succeeded,status.phase!=Failed",
            ),
        }
        for informer in informers.values():
            informer.start()
        self._informers, self.core, self.networking = informers, core, client.NetworkingV1Api(api)

    def close(self) -> None:
        for informer in self._informers.values():
            informer.stop()

    def sync(self) -> None:
        """Match the Kubernetes cluster to the store (see the module docstring)."""
        self.connect()
        now = self.clock()
        placed = desired_pods(self.store)
        own = {key: pod for pod in self._informers["pods"].items() if (key := pod_key(pod.metadata.labels))}
        self._observed |= own.keys()
        wanted = {pod.key for pod in placed}
        lingering = [p for key, p in own.items() if key not in wanted and not _ended(p)]
        self._discover(placed, lingering, now)
        desired = [pod for pod in placed if pod.node in self._views and not self._views[pod.node].down]
        self._remove(own, {pod.key for pod in desired})
        by_job: dict[str, list[DesiredPod]] = {}
        for pod in sorted(desired, key=lambda p: (p.job_id, p.pod)):
            by_job.setdefault(pod.job_id, []).append(pod)
        busy = self._busy(own, lingering)
        for job_id, pods in by_job.items():
            try:
                self._ensure(job_id, pods, own, busy)
                for pod in pods:
                    if pod.key in own and pod.key not in self._reported:
                        self._follow(pod, own[pod.key], now)
            except (JobAlreadyEnded, JobNotFound, StaleAttempt):
                pass  # ended meanwhile: its Pods are deleted next sync
            except Exception:
                log.exception(
                    "job %s: its Pods could not be synced; trying again after the next round", job_id
                )
        self._forget(wanted)

    def read_log(self, job_id: str, pod: int) -> str | None:
        return self.logs.read(job_id, pod)

    def _poke(self) -> None:
        if self.on_exit is not None:
            self.on_exit()

    def _discover(self, placed: list[DesiredPod], lingering: list[Any], now: float) -> None:
        leases = {lease.metadata.name: lease for lease in self._informers["leases"].items()}
        outside = foreign_gpus([*self._informers["foreign"].items(), *lingering])
        used: dict[str, set[int]] = {}
        for pod in placed:
            used.setdefault(pod.node, set()).update(pod.gpus)
        heard = self.nodes_store.last_heard()
        views: dict[str, NodeView] = {}
        for node in self._informers["nodes"].items():
            view = node_view(
                node,
                leases.get(node.metadata.name),
                self.cluster.name,
                self.cluster.private,
                now,
                self.spec.node_timeout,
            )
            views[view.name] = view
            if view.down:
                if heard.get(view.name, 0.0) > 0:
                    log.warning("kubernetes node %s is down (%s); its work is requeued", view.name, view.down)
                    self.nodes_store.mark_down(view.name)
                self._registered.pop(view.name, None)
                continue
            registration = with_held(view, used.get(view.name, set()), outside.get(view.name, 0))
            if self._registered.get(view.name) != registration:
                self.nodes_store.register(view.name, registration)
                self._registered[view.name] = registration
            else:
                self.nodes_store.heartbeat(view.name)
        for name in set(self._views) - set(views):  # deleted (scaled down) or no longer selected
            # Down, not forgotten: its pool stays, so work of its shape waits (an autoscaler may bring
            # one back) instead of being refused as fitting no node the cluster can ever have.
            log.warning("kubernetes node %s is gone; its work is requeued", name)
            self.nodes_store.mark_down(name)
            self._registered.pop(name, None)
        self._views = views

    def _forget(self, wanted: set[tuple[str, int, int]]) -> None:
        """Drop what was kept about Pods no longer placed, so a long-running server's memory stays flat."""
        self._reported &= wanted
        self._observed &= wanted
        self._created &= wanted
        self._shipped = {key: length for key, length in self._shipped.items() if key in wanted}

    def _remove(self, own: dict[tuple[str, int, int], Any], keep: set[tuple[str, int, int]]) -> None:
        """Delete corral's Pods that should not run: with their own grace period (the job's), or at
        once when they ended or their node is down (no kubelet there would confirm)."""
        assert self.core is not None
        for key, pod in own.items():
            if key in keep or pod.metadata.deletion_timestamp is not None:
                continue
            view = self._views.get(pod.spec.node_name)
            grace = 0 if _ended(pod) or view is None or view.down else None
            try:
                self.core.delete_namespaced_pod(
                    pod.metadata.name, pod.metadata.namespace, grace_period_seconds=grace
                )
            except ApiException as error:
                if error.status != NOT_FOUND:
                    log.warning("could not delete Pod %s: %s", pod.metadata.name, error.reason)

    def _busy(self, own: dict[tuple[str, int, int], Any], lingering: list[Any]) -> dict[str, int]:
        """Whole GPUs of each node held now: by other Pods, by corral's terminating ones (a share holds its
        whole GPU until it is gone) and by corral's whole-GPU Pods that run."""
        busy = foreign_gpus([*self._informers["foreign"].items(), *lingering])
        for key, pod in own.items():
            if key not in self._reported and not _ended(pod) and not is_share(pod) and pod not in lingering:
                busy[pod.spec.node_name] = busy.get(pod.spec.node_name, 0) + pod_gpus(pod)
        return busy

    def _ensure(
        self, job_id: str, pods: list[DesiredPod], own: dict[tuple[str, int, int], Any], busy: dict[str, int]
    ) -> None:
        """Create the job's Pods that do not exist, all together, once their nodes have the GPUs free."""
        missing = [pod for pod in pods if pod.key not in own and pod.key not in self._reported]
        gone = [pod for pod in missing if pod.key in self._observed]
        for pod in gone:  # it existed, and someone else deleted it
            self._report(pod, exit_code=NO_EXIT_CODE)
        missing = [pod for pod in missing if pod.key not in self._created]
        if gone or not missing:
            return
        needed: dict[str, int] = {}
        for pod in missing:  # whole GPUs: a share's GPU is one corral chose with room for it
            needed[pod.node] = needed.get(pod.node, 0) + (
                len(pod.gpus) if pod.gpu_milli >= MILLI_PER_GPU else 0
            )
        for node, count in needed.items():
            total = len(self._views[node].registration.gpus)
            if busy.get(node, 0) + count > total:
                return  # a Pod still terminating there holds its GPUs: create once it is gone
        assert self.core is not None
        for pod in missing:
            view = self._views[pod.node]
            memory = view.registration.gpus[0].memory_gib if view.registration.gpus else 0.0
            # Pods are reached on the server's machine for now (docs/serving.md): a port free here.
            port = free_port("127.0.0.1") if pod.spec.listen_port else None
            try:
                namespace = self._namespace(pod.tenant)
                self._isolate(namespace, pod.tenant)
                manifest = pod_manifest(pod, namespace, view.uuids, memory, port, self.spec.run_as_user)
                self.core.create_namespaced_pod(namespace, manifest)
            except MissingImage as error:
                self.store.finish(job_id, succeeded=False, reason=str(error))
                return
            except ApiException as error:
                if error.status == CONFLICT:  # it exists already (made before a restart): adopt it
                    self._created.add(pod.key)
                    continue
                message = _api_message(error)
                self.store.finish(
                    job_id, succeeded=False, reason=f"pod {pod.pod}: the Kubernetes API refused it: {message}"
                )
                return
            self._created.add(pod.key)
            if port is not None:
                with contextlib.suppress(JobNotFound, StaleAttempt):  # stopped meanwhile: deleted next sync
                    self.store.record_port(pod.job_id, pod.attempt, pod.pod, port)
            busy[pod.node] = busy.get(pod.node, 0) + needed.get(pod.node, 0)

    def _follow(self, pod: DesiredPod, found: Any, now: float) -> None:
        phase = found.status.phase if found.status else None
        if phase in ("Running", *TERMINAL):
            self._ship(pod, found, final=phase in TERMINAL)
        outcome = pod_outcome(found, now, self.spec.pending_timeout)
        if outcome is not None:
            self._report(pod, exit_code=outcome.exit_code, failure=outcome.failure)

    def _report(self, pod: DesiredPod, exit_code: int | None = None, failure: str | None = None) -> None:
        if failure is not None:
            self.store.finish(pod.job_id, succeeded=False, reason=f"pod {pod.pod}: {failure}")
        elif exit_code is not None:
            self.store.record_exit(pod.job_id, pod.attempt, pod.pod, exit_code)
        self._reported.add(pod.key)
        self._poke()

    def _ship(self, pod: DesiredPod, found: Any, final: bool) -> None:
        """Store the Pod's new output: whole lines while it runs, everything once it ended."""
        assert self.core is not None
        try:
            text = self.core.read_namespaced_pod_log(
                found.metadata.name, found.metadata.namespace, container=CONTAINER
            )
        except ApiException as error:
            log.debug("no log for Pod %s yet: %s", found.metadata.name, error.reason)
            return
        data = text.encode()
        offset = self._shipped.get(pod.key, 0)
        new = data[offset:] if final else data[offset : data.rfind(b"\n") + 1]
        if new or pod.key not in self._shipped:
            self._shipped[pod.key] = self.logs.append(
                pod.job_id, pod.attempt, pod.pod, offset, new.decode(errors="replace")
            )

    def _namespace(self, tenant: str) -> str:
        """Where a tenant's Pods go; with ``tenant_namespaces`` created the first time it is needed."""
        if not self.spec.tenant_namespaces:
            return self.spec.namespace
        name = tenant_namespace(self.spec.namespace, tenant)
        if name not in self._namespaces:
            assert self.core is not None
            try:
                self.core.create_namespace(namespace_manifest(name))
            except ApiException as error:
                if error.status != CONFLICT:
                    raise
            self._namespaces.add(name)
        return name

    def _isolate(self, namespace: str, tenant: str) -> None:
        """Before a tenant's first Pod in a namespace: its NetworkPolicy, so no other tenant's Pod
        reaches it (a refusal, e.g. RBAC without ``networkpolicies``, fails the attempt: never run open)."""
        if (namespace, tenant) in self._isolated:
            return
        assert self.networking is not None
        try:
            self.networking.create_namespaced_network_policy(namespace, isolation_policy(namespace, tenant))
        except ApiException as error:
            if error.status != CONFLICT:
                raise
        self._isolated.add((namespace, tenant))


def _ended(pod: Any) -> bool:
    return bool(pod.status and pod.status.phase in TERMINAL)


def _selector(labels: str | None) -> dict[str, str]:
    return {"label_selector": labels} if labels else {}


def _api_message(error: ApiException) -> str:
    """The API's own message (a Status object's ``message``), else the HTTP reason."""
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except ValueError:
        return str(error.reason)
