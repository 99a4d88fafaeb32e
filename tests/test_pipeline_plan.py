"""The pure part of pipelines: the spec's checks, matrix fan-out and the DAG, substitution, the step's
job, cache keys and the reason a key missed."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from corral.errors import SpecError
from corral.pipelines.cache import cache_key, key_parts, miss_reason
from corral.pipelines.plan import ParamError, expand, resolve_params, step_job, used_params
from corral.spec.job import Mount
from corral.spec.pipeline import PipelineSpec, find_cycle, parse_pipeline_spec


def spec(**steps: dict[str, Any]) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {"type": "pipeline", "name": "p", "params": {"lr": 0.1, "epochs": 3}, "steps": steps}
    )


def test_a_matrix_step_fans_out_and_its_dependents_need_every_instance() -> None:
    pipeline = spec(
        prep={"command": "true", "outputs": {"data": "data"}},
        train={"needs": ["prep"], "matrix": {"lr": [0.1, 0.01], "depth": [2, 3]}, "command": "true"},
        pick={"needs": ["train"], "command": "true"},
    )
    instances = expand(pipeline)
    assert [i.name for i in instances] == [
        "prep",
        "train[lr=0.1,depth=2]",
        "train[lr=0.1,depth=3]",
        "train[lr=0.01,depth=2]",
        "train[lr=0.01,depth=3]",
        "pick",
    ]
    assert instances[1].needs == ("prep",) and instances[1].label == "lr=0.1,depth=2"
    assert instances[-1].needs == tuple(i.name for i in instances[1:5])


def test_steps_come_after_their_needs_whatever_the_file_s_order() -> None:
    pipeline = spec(last={"needs": ["first"], "command": "true"}, first={"command": "true"})
    assert [i.name for i in expand(pipeline)] == ["first", "last"]


def test_find_cycle_names_the_steps_along_it() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": [], "b": ["a"]}) == []


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ({"a": {"command": "true", "needs": ["a"]}}, "steps.a.needs: a cycle: a -> a"),
        ({"a": {"command": "true", "needs": ["b"]}}, "steps.a.needs: no step 'b'"),
        ({"a": {"command": "true", "matrix": {"x": []}}}, "matrix x: give at least one value"),
        ({"a": {"command": "true", "matrix": {"x": [1, "1"]}}}, "matrix x: values repeat"),
        ({"a": {"command": "echo ${{ matrix.x }}"}}, "${{ matrix.x }} names no matrix 'x'"),
        ({"a": {"command": "true", "outputs": {"o": "../etc"}}}, "must be a path inside the pod's folder"),
        (
            {"a": {"command": "true", "mounts": []}, "b": {"command": "true", "mounts": [{"digest": "x"}]}},
            "digest",
        ),
        (
            {"a": {"command": "true"}, "b": {"needs": ["a"], "inputs": {"d": "a.data"}, "command": "true"}},
            "steps.b.inputs.d: step a declares no output 'data' (its outputs: none)",
        ),
        ({"a": {"command": "true", "inputs": {"d": "nodot"}}}, "write STEP.OUTPUT"),
        ({"A": {"command": "true"}}, "steps.A: step names are lowercase"),
    ],
)
def test_a_bad_spec_is_refused_with_the_field(steps: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as refused:
        spec(**steps)
    assert expected in str(refused.value)


def test_a_yaml_error_names_the_file_and_line() -> None:
    text = "type: pipeline\nname: p\nsteps:\n  a:\n    command: echo\n    retries: many\n"
    with pytest.raises(SpecError) as refused:
        parse_pipeline_spec(text, "p.yaml")
    assert str(refused.value).startswith("p.yaml:6: steps.a.retries:")


def test_params_resolve_to_text_and_unknown_ones_are_refused() -> None:
    pipeline = spec(a={"command": "true"})
    assert resolve_params(pipeline, {"lr": "0.01"}) == {"lr": "0.01", "epochs": "3"}
    with pytest.raises(ParamError, match="params: nope not declared by pipeline p"):
        resolve_params(pipeline, {"nope": "1"})


def test_a_step_s_job_has_its_substitutions_inputs_and_pipeline_variables() -> None:
    pipeline = spec(
        train={
            "matrix": {"seed": [1, 2]},
            "command": ["python", "train.py", "--lr", "${{ params.lr }}", "--seed", "${{matrix.seed}}"],
            "env": {"EPOCHS": "${{ params.epochs }}", "CORRAL_PIPELINE_RUN": "mine"},
            "queue": "nlp",
            "retries": 2,
        }
    )
    instance = expand(pipeline)[1]
    mount = Mount(digest="sha256:" + "0" * 64, path="data")
    job = step_job(pipeline, instance, {"lr": "0.5", "epochs": "3"}, "p-1", [mount])
    assert job.name == "p-train-seed-2"
    assert job.command == ["python", "train.py", "--lr", "0.5", "--seed", "2"]
    assert job.env == {"EPOCHS": "3", "CORRAL_PIPELINE_RUN": "p-1", "CORRAL_PIPELINE_STEP": "train[seed=2]"}
    assert (job.queue, job.retries, job.mounts) == ("nlp", 2, [mount])


def test_a_step_without_a_queue_takes_the_pipeline_s() -> None:
    pipeline = PipelineSpec.model_validate(
        {"type": "pipeline", "name": "p", "queue": "vision", "steps": {"a": {"command": "true"}}}
    )
    assert step_job(pipeline, expand(pipeline)[0], {}, "p-1", []).queue == "vision"


def test_only_the_parameters_a_step_names_are_in_its_key() -> None:
    pipeline = spec(
        a={"command": "echo ${{ params.lr }}", "env": {"X": "${{ params.lr }}"}}, b={"command": "true"}
    )
    assert used_params(pipeline.steps["a"]) == ["lr"]
    assert used_params(pipeline.steps["b"]) == []


def parts_of(
    step: dict[str, Any], params: dict[str, str] | None = None, inputs: dict[str, str] | None = None
):
    return key_parts(spec(s=step).steps["s"], params or {}, {}, inputs or {})


def test_the_key_changes_with_what_changes_results_and_not_with_where_it_runs() -> None:
    base = {"command": "python train.py", "resources": {"gpus": 1, "cpu": 2}}
    key = cache_key(parts_of(base))
    assert cache_key(parts_of(base)) == key
    assert cache_key(parts_of(base | {"queue": "nlp", "priority": 5, "retries": 3})) == key
    assert cache_key(parts_of(base | {"resources": {"gpus": 1, "cpu": 8, "memory": "64GiB"}})) == key
    assert cache_key(parts_of(base | {"resources": {"gpus": "A100:1"}})) != key
    assert cache_key(parts_of(base | {"command": "python train.py --fast"})) != key
    assert cache_key(parts_of(base | {"env": {"SEED": "1"}})) != key
    assert cache_key(parts_of(base, params={"lr": "0.1"})) != key
    assert cache_key(parts_of(base, inputs={"data from prep": "sha256:1"})) != key


def test_a_miss_says_which_part_of_the_key_changed() -> None:
    step = {"command": "python train.py"}
    then = parts_of(step, {"lr": "0.1"}, {"data from prepare": "sha256:1"})
    assert miss_reason(then, None) == "cache miss: no previous run"
    now = parts_of(step, {"lr": "0.01"}, {"data from prepare": "sha256:1"})
    assert miss_reason(now, then, "p-1") == "cache miss: param lr changed 0.1 -> 0.01 (against run p-1)"
    now = parts_of(step, {"lr": "0.1"}, {"data from prepare": "sha256:2"})
    assert miss_reason(now, then, "p-1") == "cache miss: input data from prepare changed (against run p-1)"
    now = parts_of({"command": "python train.py --fast"}, {"lr": "0.1"}, {"data from prepare": "sha256:1"})
    assert miss_reason(now, then, "p-1") == "cache miss: command changed (against run p-1)"
    assert miss_reason(then, then, "p-1") == "cache miss: same key as run p-1, which did not succeed"
