"""The Kubernetes backend against a real kube-apiserver (v1.20, with etcd) on loopback.

corral places, Kubernetes runs: a gang's Pods are bound to the nodes corral chose, GPU shares carry
HAMi's resources and device annotation, a Node whose heartbeat stops is down and its job completes
elsewhere as attempt 2, a cancelled job's Pods are deleted with its grace period, a restarted server
adopts a running Pod, other schedulers' Pods hold their GPUs, and everything corral does it does with
the token bound to the roles of deploy/kubernetes/rbac.yaml. The tests play the kubelet (corral.backends.kube.stand_in).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip(
    "kubernetes", reason="the Kubernetes backend needs kubernetes (pip install 'corral[kubernetes]')"
)

from kube_roles import ARCHIVE, RBAC, TENANT_NAMESPACES, grant_corral_roles  # noqa: E402
from kubernetes import client, config  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402
from servers import admin_client, free_port, start_server, stop, wait_for  # noqa: E402

from corral.backends.kube.backend import KubernetesBackend  # noqa: E402
from corral.backends.kube.informer import Informer  # noqa: E402
from corral.backends.kube.local_apiserver import (  # noqa: E402
    ApiServerUnavailable,
    LocalApiServer,
    apiserver_binary,
    etcd_binary,
    local_apiserver,
)
from corral.backends.kube.nodes import OTHER_PODS  # noqa: E402
from corral.backends.kube.stand_in import Kubelet, kubelet, local_and_kube_cluster_file  # noqa: E402
from corral.control.reconcile import Inventory, reconcile  # noqa: E402
from corral.core.cluster import BackendSpec, ClusterSpec  # noqa: E402
from corral.scheduling import get_policy  # noqa: E402
from corral.spec.job import JobSpec  # noqa: E402
from corral.store.database import open_store  # noqa: E402
from corral.store.jobs import JobStore  # noqa: E402

POLICY = get_policy("default")
IMAGE = "busybox:1.36"
NODE_TIMEOUT = 6.0
"""Seconds of Lease silence before a Node is down: the stand-in renews every 0.5 s, so only a Node told
to die goes quiet for that long, even on a loaded machine."""


@pytest.fixture(scope="module")
def apiserver() -> Iterator[LocalApiServer]:
    try:
        apiserver_binary(ARCHIVE), etcd_binary()
    except ApiServerUnavailable as error:
        pytest.skip(str(error))
    with local_apiserver(ARCHIVE, users=("corral", "corral-tenants"), watch_cache=False) as server:
        grant_corral_roles(server, "corral")
        grant_corral_roles(server, "corral-tenants", RBAC, TENANT_NAMESPACES)
        yield server


Lab = tuple[JobStore, Inventory, KubernetesBackend, Kubelet]


@pytest.fixture
def lab(apiserver: LocalApiServer, tmp_path: Path) -> Iterator[Lab]:
    store = JobStore(open_store(f"sqlite:///{tmp_path / 'corral.db'}"))
    with kubelet(apiserver) as stand_in:
        cluster = _cluster(apiserver, stand_in)
        inventory = Inventory([cluster])
        backend = KubernetesBackend(cluster, store)
        yield store, inventory, backend, stand_in
        for job in store.list(limit=1000):
            if job.status in ("pending", "running"):
                store.cancel(job.id)
        backend.sync()  # deletes what is left
        backend.close()
        for pod in stand_in.core.list_namespaced_pod("corral").items:
            stand_in.finish_deletion(pod)
    store.engine.dispose()


def _cluster(server: LocalApiServer, stand_in: Kubelet, **backend: object) -> ClusterSpec:
    spec = BackendSpec(
        kind="kubernetes",
        kubeconfig=str(server.kubeconfig("corral", namespace="corral")),
        node_selector=stand_in.selector,
        node_timeout=NODE_TIMEOUT,
        **backend,
    )
    return ClusterSpec(name="kube", backend=spec)


def _submit(store: JobStore, **spec: object) -> str:
    return store.submit(JobSpec.model_validate({"name": "job", "command": "true", "image": IMAGE} | spec)).id


def _rounds(lab: Lab, until: Callable[[], bool], timeout: float = 30) -> None:
    store, inventory, backend, _ = lab
    deadline = time.monotonic() + timeout
    while True:
        reconcile(store.engine, inventory, POLICY, time.time())
        backend.sync()
        if until():
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not reached in {timeout:g} s: {[(j.id, j.status, j.reason) for j in store.list()]}"
            )
        time.sleep(0.2)


def _nodes(lab: Lab, *suffixes: str, gpus: int = 2, annotations: dict[str, str] | None = None) -> list[str]:
    """Create the Nodes and wait until corral has them: a job submitted before would find no node
    that could ever hold it."""
    names = [lab[3].node(suffix, gpus=gpus, annotations=annotations) for suffix in suffixes]
    _rounds(lab, lambda: set(names) <= set(lab[2].nodes_store.registrations()))
    return names


def _env(pod: object) -> dict[str, str]:
    return {e.name: e.value for e in pod.spec.containers[0].env}  # type: ignore[attr-defined]


def test_nodes_become_corral_nodes_with_their_gpus(lab: Lab) -> None:
    store, _, backend, stand_in = lab
    [name] = _nodes(lab, "a", gpus=4, annotations={"corral.dev/nvlink-groups": "0-1/2-3"})
    registration = backend.nodes_store.registrations()[name]
    assert registration.cluster == "kube" and registration.cpu == 16 and registration.memory_gib == 64
    assert [(g.model, g.memory_gib, g.nvlink_group) for g in registration.gpus] == [
        ("NVIDIA-A100-SXM4-80GB", 80.0, 0),
        ("NVIDIA-A100-SXM4-80GB", 80.0, 0),
        ("NVIDIA-A100-SXM4-80GB", 80.0, 1),
        ("NVIDIA-A100-SXM4-80GB", 80.0, 1),
    ]


def test_a_gang_lands_on_the_two_nodes_corral_chose(lab: Lab) -> None:
    store, _, _, stand_in = lab
    nodes = set(_nodes(lab, "a", "b"))
    job = _submit(
        store, pods=2, command=["python", "train.py"], resources={"gpus": 2, "cpu": 1}, time_limit="1h"
    )
    _rounds(lab, lambda: len(stand_in.pods(job)) == 2)
    chosen = {pod: node for pod, node, _ in store.placements(job)}
    pods = stand_in.pods(job)
    assert {pod.spec.node_name for pod in pods} == nodes
    for index, pod in enumerate(pods):
        assert pod.spec.node_name == chosen[index]
        container = pod.spec.containers[0]
        assert container.image == IMAGE and container.command == ["python", "train.py"]
        assert container.resources.limits == {"nvidia.com/gpu": "2", "memory": "4Gi"}
        assert pod.spec.active_deadline_seconds == 3600 and pod.spec.restart_policy == "Never"
        env = _env(pod)
        assert (env["CUDA_VISIBLE_DEVICES"], env["CORRAL_GPU_INDEXES"], env["CORRAL_POD_INDEX"]) == (
            "0,1",
            "0,1",
            str(index),
        )
        labels = pod.metadata.labels
        assert (labels["corral.dev/job"], labels["corral.dev/attempt"], labels["corral.dev/pod"]) == (
            job,
            "1",
            str(index),
        )
        assert (labels["corral.dev/tenant"], labels["corral.dev/queue"]) == ("default", "default")
    for pod in pods:
        stand_in.run(pod)
    for pod in pods:
        stand_in.exit(pod, 0)
    _rounds(lab, lambda: store.get(job).status == "finished")


def test_a_member_s_pod_is_confined_and_fenced_off_from_other_tenants(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the API server stores of a member's Pod: a non-root uid, no privilege escalation, no
    capabilities, the runtime's seccomp profile, no ServiceAccount token, its memory capped, none of the
    server's secrets; and a NetworkPolicy that lets only the tenant's own Pods reach it."""
    store, _, _, stand_in = lab
    monkeypatch.setenv("CORRAL_ADMIN_TOKEN", "server-secret")
    _nodes(lab, "a")
    spec = JobSpec(name="job", command="id", image=IMAGE, resources={"gpus": 1, "memory": "2GiB"})
    job = store.submit(spec, tenant="vision").id
    _rounds(lab, lambda: len(stand_in.pods(job)) == 1)
    [pod] = stand_in.pods(job)
    security = pod.spec.security_context
    assert (security.run_as_non_root, security.run_as_user, security.seccomp_profile.type) == (
        True,
        1000,
        "RuntimeDefault",
    )
    assert pod.spec.automount_service_account_token is False and not pod.spec.volumes
    assert not (pod.spec.host_network or pod.spec.host_pid or pod.spec.host_ipc)
    container = pod.spec.containers[0]
    assert container.security_context.allow_privilege_escalation is False
    assert container.security_context.capabilities.drop == ["ALL"]
    assert container.resources.limits["memory"] == "2Gi"
    assert "server-secret" not in _env(pod).values()
    networking = client.NetworkingV1Api(stand_in.core.api_client)
    [policy] = [
        p
        for p in networking.list_namespaced_network_policy("corral").items
        if p.spec.pod_selector.match_labels.get("corral.dev/tenant") == "vision"
    ]
    assert pod.metadata.labels.items() >= policy.spec.pod_selector.match_labels.items()
    assert [peer.pod_selector.match_labels for peer in policy.spec.ingress[0]._from] == [
        {"app.kubernetes.io/managed-by": "corral", "corral.dev/tenant": "vision"}
    ]
    stand_in.exit(pod, 0)
    _rounds(lab, lambda: store.get(job).status == "finished")


def test_a_pod_s_output_reaches_corral_through_the_api(lab: Lab) -> None:
    """Whole lines while it runs, everything once it ended: read from pods/log, which the API server
    fetches from the node's kubelet."""
    store, _, backend, stand_in = lab
    _nodes(lab, "a")
    job = _submit(store, resources={"gpus": 1})
    _rounds(lab, lambda: len(stand_in.pods(job)) == 1)
    [pod] = stand_in.pods(job)
    stand_in.write(pod, "step 1\nstep")
    stand_in.run(pod)
    _rounds(lab, lambda: backend.read_log(job, 0) == "step 1\n")
    stand_in.write(pod, "step 1\nstep 2\ndone")
    stand_in.exit(pod, 0)
    _rounds(lab, lambda: store.get(job).status == "finished")
    assert backend.read_log(job, 0) == "step 1\nstep 2\ndone"


def test_a_failed_pod_fails_its_job_with_its_exit_code(lab: Lab) -> None:
    store, _, _, stand_in = lab
    _nodes(lab, "a")
    job = _submit(store, resources={"gpus": 1, "cpu": 1})
    _rounds(lab, lambda: len(stand_in.pods(job)) == 1)
    stand_in.exit(stand_in.pods(job)[0], 3)
    _rounds(lab, lambda: store.get(job).status == "failed")
    assert store.get(job).reason == "pod 0 exited with code 3"


def test_a_pod_someone_else_deleted_counts_as_killed(lab: Lab) -> None:
    store, _, _, stand_in = lab
    _nodes(lab, "a")
    job = _submit(store, resources={"gpus": 1})
    _rounds(lab, lambda: len(stand_in.pods(job)) == 1)
    stand_in.run(stand_in.pods(job)[0])
    _rounds(lab, lambda: True)
    stand_in.finish_deletion(stand_in.pods(job)[0])
    _rounds(lab, lambda: store.get(job).status == "failed")
    assert store.get(job).reason == "pod 0 exited with code 137"


def test_two_half_gpus_get_hami_resources_on_one_gpu(lab: Lab) -> None:
    store, _, _, stand_in = lab
    [node] = _nodes(lab, "a", gpus=1, annotations={"corral.dev/gpu-uuids": "GPU-1234"})
    jobs = [_submit(store, resources={"gpus": 0.5, "cpu": 1}) for _ in range(2)]
    _rounds(lab, lambda: all(len(stand_in.pods(j)) == 1 for j in jobs))
    for job in jobs:
        [pod] = stand_in.pods(job)
        assert pod.spec.node_name == node
        limits = pod.spec.containers[0].resources.limits
        assert limits == {
            "nvidia.com/gpu": "1",
            "nvidia.com/gpumem": "40960",
            "nvidia.com/gpucores": "50",
            "memory": "4Gi",
        }
        annotations = pod.metadata.annotations
        assert annotations["hami.io/vgpu-devices-to-allocate"] == "GPU-1234,NVIDIA,40960,50:;"
        assert (
            annotations["hami.io/vgpu-node"] == node and annotations["nvidia.com/use-gpuuuid"] == "GPU-1234"
        )
        assert _env(pod)["NVIDIA_VISIBLE_DEVICES"] == "GPU-1234"


def test_a_node_whose_heartbeat_stops_loses_its_job_which_completes_elsewhere(lab: Lab) -> None:
    """Both nodes busy with a 2-GPU job each; one node's Lease stops being renewed: it is down once
    ``node_timeout`` has passed, its job runs again as attempt 2 on the other node once that one's job
    has finished, and its old Pod is deleted (at once: no kubelet there would confirm a graceful stop)."""
    store, _, _, stand_in = lab
    a, b = _nodes(lab, "a", "b")
    checkpoint = {"dir": "/ckpt", "interval": "1s"}
    jobs = [_submit(store, resources={"gpus": 2, "cpu": 1}, checkpoint=checkpoint) for _ in range(2)]
    _rounds(lab, lambda: all(len(stand_in.pods(j)) == 1 for j in jobs))
    [lost] = [j for j in jobs if stand_in.pods(j)[0].spec.node_name == b]
    [kept] = [j for j in jobs if j != lost]
    for job in jobs:
        stand_in.run(stand_in.pods(job)[0])
    stand_in.die(b)
    _rounds(lab, lambda: "node_lost" in [e.kind for e in store.events(lost)])
    assert store.get(lost).status == "pending"
    _rounds(lab, lambda: stand_in.pods(lost) == [])
    stand_in.exit(stand_in.pods(kept)[0], 0)
    _rounds(lab, lambda: len(stand_in.pods(lost)) == 1, timeout=60)
    [again] = stand_in.pods(lost)
    assert again.spec.node_name == a and again.metadata.labels["corral.dev/attempt"] == "2"
    assert _env(again)["CORRAL_CHECKPOINT_DIR"] == "/ckpt"
    stand_in.run(again)
    stand_in.exit(again, 0)
    _rounds(lab, lambda: store.get(lost).status == "finished")
    assert store.get(lost).attempt == 2


def test_a_deleted_node_s_job_is_requeued_and_waits_for_a_node_of_its_shape(lab: Lab) -> None:
    """A Node deleted (scaled down) is down, not forgotten: its job waits, and runs on the next Node of
    its shape."""
    store, _, _, stand_in = lab
    [node] = _nodes(lab, "a")
    job = _submit(store, resources={"gpus": 1})
    _rounds(lab, lambda: len(stand_in.pods(job)) == 1)
    stand_in.core.delete_node(node)
    _rounds(lab, lambda: "node_lost" in [e.kind for e in store.events(job)])
    assert store.get(job).status == "pending"
    _nodes(lab, "b")
    _rounds(lab, lambda: [p.metadata.labels["corral.dev/attempt"] for p in stand_in.pods(job)] == ["2"])


def test_a_cordoned_node_keeps_its_work_and_takes_no_more(lab: Lab) -> None:
    store, _, backend, stand_in = lab
    [node] = _nodes(lab, "a")
    running = _submit(store, resources={"gpus": 1})
    _rounds(lab, lambda: len(stand_in.pods(running)) == 1)
    stand_in.core.patch_node(node, {"spec": {"unschedulable": True}})
    _rounds(lab, lambda: backend.nodes_store.registrations()[node].gpus[1].held_by is not None)
    waiting = _submit(store, resources={"gpus": 1})
    for _ in range(3):
        _rounds(lab, lambda: True)
    assert (store.get(running).status, store.get(waiting).status) == ("running", "pending")
    stand_in.core.patch_node(node, {"spec": {"unschedulable": False}})
    _rounds(lab, lambda: store.get(waiting).status == "running")


def test_cancelling_a_job_deletes_its_pods_with_its_grace_period(lab: Lab) -> None:
    store, _, backend, stand_in = lab
    _nodes(lab, "a", "b")
    job = _submit(store, pods=2, resources={"gpus": 2, "cpu": 1}, stop_grace_period="7s")
    _rounds(lab, lambda: len(stand_in.pods(job)) == 2)
    for pod in stand_in.pods(job):
        stand_in.run(pod)
    store.cancel(job)
    backend.sync()
    pods = stand_in.pods(job)
    assert [pod.metadata.deletion_grace_period_seconds for pod in pods] == [7, 7]


def test_a_restarted_server_adopts_a_running_pod(lab: Lab) -> None:
    """A new backend (the server restarted) finds the job's Pod by label and follows it: no second Pod."""
    store, inventory, backend, stand_in = lab
    _nodes(lab, "a")
    job = _submit(store, resources={"gpus": 1, "cpu": 1})
    _rounds(lab, lambda: len(stand_in.pods(job)) == 1)
    [pod] = stand_in.pods(job)
    stand_in.run(pod)
    backend.close()
    restarted = KubernetesBackend(inventory.clusters[0], store)
    try:
        again = (store, inventory, restarted, stand_in)
        _rounds(again, lambda: True)
        assert [p.metadata.uid for p in stand_in.pods(job)] == [pod.metadata.uid]
        stand_in.exit(pod, 0)
        _rounds(again, lambda: store.get(job).status == "finished")
        assert store.get(job).attempt == 1
    finally:
        restarted.close()


def test_a_foreign_pod_s_gpus_are_not_booked_twice(lab: Lab) -> None:
    """A Pod another scheduler put on the node holds one of its two GPUs: of two one-GPU jobs, one runs
    and the other waits until that Pod has ended."""
    store, _, backend, stand_in = lab
    [node] = _nodes(lab, "a")
    foreign = {
        "metadata": {"name": f"other-{stand_in.test}"},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "image": IMAGE, "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        },
    }
    stand_in.core.create_namespaced_pod("default", foreign)
    _rounds(lab, lambda: any(g.held_by for g in backend.nodes_store.registrations().get(node, _none()).gpus))
    held = [g.held_by for g in backend.nodes_store.registrations()[node].gpus]
    assert held == [None, OTHER_PODS]
    jobs = [_submit(store, resources={"gpus": 1, "cpu": 1}) for _ in range(2)]
    _rounds(lab, lambda: sorted(store.get(j).status for j in jobs) == ["pending", "running"])
    for _ in range(3):
        _rounds(lab, lambda: True)
    assert sorted(store.get(j).status for j in jobs) == ["pending", "running"]
    stand_in.core.delete_namespaced_pod(foreign["metadata"]["name"], "default", grace_period_seconds=0)
    _rounds(lab, lambda: all(store.get(j).status == "running" for j in jobs))


def test_a_pod_the_api_refuses_fails_its_attempt_with_the_api_s_message(lab: Lab) -> None:
    """A LimitRange caps each container's CPU at less than the job asks for: the API refuses its Pod."""
    store, _, _, stand_in = lab
    _nodes(lab, "a")
    limits = {
        "metadata": {"name": "small"},
        "spec": {"limits": [{"type": "Container", "max": {"cpu": "500m"}}]},
    }
    stand_in.core.create_namespaced_limit_range("corral", limits)
    try:
        job = _submit(store, resources={"gpus": 1, "cpu": 1})
        _rounds(lab, lambda: store.get(job).status == "failed")
        reason = store.get(job).reason or ""
        assert reason.startswith("pod 0: the Kubernetes API refused it: ") and "cpu limit" in reason
        assert stand_in.pods(job) == []
    finally:
        stand_in.core.delete_namespaced_limit_range("small", "corral")


def test_a_job_without_an_image_fails_with_a_clear_reason(lab: Lab) -> None:
    store, _, _, stand_in = lab
    _nodes(lab, "a")
    job = store.submit(JobSpec(name="job", command="true", resources={"gpus": 1})).id
    _rounds(lab, lambda: store.get(job).status == "failed")
    assert "add `image:`" in (store.get(job).reason or "")
    assert stand_in.pods(job) == []


def test_an_image_that_cannot_be_pulled_ends_the_attempt_after_the_pending_timeout(
    apiserver: LocalApiServer, lab: Lab
) -> None:
    store, inventory, backend, stand_in = lab
    _nodes(lab, "a")
    cluster = _cluster(apiserver, stand_in, pending_timeout=0.5)
    impatient = KubernetesBackend(cluster, store)
    backend.close()
    lab = (store, Inventory([cluster]), impatient, stand_in)
    try:
        job = _submit(store, resources={"gpus": 1})
        _rounds(lab, lambda: len(stand_in.pods(job)) == 1)
        stand_in.wait_image(
            stand_in.pods(job)[0], "ImagePullBackOff", 'Back-off pulling image "busybox:1.36"'
        )
        _rounds(lab, lambda: store.get(job).status == "failed")
        assert (
            store.get(job).reason
            == 'pod 0: Kubernetes: ImagePullBackOff: Back-off pulling image "busybox:1.36"'
        )
    finally:
        impatient.close()


def test_each_tenant_s_pods_go_to_its_own_namespace(apiserver: LocalApiServer, lab: Lab) -> None:
    """With ``tenant_namespaces`` (and tenant-namespaces.yaml's rights) a tenant's Pods go to
    corral-<tenant>, created the first time it is needed, and are followed there to the end."""
    store, _, backend, stand_in = lab
    _nodes(lab, "a")
    spec = BackendSpec(
        kind="kubernetes",
        kubeconfig=str(apiserver.kubeconfig("corral-tenants", namespace="corral")),
        node_selector=stand_in.selector,
        tenant_namespaces=True,
    )
    cluster = ClusterSpec(name="kube", backend=spec)
    tenants = KubernetesBackend(cluster, store)
    backend.close()
    lab = (store, Inventory([cluster]), tenants, stand_in)
    try:
        job_spec = JobSpec(name="job", command="true", image=IMAGE, resources={"gpus": 1})
        job = store.submit(job_spec, tenant="vision").id
        found: list[object] = []
        selector = f"corral.dev/job={job}"

        def created() -> bool:
            found[:] = stand_in.core.list_pod_for_all_namespaces(label_selector=selector).items
            return bool(found)

        _rounds(lab, created)
        [pod] = found
        assert (pod.metadata.namespace, pod.metadata.labels["corral.dev/tenant"]) == (
            "corral-vision",
            "vision",
        )  # type: ignore[attr-defined]
        namespace = stand_in.core.read_namespace("corral-vision")
        assert namespace.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
        networking = client.NetworkingV1Api(stand_in.core.api_client)
        assert [
            p.metadata.name for p in networking.list_namespaced_network_policy("corral-vision").items
        ] == ["corral-tenant-vision"]
        stand_in.exit(pod, 0)
        _rounds(lab, lambda: store.get(job).status == "finished")
    finally:
        tenants.close()


def test_corral_s_role_grants_what_it_uses_and_no_more(apiserver: LocalApiServer) -> None:
    """Every test above ran corral with the token bound to deploy/kubernetes/rbac.yaml's roles; here,
    that token cannot change Nodes, nor create Pods outside corral's namespace."""
    api = config.new_client_from_config(str(apiserver.kubeconfig("corral")))
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as refused:
        core.patch_node("any", {"metadata": {"labels": {"x": "y"}}})
    assert refused.value.status == 403
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": IMAGE}]}}
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod("default", pod)
    assert refused.value.status == 403
    assert core.list_pod_for_all_namespaces(limit=1).items is not None


def _none() -> object:
    class Empty:
        gpus: list[object] = []

    return Empty()


def test_a_watch_whose_version_was_compacted_lists_again(lab: Lab, apiserver: LocalApiServer) -> None:
    """A watch that saw nothing for a while resumes from an old resourceVersion; once etcd compacted
    its history the API answers 410 Gone: the informer lists again and follows from there on."""
    _, _, _, stand_in = lab
    api = config.new_client_from_config(str(apiserver.kubeconfig("corral")))
    nodes = Informer(client.CoreV1Api(api).list_node, label_selector=stand_in.selector)
    nodes.start()
    try:
        for suffix in ("x", "y"):  # history moves on, past the revision after the informer's
            stand_in.core.create_namespace({"metadata": {"name": f"other-{stand_in.test}-{suffix}"}})
        revision = stand_in.core.list_namespace().metadata.resource_version
        etcdctl = str(etcd_binary().with_name("etcdctl"))
        subprocess.run(
            [etcdctl, f"--endpoints={apiserver.etcd}", "compact", revision], check=True, capture_output=True
        )
        deadline = time.monotonic() + 30
        while nodes.relists == 0:  # at the latest when its watch request ends and is renewed
            assert time.monotonic() < deadline, "the informer never listed again"
            time.sleep(0.1)
        name = stand_in.node("a")
        while [n.metadata.name for n in nodes.items()] != [name]:
            assert time.monotonic() < deadline, "the informer lost track after listing again"
            time.sleep(0.1)
    finally:
        nodes.stop()


def test_one_control_plane_drives_a_local_and_a_kubernetes_cluster(
    apiserver: LocalApiServer, tmp_path: Path
) -> None:
    """`corral server` with a cluster file naming `lab` (the local backend) and `kube` (Kubernetes): a
    T4 job runs on this machine, an A100 job as a Pod; both logs come back through corral's API, and
    `corral nodes` counts the GPU another scheduler's Pod holds."""
    with kubelet(apiserver) as stand_in:
        node = stand_in.node("a")
        kubeconfig = apiserver.kubeconfig("corral", namespace="corral")
        (tmp_path / "cluster.yaml").write_text(local_and_kube_cluster_file(kubeconfig, stand_in))
        other = {
            "metadata": {"name": f"other-{stand_in.test}"},
            "spec": {
                "nodeName": node,
                "containers": [
                    {"name": "c", "image": IMAGE, "resources": {"limits": {"nvidia.com/gpu": "1"}}}
                ],
            },
        }
        stand_in.core.create_namespaced_pod("default", other)
        port = free_port()
        server = start_server(tmp_path, port, cluster=tmp_path / "cluster.yaml", interval=0.5)
        try:
            with admin_client(tmp_path, port) as corral:
                deadline = time.monotonic() + 30
                while not any(n.name == node and n.gpus_outside for n in corral.nodes()):
                    assert time.monotonic() < deadline, "the Kubernetes node never showed up"
                    time.sleep(0.2)
                here = corral.submit({"name": "here", "command": "echo on T4", "resources": {"gpus": "T4:1"}})
                there = corral.submit(
                    {
                        "name": "there",
                        "command": "echo on kube",
                        "image": IMAGE,
                        "resources": {"gpus": "NVIDIA-A100-SXM4-80GB:1"},
                    }
                )
                while len(stand_in.pods(there.id)) != 1:
                    assert time.monotonic() < deadline + 30, "no Pod was created"
                    time.sleep(0.2)
                [pod] = stand_in.pods(there.id)
                stand_in.write(pod, "on kube\n")
                stand_in.run(pod)
                stand_in.exit(pod, 0)
                for job in (here, there):
                    wait_for(corral, job.id, "finished", timeout=60)
                assert (corral.logs(here.id), corral.logs(there.id)) == ("on T4\n", "on kube\n")
                [state] = [n for n in corral.nodes() if n.name == node]
                assert (state.cluster, state.gpus, state.gpus_outside) == ("kube", 2, 1)
        finally:
            stop(server, kill=False)
            stand_in.core.delete_namespaced_pod(other["metadata"]["name"], "default", grace_period_seconds=0)
