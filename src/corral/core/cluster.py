"""Cluster specs: clusters hold pools, pools hold identical nodes built from one template.

These are the static, declared facts (the scenario format's cluster file); the live state of each node,
what is allocated and whether it is up, lives in ``corral.core.nodes``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class NodeTemplate(BaseModel):
    """The shape of every node in a pool."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    cpu: float = Field(gt=0, description="CPU cores.")
    memory_gib: float = Field(gt=0, description="Main memory, GiB.")
    gpus: int = Field(default=0, ge=0, le=64, description="GPUs per node.")
    gpu_model: str | None = Field(default=None, description="GPU model, e.g. A100-80GB.")
    gpu_memory_gib: float = Field(default=0.0, ge=0, description="Memory of each GPU, GiB.")
    nvlink_groups: list[list[int]] | None = Field(
        default=None, description="GPUs in one group are NVLink-connected, e.g. [[0,1,2,3],[4,5,6,7]]."
    )

    @model_validator(mode="after")
    def _check_groups(self) -> NodeTemplate:
        if self.gpus and not self.gpu_model:
            raise ValueError("a node with GPUs needs gpu_model (e.g. gpu_model: A100-80GB)")
        seen: set[int] = set()
        for group in self.nvlink_groups or []:
            for index in group:
                if not 0 <= index < self.gpus:
                    raise ValueError(
                        f"nvlink_groups names GPU {index}, but the node has GPUs 0..{self.gpus - 1}"
                    )
                if index in seen:
                    raise ValueError(f"nvlink_groups lists GPU {index} twice; each GPU belongs to one group")
                seen.add(index)
        return self

    def nvlink_group_of(self) -> list[int]:
        """Group number of each GPU; a GPU in no declared group is a group of its own."""
        groups = list(range(self.gpus))
        next_group = self.gpus
        for group in self.nvlink_groups or []:
            for index in group:
                groups[index] = next_group
            next_group += 1
        return groups


MAX_POOL_NODES = 100_000
"""The most nodes a pool may declare (``count``, ``max_count``): far above any real pool, and low enough
that a typo of a few zeros is an error at once instead of a replay that builds 10^8 nodes and hangs."""


class PoolSpec(BaseModel):
    """A set of identical nodes with one quota flavor, tier and price; elastic when ``max_count > count``."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    name: str = Field(min_length=1, description="Unique within the cluster file; nodes are named {pool}-{i}.")
    flavor: str = Field(min_length=1, description="Quota flavor the pool's GPUs count against.")
    tier: str = Field(default="silver", description="bronze | silver | gold (free text).")
    gpu_hour_cost: float = Field(default=0.0, ge=0, description="USD per GPU-hour while allocated.")
    count: int = Field(default=0, ge=0, le=MAX_POOL_NODES, description="Nodes present at time 0.")
    max_count: int | None = Field(
        default=None, ge=0, le=MAX_POOL_NODES, description="An elastic pool may grow to this."
    )
    provision_seconds: float = Field(default=0.0, ge=0, description="Delay before a new node is ready.")
    node: NodeTemplate

    @model_validator(mode="after")
    def _check_counts(self) -> PoolSpec:
        if self.max_count is not None and self.max_count < self.count:
            raise ValueError(f"max_count ({self.max_count}) must be >= count ({self.count})")
        return self

    @property
    def capacity_count(self) -> int:
        """The most nodes this pool can ever have."""
        return self.max_count if self.max_count is not None else self.count

    @property
    def elastic(self) -> bool:
        return self.capacity_count > self.count


class BackendSpec(BaseModel):
    """What runs a cluster's pods: ``local`` (the server's own processes, or ``corral agent``s), ``ray``
    (a Ray cluster at ``address``) or ``kubernetes`` (the API server a kubeconfig names); the nodes of a
    Ray or Kubernetes cluster become the cluster's nodes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["local", "ray", "kubernetes"] = "local"
    address: str | None = Field(default=None, description="Ray: the cluster's GCS address, host:port.")
    kubeconfig: str | None = Field(
        default=None,
        description="Kubernetes: the kubeconfig file (absent: $KUBECONFIG, ~/.kube/config, in-cluster).",
    )
    context: str | None = Field(
        default=None, description="Kubernetes: the kubeconfig context (absent: its current one)."
    )
    namespace: str = Field(
        default="corral",
        pattern=r"^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$",
        description="Kubernetes: the namespace of corral's Pods, or the prefix of the tenants' namespaces.",
    )
    tenant_namespaces: bool = Field(
        default=False,
        description="Kubernetes: each tenant's Pods in namespace <namespace>-<tenant>, created if missing.",
    )
    node_selector: str | None = Field(
        default=None, description="Kubernetes: a label selector for the Nodes corral schedules (absent: all)."
    )
    node_timeout: float = Field(
        default=40.0,
        gt=0,
        description="Kubernetes: seconds without a Lease or Ready heartbeat before a Node is down.",
    )
    pending_timeout: float = Field(
        default=300.0,
        gt=0,
        description="Kubernetes: seconds a Pod may wait on an image pull or admission error before its attempt fails.",
    )
    run_as_user: int = Field(
        default=1000,
        ge=1,
        le=2**31 - 1,
        description="Kubernetes: the uid (and gid) a job's containers run as, whatever their image says; never 0.",
    )

    @model_validator(mode="after")
    def _each_kind_has_what_it_needs(self) -> BackendSpec:
        if self.kind == "ray" and not self.address:
            raise ValueError(
                "a ray backend needs the Ray cluster's address, e.g. {kind: ray, address: head:6379}"
            )
        if self.kind != "ray" and self.address:
            raise ValueError(f"address is a Ray backend's; a {self.kind} backend takes none")
        if self.kind != "kubernetes" and (self.kubeconfig or self.context or self.node_selector):
            raise ValueError(
                f"kubeconfig, context and node_selector are a kubernetes backend's, not {self.kind}'s"
            )
        return self


class ObjectStoreSpec(BaseModel):
    """A cluster's S3-compatible object store, where artifacts are copied to (``corral artifacts push``).

    Credentials are read from the environment variables named here when a copy is made, so the cluster
    file never holds a secret and a key can be rotated without editing it."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    bucket: str = Field(min_length=1, description="The bucket artifacts go to; it must exist.")
    endpoint: str | None = Field(
        default=None, description="The S3 API's URL, e.g. http://minio:9000 (absent: AWS S3)."
    )
    region: str = Field(default="us-east-1", description="The bucket's region.")
    access_key_variable: str = Field(
        default="AWS_ACCESS_KEY_ID", min_length=1, description="Environment variable with the access key id."
    )
    secret_key_variable: str = Field(
        default="AWS_SECRET_ACCESS_KEY",
        min_length=1,
        description="Environment variable with the secret access key.",
    )


class ClusterSpec(BaseModel):
    """A cluster; only ``private`` clusters may run sensitive or non-burstable work."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    name: str = Field(min_length=1)
    private: bool = Field(default=True, description="Owned hardware; the only place sensitive work runs.")
    pools: list[PoolSpec] = Field(default_factory=list)
    backend: BackendSpec = Field(
        default_factory=BackendSpec, description="What runs its pods (corral extension)."
    )
    object_store: ObjectStoreSpec | None = Field(
        default=None, description="Where artifacts may be copied to (corral extension)."
    )
