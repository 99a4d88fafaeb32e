"""The Kubernetes backend against the local backend, in one run: submit-to-start latency, and node loss.

    .venv/bin/python benchmarks/kubernetes_backend.py [--jobs 10]

Starts a real kube-apiserver v1.20 beside etcd on loopback (../shared/k8s/kube-apiserver.xz), with two
2-GPU Nodes whose kubelets a stand-in plays (``corral.backends.kube.stand_in``: Leases renewed and
deleted Pods removed every 0.5 s), and `corral server` (default settings) with two clusters: `lab`, one 2-GPU node run by the local
backend, and `kube`. Then:

1. `--jobs` one-GPU jobs, one at a time, alternating between the clusters. Local: from the job's submit
   time to the time its process printed. Kubernetes: to the moment a watch on the namespace sees its Pod
   created (no container runs here; the stand-in then reports it finished).
2. A 2-GPU job on a Kubernetes Node; that Node turns NotReady (its Ready condition False, as the node
   lifecycle controller reports a lost node). Measured until the store has the job running again on the
   other Node, and until its new Pod is created there.
3. The same with the Node's heartbeat stopping (Lease no longer renewed), with the default
   ``node_timeout`` of 40 s: corral notices the silence itself.

Writes the table between the `kubernetes_backend` markers of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

import kubernetes
from kubernetes import client, config, watch
from report import publish

from corral.backends.kube.local_apiserver import local_apiserver
from corral.backends.kube.stand_in import Kubelet, kubelet, local_and_kube_cluster_file
from corral.client import Client
from corral.paths import read_token
from corral.server.process import free_port, start, stop

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
ARCHIVE = REPO.parent / "shared" / "k8s" / "kube-apiserver.xz"
STAMP = 'python3 -c "import time; print(time.time())"'
IMAGE = "busybox:1.36"
MODEL = "NVIDIA-A100-SXM4-80GB"


class PodWatch:
    """When each job's Pods were first seen (client time), from a watch on corral's namespace."""

    def __init__(self, stand_in: Kubelet) -> None:
        self.seen: dict[tuple[str, str], float] = {}
        self._core = stand_in.core
        self._stream = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for event in self._stream.stream(self._core.list_namespaced_pod, "corral"):
            labels = event["object"].metadata.labels or {}
            key = (labels.get("corral.dev/job", ""), labels.get("corral.dev/attempt", ""))
            self.seen.setdefault(key, time.time())

    def wait(self, job_id: str, attempt: int = 1) -> float:
        while (job_id, str(attempt)) not in self.seen:
            time.sleep(0.01)
        return self.seen[(job_id, str(attempt))]

    def stop(self) -> None:
        self._stream.stop()


def wait(client: Client, job_id: str, status: str, attempt: int = 1) -> None:
    while True:
        job = client.job(job_id)
        if job.status == status and job.attempt >= attempt:
            return
        time.sleep(0.05)


def latencies(corral: Client, stand_in: Kubelet, pods: PodWatch, jobs: int) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {"local": [], "kube": []}
    for index in range(jobs):
        if index % 2 == 0:
            spec = {"name": f"local-{index}", "command": f"{STAMP}; sleep 0.5", "resources": {"gpus": "T4:1"}}
            job = corral.submit(spec)
            wait(corral, job.id, "finished")
            found["local"].append(float(corral.logs(job.id).split()[0]) - job.submitted_at)
            continue
        spec = {
            "name": f"kube-{index}",
            "command": "true",
            "image": IMAGE,
            "resources": {"gpus": f"{MODEL}:1"},
        }
        job = corral.submit(spec)
        found["kube"].append(pods.wait(job.id) - job.submitted_at)
        [pod] = stand_in.pods(job.id)
        stand_in.run(pod)
        stand_in.exit(pod, 0)
        wait(corral, job.id, "finished")
    return found


def node_loss(corral: Client, stand_in: Kubelet, pods: PodWatch, silent: bool) -> tuple[float, float]:
    """Seconds from the Node's loss until corral has the job running again, and until its new Pod exists."""
    job = corral.submit(
        {"name": "lost", "command": "sleep 600", "image": IMAGE, "resources": {"gpus": f"{MODEL}:2"}}
    )
    pods.wait(job.id)
    wait(corral, job.id, "running")
    [pod] = stand_in.pods(job.id)
    stand_in.run(pod)
    lost = time.time()
    if silent:
        stand_in.die(pod.spec.node_name)
    else:
        stand_in.not_ready(pod.spec.node_name)
    wait(corral, job.id, "running", attempt=2)
    requeued = time.time() - lost
    created = pods.wait(job.id, attempt=2) - lost
    corral.cancel(job.id)
    return requeued, created


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10)
    args = parser.parse_args()
    with (
        local_apiserver(ARCHIVE) as server,
        kubelet(server, finish_deletions=True) as stand_in,
        tempfile.TemporaryDirectory() as scratch,
    ):
        client.CoreV1Api(config.new_client_from_config(str(server.kubeconfig("admin")))).create_namespace(
            {"metadata": {"name": "corral"}}
        )
        nodes = [stand_in.node(suffix) for suffix in ("a", "b", "c", "d")]  # two losses, each needs a spare
        folder = Path(scratch)
        kubeconfig = server.kubeconfig("admin", namespace="corral")
        (folder / "cluster.yaml").write_text(local_and_kube_cluster_file(kubeconfig, stand_in))
        port = free_port()
        arguments = ["server", "--cluster", str(folder / "cluster.yaml"), "--data-dir", str(folder)]
        corral_server = start([*arguments, "--port", str(port)], folder / "server.log", port)
        pods = PodWatch(stand_in)
        try:
            with Client(f"http://127.0.0.1:{port}", token=read_token(folder)) as corral:
                while sum(n.cluster == "kube" for n in corral.nodes()) < len(nodes):
                    time.sleep(0.2)
                found = latencies(corral, stand_in, pods, args.jobs)
                not_ready = node_loss(corral, stand_in, pods, silent=False)
                silent = node_loss(corral, stand_in, pods, silent=True)
        finally:
            pods.stop()
            stop(corral_server, kill=False)
    local, kube = statistics.median(found["local"]), statistics.median(found["kube"])
    lines = [
        f"Command: `.venv/bin/python benchmarks/kubernetes_backend.py --jobs {args.jobs}` "
        f"({time.strftime('%Y-%m-%d')}, {platform.machine()}, Python {platform.python_version()}, "
        f"kube-apiserver v1.20.2, kubernetes client {kubernetes.__version__}); corral defaults "
        "(reconcile interval 2 s, node_timeout 40 s).",
        "",
        "| measure | local backend | Kubernetes backend | Kubernetes / local |",
        "|---|---|---|---|",
        f"| submit to process start (local) / Pod created (Kubernetes), median of {len(found['local'])} / "
        f"{len(found['kube'])} jobs | {local:.2f} s | {kube:.2f} s | {kube / local:.1f} |",
        f"| same, max | {max(found['local']):.2f} s | {max(found['kube']):.2f} s | |",
        f"| Node NotReady until the job runs again (store) | | {not_ready[0]:.2f} s | |",
        f"| Node NotReady until its new Pod is created elsewhere | | {not_ready[1]:.2f} s | |",
        f"| Node heartbeat stops until the job runs again (store) | | {silent[0]:.1f} s | |",
        f"| Node heartbeat stops until its new Pod is created elsewhere | | {silent[1]:.1f} s | |",
    ]
    publish("kubernetes_backend", lines)


if __name__ == "__main__":
    main()
