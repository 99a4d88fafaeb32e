"""The model registry per tenant: register a job's model, list and show models, move aliases, resolve.

Registered models are MLflow's, stored as ``<tenant>.<name>`` (``corral.mlops.names``) and shown as
``<name>``. A version's lineage is read from its run: the job, attempt, pipeline run and step, code
digest and the run's inputs (``mlflow.log_input``), so versions registered from inside a job with
MLflow's own API have it too. An alias is one row that MLflow updates in one transaction: moving
``champion`` from version 1 to 2 is seen whole or not at all, and ``alias_version`` is what a serving
replica polls to follow it.

``Registry.resolve(tenant, "models:/iris@champion")`` is the interface serving calls: the version number
and where to load the model from (a local folder on the server's machine when the artifacts are kept
there, and always the ``mlflow-artifacts:/`` URI a client downloads through the server).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from corral.errors import CorralError
from corral.mlops import names
from corral.mlops.stores import MlflowStores
from corral.mlops.tracking import JobTracking

LINEAGE_TAGS = {
    "corral.job_id": "job",
    "corral.attempt": "attempt",
    "corral.pipeline_run": "pipeline_run",
    "corral.pipeline_step": "pipeline_step",
    "corral.code": "code",
    "corral.command_sha256": "command_sha256",
    "corral.queue": "queue",
}
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class RegistryError(CorralError):
    """A model, version, alias or job that is not there (404), or a request that cannot be (422)."""

    def __init__(self, message: str, status: int = 404) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: int
    source: str
    run_id: str | None
    created_at: float
    aliases: list[str] = field(default_factory=list)
    lineage: dict[str, Any] = field(default_factory=dict)
    """job, attempt, pipeline_run, pipeline_step, code, command_sha256, queue (what the run's tags say),
    and inputs: the run's logged datasets (name and digest)."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    aliases: dict[str, int]
    versions: list[ModelVersionInfo]
    created_at: float
    updated_at: float

    @property
    def latest_version(self) -> int | None:
        return max((v.version for v in self.versions), default=None)


@dataclass(frozen=True)
class ResolvedModel:
    """Where to load a registered model version from."""

    name: str
    version: int
    alias: str | None
    uri: str
    """The artifacts' URI (``mlflow-artifacts:/...`` through the server, or the store's own)."""
    path: Path | None
    """The artifacts' folder on the server's machine, when they are kept there (None on S3)."""


class Registry:
    def __init__(self, stores: MlflowStores, tracking: JobTracking) -> None:
        self.stores = stores
        self.tracking = tracking

    def register(self, tenant: str, job_id: str, path: str, name: str) -> ModelVersionInfo:
        """A new version of ``name`` from artifact ``path`` of the job's run: a model the job logged
        with ``log_model(name=path)``, or a folder it logged with ``log_artifacts(..., path)``."""
        from mlflow.exceptions import MlflowException

        if not NAME.match(name):
            raise RegistryError(f"model name {name!r}: letters, digits, . _ -, at most 128", 422)
        path = path.strip("/")
        if ".." in path.split("/"):
            raise RegistryError(f"artifact path {path!r}: a path inside the job's run, without '..'", 422)
        row = self.tracking.job_run(job_id)
        if row is None or row.tenant != tenant:
            raise RegistryError(f"job {job_id!r} has no MLflow run (it never started with tracking)")
        run = self.stores.tracking.get_run(row.run_id)
        source, model_id = self._source(run, path)
        stored = names.stored_model(tenant, name)
        try:
            self.stores.registry.create_registered_model(stored)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = self.stores.registry.create_model_version(
            stored, source, run_id=row.run_id, model_id=model_id
        )
        return self._version(tenant, version)

    def _source(self, run: Any, path: str) -> tuple[str, str | None]:
        for output in run.outputs.model_outputs if run.outputs else ():
            model = self.stores.tracking.get_logged_model(output.model_id)
            if model.name == path:
                return f"models:/{model.model_id}", model.model_id
        uri = f"{run.info.artifact_uri.rstrip('/')}/{path}"
        local = self.local_path(uri)
        if local is not None and not local.exists():
            raise RegistryError(
                f"run {run.info.run_id} has no model or artifact {path!r} (log it with "
                f"mlflow.<flavor>.log_model(..., name={path!r}) or mlflow.log_artifacts)",
                422,
            )
        return uri, None

    def models(self, tenant: str) -> list[ModelInfo]:
        found = self.stores.registry.search_registered_models(
            filter_string=names.tenant_filter(tenant, names.MODEL_SEPARATOR, None), max_results=1000
        )
        return [self.show(tenant, names.shown(model.name, tenant, names.MODEL_SEPARATOR)) for model in found]

    def show(self, tenant: str, name: str) -> ModelInfo:
        stored = names.stored_model(tenant, name)
        model = self._model(stored, name)
        found = self.stores.registry.search_model_versions(
            filter_string=f"name = '{stored}'", max_results=1000
        )
        aliases = {alias: int(version) for alias, version in dict(model.aliases or {}).items()}
        versions = [
            replace(info, aliases=sorted(a for a, v in aliases.items() if v == info.version))
            for info in sorted((self._version(tenant, v) for v in found), key=lambda v: v.version)
        ]
        return ModelInfo(
            name=name,
            aliases=aliases,
            versions=versions,
            created_at=model.creation_timestamp / 1000,
            updated_at=model.last_updated_timestamp / 1000,
        )

    def set_alias(self, tenant: str, name: str, alias: str, version: int) -> ModelInfo:
        """Point ``alias`` at ``version`` (one transaction in MLflow's store); returns the model."""
        stored = names.stored_model(tenant, name)
        self._model(stored, name)
        self._model_version(stored, name, version)
        from mlflow.exceptions import MlflowException

        try:
            self.stores.registry.set_registered_model_alias(stored, alias, str(version))
        except MlflowException as error:
            raise RegistryError(f"alias {alias!r}: {error.message}", 422) from None
        return self.show(tenant, name)

    def alias_version(self, tenant: str, name: str, alias: str) -> int | None:
        """The version ``alias`` points at now (None: no such alias): what serving polls."""
        from mlflow.exceptions import MlflowException

        try:
            version = self.stores.registry.get_model_version_by_alias(names.stored_model(tenant, name), alias)
        except MlflowException:
            return None
        return int(version.version)

    def resolve(self, tenant: str, uri: str) -> ResolvedModel:
        """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` of ``tenant``: its version and artifacts."""
        from mlflow.exceptions import MlflowException

        match = MODEL_URI.match(uri)
        if match is None:
            raise RegistryError(f"{uri!r} is not models:/NAME@ALIAS or models:/NAME/VERSION", 422)
        name, alias = match["name"], match["alias"]
        stored = names.stored_model(tenant, name)
        if alias is not None:
            try:
                version = self.stores.registry.get_model_version_by_alias(stored, alias)
            except MlflowException:
                raise RegistryError(f"model {name!r} has no alias {alias!r}") from None
        else:
            version = self._model_version(stored, name, int(match["version"]))
        artifacts = self.artifact_uri(version.source)
        return ResolvedModel(name, int(version.version), alias, artifacts, self.local_path(artifacts))

    def artifact_uri(self, source: str) -> str:
        """A version's source as the URI of its artifacts (a logged model's or a run's folder)."""
        if source.startswith("models:/m-"):
            return str(
                self.stores.tracking.get_logged_model(source.removeprefix("models:/")).artifact_location
            )
        if source.startswith("runs:/"):
            run_id, _, path = source.removeprefix("runs:/").partition("/")
            return f"{self.stores.tracking.get_run(run_id).info.artifact_uri.rstrip('/')}/{path}"
        return source

    def local_path(self, uri: str) -> Path | None:
        """The folder of an ``mlflow-artifacts:/`` URI in the server's artifact store; refused (422) when it
        would lie outside it: what this returns is packed and shipped to the tenant's replicas, so a
        ``..`` here would hand them the server's data dir (its token, its database)."""
        root = self.stores.location.local_artifacts
        if root is None or not uri.startswith("mlflow-artifacts:/"):
            return None
        relative = uri.removeprefix("mlflow-artifacts:/").lstrip("/")
        path = root / relative
        if ".." in relative.split("/") or not path.resolve().is_relative_to(root.resolve()):
            raise RegistryError(f"{uri!r} is outside the server's artifact store", 422)
        return path

    def _model(self, stored: str, name: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.stores.registry.get_registered_model(stored)
        except MlflowException:
            raise RegistryError(f"no model {name!r}") from None

    def _model_version(self, stored: str, name: str, version: int) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.stores.registry.get_model_version(stored, str(version))
        except MlflowException:
            raise RegistryError(f"model {name!r} has no version {version}") from None

    def _version(self, tenant: str, version: Any) -> ModelVersionInfo:
        return ModelVersionInfo(
            name=names.shown(version.name, tenant, names.MODEL_SEPARATOR),
            version=int(version.version),
            source=version.source,
            run_id=version.run_id or None,
            created_at=version.creation_timestamp / 1000,
            aliases=sorted(version.aliases or ()),
            lineage=self._lineage(version.run_id),
        )

    def _lineage(self, run_id: str | None) -> dict[str, Any]:
        if not run_id:
            return {}
        try:
            run = self.stores.tracking.get_run(run_id)
        except Exception:
            return {}
        tags = run.data.tags
        lineage: dict[str, Any] = {key: tags[tag] for tag, key in LINEAGE_TAGS.items() if tag in tags}
        lineage["run_id"] = run_id
        inputs = run.inputs.dataset_inputs if run.inputs else []
        lineage["inputs"] = [
            {
                "name": item.dataset.name,
                "digest": item.dataset.digest,
                "tags": {t.key: t.value for t in item.tags},
            }
            for item in inputs
        ]
        return lineage
