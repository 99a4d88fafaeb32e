"""No API server needed: what the Kubernetes backend reads from Nodes and Pods, and the Pods it writes."""

from __future__ import annotations

import datetime as dt

import pytest

pytest.importorskip(
    "kubernetes", reason="the Kubernetes backend needs kubernetes (pip install 'corral[kubernetes]')"
)

from kubernetes.client import (  # noqa: E402
    V1Container,
    V1ContainerState,
    V1ContainerStateTerminated,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1Node,
    V1NodeCondition,
    V1NodeSpec,
    V1NodeStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
    V1PodStatus,
    V1ResourceRequirements,
    V1Taint,
)
from pydantic import ValidationError  # noqa: E402

from corral.backends.kube.manifests import (  # noqa: E402
    MissingImage,
    isolation_policy,
    label_value,
    pod_manifest,
    pod_outcome,
    tenant_namespace,
)
from corral.backends.kube.nodes import foreign_gpus, gpu_uuids, node_view, with_held  # noqa: E402
from corral.backends.pods import DesiredPod  # noqa: E402
from corral.core.cluster import BackendSpec  # noqa: E402
from corral.spec.job import JobSpec  # noqa: E402

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def _node(
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    ready: str = "True",
    heartbeat: dt.datetime = NOW,
    taints: list[V1Taint] | None = None,
    unschedulable: bool = False,
) -> V1Node:
    return V1Node(
        metadata=V1ObjectMeta(name="dgx1", labels=labels or {}, annotations=annotations or {}),
        spec=V1NodeSpec(taints=taints, unschedulable=unschedulable),
        status=V1NodeStatus(
            allocatable={"cpu": "63500m", "memory": "512Gi", "nvidia.com/gpu": "8"},
            conditions=[V1NodeCondition(type="Ready", status=ready, last_heartbeat_time=heartbeat)],
        ),
    )


def _view(node: V1Node, seconds_later: float = 1.0):  # type: ignore[no-untyped-def]
    return node_view(node, None, "kube", True, NOW.timestamp() + seconds_later, timeout=40)


def test_gpu_feature_discovery_labels_give_the_gpus_shape() -> None:
    labels = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.memory": "81559"}
    view = _view(_node(labels, {"corral.dev/nvlink-groups": "0-1-2-3/4-5-6-7"}))
    registration = view.registration
    assert (registration.cpu, registration.memory_gib, len(registration.gpus)) == (63.5, 512.0, 8)
    assert {(g.model, g.memory_gib) for g in registration.gpus} == {("NVIDIA-H100-80GB-HBM3", 79.6)}
    assert [g.nvlink_group for g in registration.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert view.down is None and view.closed is None and view.uuids == tuple("01234567")


def test_a_node_is_down_when_not_ready_silent_or_evicting() -> None:
    assert _view(_node(ready="False")).down == "its Ready condition is False"
    assert _view(_node(), seconds_later=41).down == "no heartbeat (Lease or Ready) for 41 s"
    evicting = V1Taint(key="maintenance", effect="NoExecute")
    assert _view(_node(taints=[evicting])).down == "NoExecute taint maintenance"


def test_a_cordoned_or_tainted_node_holds_its_free_gpus_but_keeps_its_work() -> None:
    assert _view(_node(unschedulable=True)).closed == "cordoned"
    gpu_operator = V1Taint(key="nvidia.com/gpu", effect="NoSchedule")  # corral's Pods tolerate it
    assert _view(_node(taints=[gpu_operator])).closed is None
    view = _view(_node(taints=[V1Taint(key="team", value="a", effect="NoSchedule")]))
    held = with_held(view, used={0, 1}, outside=0)
    assert [g.held_by is not None for g in held.gpus] == [False, False] + [True] * 6
    assert view.down is None


def test_foreign_pods_hold_the_highest_gpus_corral_does_not_use() -> None:
    gpu = V1ResourceRequirements(limits={"nvidia.com/gpu": "2"})
    pods = [
        V1Pod(spec=V1PodSpec(node_name="dgx1", containers=[V1Container(name="c", resources=gpu)])),
        V1Pod(spec=V1PodSpec(node_name="dgx1", containers=[V1Container(name="c")])),
        V1Pod(spec=V1PodSpec(containers=[V1Container(name="c", resources=gpu)])),  # not bound yet
    ]
    assert foreign_gpus(pods) == {"dgx1": 2}
    held = with_held(_view(_node()), used={7}, outside=2)
    assert [g.index for g in held.gpus if g.held_by] == [5, 6]


def test_gpu_uuids_come_from_corral_s_annotation_or_hami_s_registration() -> None:
    assert gpu_uuids({"corral.dev/gpu-uuids": "GPU-a, GPU-b"}, 2) == ("GPU-a", "GPU-b")
    hami = "GPU-a,10,81920,100,NVIDIA-H100,0,true:GPU-b,10,81920,100,NVIDIA-H100,0,true:"
    assert gpu_uuids({"hami.io/node-nvidia-register": hami}, 2) == ("GPU-a", "GPU-b")
    assert gpu_uuids({"hami.io/node-nvidia-register": '[{"id": "GPU-a"}]'}, 1) == ("GPU-a",)
    assert gpu_uuids({"corral.dev/gpu-uuids": "GPU-a"}, 2) == ("0", "1")  # does not match: by index


def _desired(**spec: object) -> DesiredPod:
    return DesiredPod(
        job_id="j-1",
        attempt=2,
        pod=0,
        node="dgx1",
        gpus=(4, 5),
        gpu_milli=1000,
        gpu_memory_gib=0,
        cpu=4,
        memory_gib=32,
        spec=JobSpec.model_validate({"name": "x", "command": "python train.py"} | spec),
        tenant="vision",
    )


def test_a_pod_runs_its_command_in_its_image_with_its_gpus_numbered_from_zero() -> None:
    manifest = pod_manifest(_desired(image="pytorch:24", workdir="/work", env={"A": "1"}), "corral", (), 80)
    container = manifest["spec"]["containers"][0]
    assert container["command"] == ["/bin/sh", "-c", "python train.py"]
    assert container["workingDir"] == "/work"
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2", "memory": "32768Mi"}
    assert container["resources"]["requests"] == {"cpu": "4", "memory": "32768Mi", "nvidia.com/gpu": "2"}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert (env["A"], env["CUDA_VISIBLE_DEVICES"], env["NVIDIA_VISIBLE_DEVICES"]) == ("1", "0,1", "4,5")
    assert manifest["metadata"]["name"] == "corral-j-1-a2-p0"
    assert manifest["metadata"]["labels"]["corral.dev/tenant"] == "vision"
    assert manifest["spec"]["terminationGracePeriodSeconds"] == 30


def test_a_member_s_pod_is_confined_whatever_its_image_or_spec_says() -> None:
    """A member's job is untrusted code: its Pod runs as a non-root uid without privilege escalation,
    capabilities or a ServiceAccount token, under the runtime's seccomp profile, with its memory capped
    at what was reserved; nothing of the server's own environment (its tokens, cloud keys) reaches it."""
    secrets = {"CORRAL_ADMIN_TOKEN": "admin-secret", "AWS_SECRET_ACCESS_KEY": "aws-secret"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in secrets.items():
            patch.setenv(name, value)
        grab = {"NVIDIA_VISIBLE_DEVICES": "all", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}
        desired = _desired(image="root-image:1", env={"A": "1"} | grab)
        manifest = pod_manifest(
            desired, "corral", ("GPU-a", "GPU-b", "GPU-c", "GPU-d", "GPU-e", "GPU-f"), 80, None, 4242
        )
    spec = manifest["spec"]
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 4242,
        "runAsGroup": 4242,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert not {"hostNetwork", "hostPID", "hostIPC", "volumes", "serviceAccountName", "nodeSelector"} & set(
        spec
    )
    [container] = spec["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["resources"]["limits"]["memory"] == container["resources"]["requests"]["memory"]
    assert "volumeMounts" not in container
    values = {e["value"] for e in container["env"]} | {e["name"] for e in container["env"]}
    assert not values & {*secrets, *secrets.values()}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert (env["NVIDIA_VISIBLE_DEVICES"], env["CUDA_VISIBLE_DEVICES"]) == ("GPU-e,GPU-f", "0,1")  # not all


@pytest.mark.parametrize(
    "field",
    [
        {"hostNetwork": True},
        {"host_network": True},
        {"privileged": True},
        {"securityContext": {"runAsUser": 0}},
        {"volumes": [{"hostPath": {"path": "/"}}]},
        {"node_selector": {"kubernetes.io/hostname": "x"}},
        {"annotations": {"hami.io/vgpu-devices-to-allocate": "GPU-x"}},
        {"service_account": "corral"},
        {"labels": {"app.kubernetes.io/managed-by": "someone"}},
    ],
)
def test_a_spec_cannot_ask_kubernetes_for_more(field: dict[str, object]) -> None:
    """What would loosen a Pod is no field of a job spec: naming one is a clear error (a 422 at submit)."""
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        JobSpec.model_validate({"name": "x", "command": "true", "image": "i"} | field)


def test_tenants_whose_long_names_share_a_beginning_never_share_a_namespace_or_label() -> None:
    """A tenant name takes up to 64 characters; a namespace or label value 63. Cut names keep a digest of
    the whole, so the second tenant's Pods neither land in the first's namespace nor pass its policy."""
    first, second = "a" * 60 + "-one", "a" * 60 + "-two"
    namespaces = {tenant_namespace("corral", tenant) for tenant in (first, second)}
    labels = {label_value(tenant) for tenant in (first, second)}
    assert len(namespaces) == 2 and len(labels) == 2
    assert all(len(name) <= 63 and name[0].isalnum() and name[-1].isalnum() for name in namespaces | labels)
    assert tenant_namespace("corral", "vision") == "corral-vision" and label_value("vision") == "vision"
    policies = {isolation_policy("corral", tenant)["metadata"]["name"] for tenant in (first, second)}
    assert len(policies) == 2


def test_a_job_without_an_image_cannot_become_a_pod() -> None:
    with pytest.raises(MissingImage, match="add `image:`"):
        pod_manifest(_desired(), "corral", (), 80)
    with pytest.raises(ValidationError, match="whitespace"):
        JobSpec(name="x", command="true", image="pytorch 24")


def _pod(phase: str, *states: V1ContainerState, reason: str | None = None, age: float = 0) -> V1Pod:
    statuses = [
        V1ContainerStatus(name="main", image="i", image_id="", ready=False, restart_count=0, state=state)
        for state in states
    ]
    created = NOW - dt.timedelta(seconds=age)
    return V1Pod(
        metadata=V1ObjectMeta(name="p", creation_timestamp=created),
        status=V1PodStatus(
            phase=phase, container_statuses=statuses, reason=reason, message="m" if reason else None
        ),
    )


def test_a_pod_s_status_becomes_an_exit_code_or_a_failure() -> None:
    now = NOW.timestamp()
    done = V1ContainerState(terminated=V1ContainerStateTerminated(exit_code=0))
    crashed = V1ContainerState(terminated=V1ContainerStateTerminated(exit_code=139))
    assert pod_outcome(_pod("Succeeded", done), now, 300).exit_code == 0  # type: ignore[union-attr]
    assert pod_outcome(_pod("Failed", crashed), now, 300).exit_code == 139  # type: ignore[union-attr]
    evicted = pod_outcome(_pod("Failed", reason="OutOfnvidia.com/gpu"), now, 300)
    assert evicted is not None and evicted.failure == "Kubernetes: OutOfnvidia.com/gpu: m"
    pulling = V1ContainerState(waiting=V1ContainerStateWaiting(reason="ErrImagePull", message="not found"))
    assert pod_outcome(_pod("Pending", pulling, age=10), now, 300) is None
    late = pod_outcome(_pod("Pending", pulling, age=301), now, 300)
    assert late is not None and late.failure == "Kubernetes: ErrImagePull: not found"
    creating = V1ContainerState(waiting=V1ContainerStateWaiting(reason="ContainerCreating"))
    assert pod_outcome(_pod("Pending", creating, age=301), now, 300) is None
    assert pod_outcome(_pod("Running"), now, 300) is None


def test_a_backend_takes_only_its_own_kind_s_settings() -> None:
    assert BackendSpec(kind="kubernetes", kubeconfig="~/.kube/config", namespace="ml").namespace == "ml"
    with pytest.raises(ValidationError, match="kubernetes backend's"):
        BackendSpec(kind="ray", address="head:6379", kubeconfig="x")
    with pytest.raises(ValidationError, match="takes none"):
        BackendSpec(kind="kubernetes", address="head:6379")
    with pytest.raises(ValidationError, match="namespace"):
        BackendSpec(kind="kubernetes", namespace="Not A Namespace")
