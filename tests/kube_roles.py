"""What the Kubernetes backend's tests share: the API server's archive, and corral's roles applied.

The stand-in kubelet itself is ``corral.backends.kube.stand_in`` (the benchmark uses it too). corral only
ever uses the token bound to the roles of ``deploy/kubernetes/rbac.yaml``.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from kubernetes import client, config

from corral.backends.kube.local_apiserver import CACHE, LocalApiServer

REPO = Path(__file__).resolve().parents[1]
SHARED_ARCHIVE = REPO.parent / "shared" / "k8s" / "kube-apiserver.xz"
BUILT_ARCHIVE = CACHE / "kube-apiserver.xz"
"""Where .ci/run puts the API server it built when ../shared/k8s has only build.sh."""
ARCHIVE = SHARED_ARCHIVE if SHARED_ARCHIVE.exists() else BUILT_ARCHIVE
RBAC = REPO / "deploy" / "kubernetes" / "rbac.yaml"


def grant_corral_roles(server: LocalApiServer, user: str) -> None:
    """Apply deploy/kubernetes/rbac.yaml as shipped, its bindings naming ``user`` (a static token's
    user) instead of the ServiceAccount, so the tests run corral with exactly those rights."""
    api = config.new_client_from_config(str(server.kubeconfig("admin")))
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    for document in yaml.safe_load_all(RBAC.read_text()):
        kind = document["kind"]
        if document.get("subjects"):
            document["subjects"] = [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]
        namespace = document["metadata"].get("namespace")
        if kind == "Namespace":
            core.create_namespace(document)
        elif kind == "ServiceAccount":
            core.create_namespaced_service_account(namespace, document)
        elif kind == "ClusterRole":
            rbac.create_cluster_role(document)
        elif kind == "ClusterRoleBinding":
            rbac.create_cluster_role_binding(document)
        elif kind == "Role":
            rbac.create_namespaced_role(namespace, document)
        elif kind == "RoleBinding":
            rbac.create_namespaced_role_binding(namespace, document)
        else:
            raise AssertionError(f"rbac.yaml holds a {kind}, which this test does not apply")
