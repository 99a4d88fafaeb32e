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
TENANT_NAMESPACES = REPO / "deploy" / "kubernetes" / "tenant-namespaces.yaml"


def grant_corral_roles(server: LocalApiServer, user: str, *files: Path) -> None:
    """Apply ``files`` (default deploy/kubernetes/rbac.yaml) as shipped, except that each binding names
    ``user`` (a static token's user) instead of the ServiceAccount, so the tests run corral with exactly
    those rights. Objects another user's grant made already are kept; bindings are per user."""
    api = config.new_client_from_config(str(server.kubeconfig("admin")))
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    create = {
        "Namespace": lambda namespace, body: core.create_namespace(body),
        "ServiceAccount": core.create_namespaced_service_account,
        "ClusterRole": lambda namespace, body: rbac.create_cluster_role(body),
        "ClusterRoleBinding": lambda namespace, body: rbac.create_cluster_role_binding(body),
        "Role": rbac.create_namespaced_role,
        "RoleBinding": rbac.create_namespaced_role_binding,
    }
    for path in files or (RBAC,):
        for document in yaml.safe_load_all(path.read_text()):
            kind = document["kind"]
            assert kind in create, f"{path.name} holds a {kind}, which this test does not apply"
            if document.get("subjects"):
                document["subjects"] = [
                    {"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}
                ]
                document["metadata"]["name"] += f"-{user}"
            try:
                create[kind](document["metadata"].get("namespace"), document)
            except client.ApiException as error:
                if error.status != CONFLICT:
                    raise


CONFLICT = 409
