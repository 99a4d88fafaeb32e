"""From a pipeline spec to its step instances and their jobs: matrix fan-out, the DAG, substitution.

Pure: no store, no clock. The controller (``corral.pipelines.controller``) decides *when* an instance's
job is submitted; this says *what* it is. A matrix step ``train`` with ``{c: [0.1, 1]}`` becomes
``train[c=0.1]`` and ``train[c=1]``; a step that needs ``train`` needs every instance of it.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from corral.errors import CorralError
from corral.spec.job import JobSpec, Mount
from corral.spec.pipeline import SUBSTITUTION, ParamValue, PipelineSpec, StepSpec, param_text

RUN_VARIABLE = "CORRAL_PIPELINE_RUN"
STEP_VARIABLE = "CORRAL_PIPELINE_STEP"
"""Set on every step's job (over any value the spec gives): the run and step its pods belong to, which
tracking tags runs with."""


class ParamError(CorralError):
    """A ``--param`` the pipeline does not declare, or one given twice."""


@dataclass(frozen=True)
class StepInstance:
    name: str
    """``train`` or, for a matrix step, ``train[c=0.1]`` (keys in the spec's order)."""
    step: str
    """The step's key in the spec."""
    matrix: tuple[tuple[str, str], ...]
    needs: tuple[str, ...]
    """Instance names this one waits for."""

    @property
    def label(self) -> str:
        """``c=0.1`` for a matrix instance (the folder its outputs go to in a step that needs all of
        them), empty otherwise."""
        return ",".join(f"{key}={value}" for key, value in self.matrix)


def resolve_params(spec: PipelineSpec, overrides: dict[str, str]) -> dict[str, str]:
    """The run's parameters as text: the spec's defaults, with ``overrides`` in their place."""
    unknown = sorted(set(overrides) - set(spec.params))
    if unknown:
        declared = ", ".join(spec.params) or "none"
        raise ParamError(
            f"params: {', '.join(unknown)} not declared by pipeline {spec.name} (it has: {declared})"
        )
    return {name: overrides.get(name, param_text(value)) for name, value in spec.params.items()}


def expand(spec: PipelineSpec) -> list[StepInstance]:
    """Every step instance, each after the instances it needs (the spec's order otherwise)."""
    by_step: dict[str, list[StepInstance]] = {}
    for name in _topological(spec):
        step = spec.steps[name]
        needs = tuple(instance.name for need in step.needs for instance in by_step[need])
        by_step[name] = [
            StepInstance(_instance_name(name, combination), name, combination, needs)
            for combination in _combinations(step.matrix)
        ]
    return [instance for name in _topological(spec) for instance in by_step[name]]


def used_params(step: StepSpec) -> list[str]:
    """The parameters the step's command, setup and env name: the only ones its cache key holds, so a
    change to another parameter does not rerun it."""
    found = [key for text in step.templates() for kind, key in SUBSTITUTION.findall(text) if kind == "params"]
    return sorted(set(found))


def substitute(text: str, params: dict[str, str], matrix: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        kind, key = match.group(1), match.group(2)
        return (params if kind == "params" else matrix)[key]

    return SUBSTITUTION.sub(value, text)


def step_job(
    spec: PipelineSpec,
    instance: StepInstance,
    params: dict[str, str],
    run_id: str,
    mounts: list[Mount],
) -> JobSpec:
    """The job that runs ``instance``: the step's job fields with substitutions made, named
    ``<pipeline>-<instance>``, in the pipeline's queue unless the step names one, with the inputs as
    mounts and the run and step in its environment."""
    step = spec.steps[instance.step]
    matrix = dict(instance.matrix)
    fields = step.model_dump(exclude={"needs", "inputs", "matrix", "cache", "name", "queue"})
    command = step.command
    fields["command"] = (
        substitute(command, params, matrix)
        if isinstance(command, str)
        else [substitute(part, params, matrix) for part in command]
    )
    if step.setup is not None:
        fields["setup"] = substitute(step.setup, params, matrix)
    fields["env"] = {name: substitute(text, params, matrix) for name, text in step.env.items()}
    fields["env"] |= {RUN_VARIABLE: run_id, STEP_VARIABLE: instance.name}
    fields["name"] = job_name(spec.name, instance.name)
    fields["queue"] = step.queue if "queue" in step.model_fields_set else spec.queue
    fields["mounts"] = [mount.model_dump() for mount in mounts]
    return JobSpec.model_validate(fields)


def job_name(pipeline: str, instance: str) -> str:
    """A job name (lowercase letters, digits, . _ -, at most 64) for a step instance."""
    text = re.sub(r"[^a-z0-9._-]+", "-", f"{pipeline}-{instance}".lower()).strip("-._")
    return text[:64].rstrip("-._") or "step"


def _instance_name(step: str, combination: tuple[tuple[str, str], ...]) -> str:
    if not combination:
        return step
    return f"{step}[{','.join(f'{key}={value}' for key, value in combination)}]"


def _combinations(matrix: dict[str, list[ParamValue]]) -> list[tuple[tuple[str, str], ...]]:
    keys = list(matrix)
    values = [[param_text(v) for v in matrix[key]] for key in keys]
    return [tuple(zip(keys, chosen, strict=True)) for chosen in itertools.product(*values)]


def _topological(spec: PipelineSpec) -> list[str]:
    """Step names, each after its needs, otherwise in the spec's order (the spec has no cycle)."""
    done: list[str] = []
    placed: set[str] = set()

    def place(name: str) -> None:
        if name in placed:
            return
        for need in spec.steps[name].needs:
            place(need)
        placed.add(name)
        done.append(name)

    for name in spec.steps:
        place(name)
    return done
