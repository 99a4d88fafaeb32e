"""What a ``model:`` service's replicas run: the built-in runtime (``corral.serving.runtime``) on a model
found at a path, or in a model registry behind ``ModelResolver``.

The registry lives elsewhere (``models:/NAME@ALIAS`` per tenant); a server configured without one refuses
such services with a 422 that says so.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import corral
from corral.spec.job import CODE_DIGEST
from corral.spec.service import ServiceSpec

CODE_DIGEST_PATTERN = re.compile(CODE_DIGEST)


@dataclass(frozen=True)
class ResolvedModel:
    version: str
    """What the alias points at now: a new version makes a new revision."""
    path: str
    """A folder or file the runtime loads (an ONNX file or an MLflow model folder), or the ``sha256:``
    digest of an archive of the model folder in the tenant's uploads: replicas then start in a copy of it
    (``code:``) and load it from there."""


class ModelResolver(Protocol):
    def resolve(self, tenant: str, reference: str) -> ResolvedModel:
        """``models:/NAME@ALIAS`` of ``tenant``, as it is now; raises ``LookupError`` with the reason if
        there is no such model or alias."""


class NoRegistry(LookupError):
    pass


def runtime_command(spec: ServiceSpec, model_path: str | None) -> list[str]:
    """The replica's argv: the built-in runtime on the model's path (``model_path``: where the revision's
    registry version is; else the spec's own path)."""
    assert spec.model is not None
    model = model_path if spec.from_registry and model_path is not None else spec.model
    if spec.from_registry and model_path is None:
        raise NoRegistry(f"model {spec.model}: no registry version was resolved for this revision")
    if shipped(model):
        model = "."  # the replica starts in a copy of the archive (its job's code)
    command = [runtime_python(), "-m", "corral.serving.runtime", "--model", model]
    return command + (["--tokenizer", spec.tokenizer] if spec.tokenizer else [])


def shipped(model_path: str | None) -> bool:
    """Whether a revision's model is an archive in the tenant's uploads (a registry version) rather than
    a path on the nodes."""
    return model_path is not None and CODE_DIGEST_PATTERN.fullmatch(model_path) is not None


def runtime_python() -> str:
    """This server's interpreter, when a pod's user may run it; else ``python3`` on the pod's PATH (an
    interpreter under a 0700 home, as pyenv's under /root, is out of the pod user's reach)."""
    executable = Path(sys.executable).resolve()
    reachable = all(os.stat(folder).st_mode & stat.S_IXOTH for folder in executable.parents)
    return str(executable) if reachable and os.stat(executable).st_mode & stat.S_IXOTH else "python3"


def runtime_environment() -> dict[str, str]:
    """What the runtime needs in its (scrubbed) environment: this server's corral and packages (onnxruntime,
    tokenizers, mlflow), and MLflow kept offline."""
    paths = [str(Path(corral.__file__).resolve().parents[1])]
    paths += dict.fromkeys(sysconfig.get_paths()[kind] for kind in ("purelib", "platlib"))
    return {"PYTHONPATH": os.pathsep.join(paths), "MLFLOW_DISABLE_TELEMETRY": "true"}
