"""Cache keys for pipeline steps, as Kubeflow Pipelines v2 computes them, and why a key missed.

A step instance's key is the SHA-256 of its *parts*: what it runs (command, setup and env as written,
before substitution; image; uploaded code's digest), the resources that change what it computes (GPUs:
count, share and models; pods), the outputs it declares, the parameters its command, setup and env name
(resolved), its matrix values, and the digest of every input artifact. Queue, priority, CPU, memory,
time limits and retries are left out: they change where and when a step runs, not what it makes. Only
the parameters a step names are in its key, so changing another one reruns only the steps downstream of
it (through their inputs' digests).

The parts are kept beside the key, so a miss says which ones differ from the nearest earlier run of the
same step: ``param lr changed 0.1 -> 0.01``, ``input data from prepare changed``, ``command changed``.
Pure: no store.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from corral.spec.pipeline import StepSpec

KeyParts = dict[str, Any]
"""``{"params": {...}, "matrix": {...}, "inputs": {label: digest}, "command": ..., ...}`` as JSON."""

DESCRIBED = ("code", "command", "setup", "env", "image", "resources", "pods", "outputs")
"""The spec parts named when they changed, after parameters, matrix values and inputs."""


def key_parts(
    step: StepSpec, params: dict[str, str], matrix: dict[str, str], inputs: dict[str, str]
) -> KeyParts:
    """The parts of ``step``'s key: ``params`` already narrowed to those it names, ``inputs`` by label
    (``data from prepare``) to their digests."""
    gpus = step.resources.gpus
    return {
        "params": dict(sorted(params.items())),
        "matrix": dict(matrix),
        "inputs": dict(sorted(inputs.items())),
        "code": step.code,
        "command": step.command if isinstance(step.command, str) else list(step.command),
        "setup": step.setup,
        "env": dict(sorted(step.env.items())),
        "image": step.image,
        "resources": {"gpus": gpus.count, "gpu_milli": gpus.milli, "gpu_models": list(gpus.models or [])},
        "pods": step.pods,
        "outputs": dict(sorted(step.outputs.items())),
    }


def cache_key(parts: KeyParts) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def miss_reason(parts: KeyParts, previous: KeyParts | None, previous_run: str | None = None) -> str:
    """Why ``parts`` missed the cache, against the nearest earlier run of the same step (``previous``,
    from run ``previous_run``): each part that differs, parameters first."""
    if previous is None:
        return "cache miss: no previous run"
    changes = _changes("param", parts.get("params", {}), previous.get("params", {}))
    changes += _changes("matrix", parts.get("matrix", {}), previous.get("matrix", {}))
    now_inputs, then_inputs = parts.get("inputs", {}), previous.get("inputs", {})
    for label in sorted(now_inputs.keys() | then_inputs.keys()):
        if label not in then_inputs:
            changes.append(f"input {label} is new")
        elif label not in now_inputs:
            changes.append(f"input {label} is gone")
        elif now_inputs[label] != then_inputs[label]:
            changes.append(f"input {label} changed")
    changes += [f"{part} changed" for part in DESCRIBED if parts.get(part) != previous.get(part)]
    against = f" (against run {previous_run})" if previous_run else ""
    if not changes:
        return f"cache miss: same key as run {previous_run}, which did not succeed"
    return "cache miss: " + ", ".join(changes) + against


def _changes(kind: str, now: dict[str, str], then: dict[str, str]) -> list[str]:
    found = []
    for name in sorted(now.keys() | then.keys()):
        if name not in then:
            found.append(f"{kind} {name} is new ({now[name]})")
        elif name not in now:
            found.append(f"{kind} {name} is no longer used")
        elif now[name] != then[name]:
            found.append(f"{kind} {name} changed {then[name]} -> {now[name]}")
    return found
