"""A stand-in for the kubelets of a throwaway API server's Nodes (``local_apiserver``): tests, benchmarks.

No kubelet runs there: ``Kubelet`` creates Nodes as GPU Feature Discovery labels them, renews their
Leases (until told to stop, as a machine that died would), moves corral's Pods through their phases by
patching their status, as a kubelet would report them, and serves their output on the kubelet endpoint
the API server proxies ``pods/log`` to. It uses the server's admin token.
"""

from __future__ import annotations

import datetime as dt
import http.server
import ssl
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client, config

from corral.backends.kube.local_apiserver import LocalApiServer

LEASES = "kube-node-lease"
BEAT_SECONDS = 0.5
MANAGED = "app.kubernetes.io/managed-by=corral"


class LogEndpoint:
    """The kubelets' HTTPS endpoint the API server fetches ``pods/log`` from (it does not check the
    kubelet's certificate unless told a CA): serves each Pod's output as its user wrote it (``Kubelet.write``)."""

    def __init__(self, server: LocalApiServer) -> None:
        self.logs: dict[str, str] = {}
        logs = self.logs

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # /containerLogs/<namespace>/<pod>/<container>
                parts = self.path.split("?")[0].strip("/").split("/")
                text = logs.get(parts[2]) if len(parts) == 4 and parts[0] == "containerLogs" else None
                body = (text or "").encode()
                self.send_response(200 if text is not None else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self._http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(server.certificate, server.folder / "certs" / "apiserver.key")
        # The handshake happens in the request thread: done in accept, a client that stalls it would
        # block the serve loop, and with it shutdown().
        self._http.socket = context.wrap_socket(
            self._http.socket, server_side=True, do_handshake_on_connect=False
        )
        self.port = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()


class Kubelet:
    """The kubelets of one test's Nodes (all labelled ``corral-test=<id>``), through the admin token."""

    def __init__(self, server: LocalApiServer, finish_deletions: bool = False) -> None:
        """``finish_deletions``: remove a deleted Pod on a live Node at once, as a kubelet does once the
        containers stopped (a test that checks how a Pod was deleted leaves it Terminating)."""
        self.finish_deletions = finish_deletions
        self.endpoint = LogEndpoint(server)
        api = config.new_client_from_config(str(server.kubeconfig("admin")))
        self.core = client.CoreV1Api(api)
        self.leases = client.CoordinationV1Api(api)
        self.test = uuid.uuid4().hex[:8]
        self.selector = f"corral-test={self.test}"
        self._alive: set[str] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def start(self) -> None:
        self.endpoint.start()
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)
        self.endpoint.stop()

    def node(
        self,
        suffix: str,
        gpus: int = 2,
        product: str = "NVIDIA-A100-SXM4-80GB",
        annotations: dict[str, str] | None = None,
    ) -> str:
        """Create a Ready Node with ``gpus`` GPUs and GFD's labels; its Lease is renewed from now on."""
        name = f"{self.test}-{suffix}"
        resources = {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": str(gpus), "pods": "110"}
        labels = {
            "corral-test": self.test,
            "nvidia.com/gpu.product": product,
            "nvidia.com/gpu.memory": "81920",
            "nvidia.com/gpu.count": str(gpus),
        }
        self.core.create_node(
            {"metadata": {"name": name, "labels": labels, "annotations": annotations or {}}}
        )
        now = _now()
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        status = {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [ready],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.endpoint.port}},
        }
        self.core.patch_node_status(name, {"status": status})
        self.leases.create_namespaced_lease(
            LEASES,
            {
                "metadata": {"name": name},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": _micro()},
            },
        )
        with self._lock:
            self._alive.add(name)
        return name

    def die(self, name: str) -> None:
        """The machine stops: its Lease is no longer renewed, as with a kubelet that is gone."""
        with self._lock:
            self._alive.discard(name)

    def not_ready(self, name: str) -> None:
        """The Node's Ready condition turns False, as the node lifecycle controller reports a lost node."""
        self.die(name)
        now = _now()
        ready = {"type": "Ready", "status": "False", "reason": "NodeStatusUnknown", "lastHeartbeatTime": now}
        self.core.patch_node_status(name, {"status": {"conditions": [ready | {"lastTransitionTime": now}]}})

    def pods(self, job_id: str) -> list[Any]:
        """corral's Pods of a job, by pod index."""
        found = self.core.list_namespaced_pod("corral", label_selector=f"corral.dev/job={job_id}").items
        return sorted(found, key=lambda p: int(p.metadata.labels["corral.dev/pod"]))

    def write(self, pod: Any, text: str) -> None:
        """The Pod's whole output so far, as its container wrote it."""
        self.endpoint.logs[pod.metadata.name] = text

    def run(self, pod: Any) -> None:
        self._status(pod, "Running", {"running": {"startedAt": _now()}})

    def exit(self, pod: Any, code: int) -> None:
        terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "finishedAt": _now()}
        self._status(pod, "Succeeded" if code == 0 else "Failed", {"terminated": terminated})

    def wait_image(self, pod: Any, reason: str, message: str) -> None:
        self._status(pod, "Pending", {"waiting": {"reason": reason, "message": message}})

    def finish_deletion(self, pod: Any) -> None:
        """What a kubelet does once a deleted Pod's containers stopped: remove it for good."""
        self.core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)

    def _status(self, pod: Any, phase: str, state: dict[str, Any]) -> None:
        container = {
            "name": "main",
            "image": pod.spec.containers[0].image,
            "imageID": "",
            "ready": phase == "Running",
            "restartCount": 0,
            "state": state,
        }
        self.core.patch_namespaced_pod_status(
            pod.metadata.name,
            pod.metadata.namespace,
            {"status": {"phase": phase, "containerStatuses": [container]}},
        )

    def _beat(self) -> None:
        while not self._stopped.wait(BEAT_SECONDS):
            with self._lock:
                alive = sorted(self._alive)
            try:
                for name in alive:
                    self.leases.patch_namespaced_lease(name, LEASES, {"spec": {"renewTime": _micro()}})
                if self.finish_deletions:
                    for pod in self.core.list_pod_for_all_namespaces(label_selector=MANAGED).items:
                        if pod.metadata.deletion_timestamp is not None and pod.spec.node_name in alive:
                            self.finish_deletion(pod)
            except client.ApiException:
                pass  # the server is stopping, or the Pod is gone already


def local_and_kube_cluster_file(kubeconfig: Path, stand_in: Kubelet) -> str:
    """A cluster file for one server driving both backends: ``lab``, this machine's 2 T4s (the local
    backend), and ``kube``, the stand-in's Nodes."""
    return (
        "clusters:\n"
        "  - name: lab\n"
        "    pools:\n"
        "      - {name: ws, flavor: t4, count: 1, node: {cpu: 4, memory_gib: 16, gpus: 2, gpu_model: T4}}\n"
        "  - name: kube\n"
        f"    backend: {{kind: kubernetes, kubeconfig: '{kubeconfig}', node_selector: '{stand_in.selector}'}}\n"
    )


@contextmanager
def kubelet(server: LocalApiServer, finish_deletions: bool = False) -> Iterator[Kubelet]:
    stand_in = Kubelet(server, finish_deletions)
    stand_in.start()
    try:
        yield stand_in
    finally:
        stand_in.stop()


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
