"""The pipeline spec users write (``type: pipeline``): steps that are corral jobs, joined by ``needs``.

    type: pipeline
    name: iris
    params: {max_depth: 3}
    steps:
      prepare:
        command: python prepare.py
        workdir: .
        outputs: {data: data}                 # name: path in the pod's folder (a file or a folder)
      train:
        needs: [prepare]
        matrix: {c: [0.1, 1.0]}               # train[c=0.1], train[c=1.0]
        inputs: {data: prepare.data}          # or {from: prepare, output: data, path: raw}
        command: python train.py --c ${{ matrix.c }} --depth ${{ params.max_depth }}
        outputs: {model: model.pkl}

Each step is a job spec (``JobSpec``: queue, resources, pods, retries ... as for any job) plus ``needs``,
``inputs``, ``matrix`` and ``cache``. Everything that can be checked before a step runs is checked here,
so a spec that validates never fails later for a reason the file shows: unknown or cyclic needs, inputs
from steps not needed or outputs not declared, substitutions of parameters or matrix keys that do not
exist. The DAG and matrix logic itself is in ``corral.pipelines.plan``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from corral.limits import NAME_MAX
from corral.spec.job import OUTPUT_NAME, JobSpec, relative_path
from corral.spec.validation import read_text, validate_yaml

STEP_NAME = r"^[a-z0-9]([a-z0-9_-]{0,38}[a-z0-9])?$"
PIPELINE_NAME = r"^[a-z0-9]([a-z0-9._-]{0,38}[a-z0-9])?$"
MAX_STEPS = 100
"""Most steps after matrix fan-out: a pipeline is a workflow, not a sweep of thousands."""
MAX_MATRIX_VALUES = 32
SUBSTITUTION = re.compile(r"\$\{\{\s*(params|matrix)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
"""``${{ params.NAME }}`` and ``${{ matrix.KEY }}`` (GitHub Actions' syntax), in command, setup and env."""
ParamValue = str | int | float | bool


def param_text(value: ParamValue) -> str:
    """How a parameter or matrix value reads in a command: YAML's ``true``, not Python's ``True``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _input_shorthand(value: Any) -> Any:
    """``prepare.data`` is ``{from: prepare, output: data}``."""
    if isinstance(value, str):
        step, dot, output = value.partition(".")
        if not dot or not step or not output:
            raise ValueError(f"input {value!r}: write STEP.OUTPUT (e.g. prepare.data) or {{from:, output:}}")
        return {"from": step, "output": output}
    return value


class StepInput(BaseModel):
    """One output of a step this step needs, unpacked into its pods' folders before they start."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: str = Field(alias="from", description="The step that declares the output.")
    output: str = Field(pattern=OUTPUT_NAME, description="The name of that step's output.")
    path: str | None = Field(
        default=None,
        description="Folder (relative) it is unpacked into; default: the pod's folder itself, so the "
        "output's paths are the producer's (from a matrix step: a folder per instance, e.g. `c=0.1`).",
    )

    @field_validator("path")
    @classmethod
    def _inside_the_pod(cls, value: str | None) -> str | None:
        return None if value is None else relative_path(value, "path")


class StepSpec(JobSpec):
    """A job spec, and where the step sits in the pipeline. Its job is named ``<pipeline>-<step>``."""

    name: str | None = Field(default=None, description="Leave out: the step's key names it.")  # type: ignore[assignment]
    needs: list[str] = Field(default_factory=list, description="Steps that must succeed first.")
    inputs: dict[str, Annotated[StepInput, BeforeValidator(_input_shorthand)]] = Field(
        default_factory=dict, description="Outputs of needed steps, unpacked into this step's pods' folders."
    )
    matrix: dict[str, list[ParamValue]] = Field(
        default_factory=dict, description="Fan-out: one step instance per combination of values."
    )
    cache: bool = Field(default=True, description="false: always run, never reuse an earlier run's outputs.")

    @field_validator("matrix")
    @classmethod
    def _matrix_is_a_product(cls, value: dict[str, list[ParamValue]]) -> dict[str, list[ParamValue]]:
        for key, values in value.items():
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) is None:
                raise ValueError(f"matrix key {key!r}: letters, digits and _, not first a digit")
            if not values:
                raise ValueError(f"matrix {key}: give at least one value")
            if len(values) > MAX_MATRIX_VALUES:
                raise ValueError(f"matrix {key}: {len(values)} values; at most {MAX_MATRIX_VALUES}")
            texts = [param_text(v) for v in values]
            if len(set(texts)) != len(texts):
                raise ValueError(f"matrix {key}: values repeat ({', '.join(texts)})")
        return value

    @field_validator("inputs")
    @classmethod
    def _input_names(cls, value: dict[str, StepInput]) -> dict[str, StepInput]:
        for name in value:
            if re.fullmatch(OUTPUT_NAME, name) is None:
                raise ValueError(f"input name {name!r}: letters, digits, _ . - (at most 63)")
        return value

    @model_validator(mode="after")
    def _mounts_come_from_inputs(self) -> StepSpec:
        if self.mounts:
            raise ValueError("mounts: a step gets them from its inputs; declare inputs instead")
        return self

    def templates(self) -> list[str]:
        """Every text that may hold substitutions: the command, setup and env values."""
        command = [self.command] if isinstance(self.command, str) else list(self.command)
        return command + ([self.setup] if self.setup else []) + list(self.env.values())


class PipelineSpec(BaseModel):
    """A pipeline as a user writes it (YAML or JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["pipeline"] = Field(description="Always `pipeline`: what tells a pipeline from a job.")
    name: str = Field(pattern=PIPELINE_NAME, description="Lowercase name; runs of it share a cache history.")
    queue: str = Field(
        default="default", min_length=1, max_length=NAME_MAX, description="Steps' queue unless they say."
    )
    params: dict[str, ParamValue] = Field(
        default_factory=dict, description="Parameters and their defaults; `--param k=v` overrides."
    )
    steps: dict[str, StepSpec] = Field(min_length=1, description="The steps, by name.")

    @field_validator("params")
    @classmethod
    def _param_names(cls, value: dict[str, ParamValue]) -> dict[str, ParamValue]:
        for name in value:
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) is None:
                raise ValueError(f"param name {name!r}: letters, digits and _, not first a digit")
        return value

    @model_validator(mode="after")
    def _a_dag_of_known_steps(self) -> PipelineSpec:
        instances = 0
        for name, step in self.steps.items():
            where = f"steps.{name}"
            if re.fullmatch(STEP_NAME, name) is None:
                raise ValueError(f"{where}: step names are lowercase letters, digits, _ and - (at most 40)")
            for need in step.needs:
                if need not in self.steps:
                    raise ValueError(f"{where}.needs: no step {need!r}; steps: {', '.join(self.steps)}")
            for input_name, wanted in step.inputs.items():
                source = self.steps.get(wanted.from_)
                if source is None or wanted.from_ not in step.needs:
                    raise ValueError(
                        f"{where}.inputs.{input_name}: {wanted.from_!r} is not in this step's needs"
                    )
                if wanted.output not in source.outputs:
                    declared = ", ".join(source.outputs) or "none"
                    raise ValueError(
                        f"{where}.inputs.{input_name}: step {wanted.from_} declares no output "
                        f"{wanted.output!r} (its outputs: {declared})"
                    )
            for text in step.templates():
                for kind, key in SUBSTITUTION.findall(text):
                    known = self.params if kind == "params" else step.matrix
                    if key not in known:
                        raise ValueError(
                            f"{where}: ${{{{ {kind}.{key} }}}} names no {kind[:-1] if kind == 'params' else kind} "
                            f"{key!r}; {kind}: {', '.join(known) or 'none'}"
                        )
            count = 1
            for values in step.matrix.values():
                count *= len(values)
            instances += count
        if instances > MAX_STEPS:
            raise ValueError(f"steps: {instances} step instances after matrix fan-out; at most {MAX_STEPS}")
        cycle = find_cycle({name: step.needs for name, step in self.steps.items()})
        if cycle:
            raise ValueError(f"steps.{cycle[0]}.needs: a cycle: {' -> '.join(cycle)}")
        return self


def find_cycle(needs: dict[str, list[str]]) -> list[str]:
    """A cycle in the needs graph as the steps along it (first repeated last), or [] when it is a DAG."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str]:
        state[name] = 1
        path.append(name)
        for need in needs.get(name, []):
            if state.get(need) == 1:
                return path[path.index(need) :] + [need]
            if need not in state and (found := visit(need)):
                return found
        path.pop()
        state[name] = 2
        return []

    for name in needs:
        if name not in state and (found := visit(name)):
            return found
    return []


def parse_pipeline_spec(text: str, source: str = "<pipeline spec>") -> PipelineSpec:
    """A pipeline spec from YAML (or JSON) text; ``SpecError`` names the line, the field and the fix."""
    return validate_yaml(text, PipelineSpec, source=source, expected="a mapping with type, name and steps")


def load_pipeline_spec(path: str | Path) -> PipelineSpec:
    return parse_pipeline_spec(read_text(Path(path)), source=str(path))
