"""Pipeline runs in the store, on SQLite and PostgreSQL: conditional step writes, cache hits only within a
tenant and only of steps that ran their own job, the nearest earlier run of a step, jobs' outputs."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from corral.store.database import open_store
from corral.store.pipelines import PipelineStore


@pytest.fixture
def pipelines(database_url: str) -> Iterator[PipelineStore]:
    ticks = itertools.count()
    engine = open_store(database_url)
    yield PipelineStore(engine, clock=lambda: float(next(ticks)))
    engine.dispose()


def succeeded(store: PipelineStore, tenant: str, key: str, name: str = "train", **values: object) -> str:
    run = store.create("p", tenant, {}, {}, [(name, "train")])
    fields = {"status": "succeeded", "cache_key": key, "key_parts": {"params": {"lr": "0.1"}}} | values
    assert store.update_step(run.id, name, "waiting", **fields)
    return run.id


def test_a_step_changes_only_from_the_status_its_writer_read(pipelines: PipelineStore) -> None:
    run = pipelines.create(
        "p", "a", {"type": "pipeline"}, {"lr": "0.1"}, [("prep", "prep"), ("train", "train")]
    )
    assert [(s.name, s.status, s.position) for s in pipelines.steps(run.id)] == [
        ("prep", "waiting", 0),
        ("train", "waiting", 1),
    ]
    assert pipelines.update_step(run.id, "prep", "waiting", status="cancelled")
    assert not pipelines.update_step(run.id, "prep", "waiting", status="submitted", job_id="j-1")
    assert pipelines.steps(run.id)[0].job_id is None
    assert pipelines.end(run.id, "cancelled", "by me") and not pipelines.end(run.id, "failed", "late")
    assert (pipelines.get(run.id).status, pipelines.get(run.id).reason) == ("cancelled", "by me")


def test_cache_hits_stay_in_their_tenant_and_name_the_run_that_made_the_outputs(
    pipelines: PipelineStore,
) -> None:
    made = succeeded(pipelines, "a", "k1", job_id="j-1", outputs={"model": "sha256:1"})
    succeeded(pipelines, "a", "k1", job_id="j-1", cached=True)  # a hit of it: not what later hits name
    assert pipelines.cache_hit("b", "k1") is None
    assert pipelines.cache_hit("a", "k2") is None
    hit = pipelines.cache_hit("a", "k1")
    assert hit is not None and (hit.run_id, hit.outputs) == (made, {"model": "sha256:1"})


def test_the_previous_run_of_a_step_prefers_the_same_matrix_instance(pipelines: PipelineStore) -> None:
    same = succeeded(pipelines, "a", "k1", name="train[c=1]")
    other = succeeded(pipelines, "a", "k2", name="train[c=2]")
    now = pipelines.create("p", "a", {}, {}, [("train[c=1]", "train")]).id
    assert pipelines.previous("a", "p", now, "train", "train[c=1]").run_id == same
    assert pipelines.previous("a", "p", now, "train", "train[c=3]").run_id == other  # the newest instance
    assert pipelines.previous("b", "p", now, "train", "train[c=1]") is None
    assert pipelines.previous("a", "q", now, "train", "train[c=1]") is None


def test_a_job_s_later_attempt_replaces_its_output(pipelines: PipelineStore) -> None:
    pipelines.record_output("j-1", "model", "sha256:1", 10)
    pipelines.record_output("j-1", "model", "sha256:2", 12)
    pipelines.record_output("j-1", "data", "sha256:3", 5)
    assert pipelines.outputs("j-1") == {"model": "sha256:2", "data": "sha256:3"}
    assert pipelines.outputs("j-2") == {}
