"""``models:/NAME@ALIAS`` through a ``ModelResolver``: each revision keeps the version and path its alias
named when it was made, and a moved alias makes a new revision (a canary) whose replicas load the new
version while the old revision's keep theirs."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from corral.serving.controller import ServiceController
from corral.serving.gateway import Gateway
from corral.serving.models import ResolvedModel
from corral.spec.service import ServiceSpec
from corral.store.database import open_store
from corral.store.jobs import JobStore
from corral.store.services import ServiceStore


class Registry:
    """A model registry whose alias the test moves."""

    def __init__(self) -> None:
        self.version = "1"

    def resolve(self, tenant: str, reference: str) -> ResolvedModel:
        if reference != "models:/embed@prod" or tenant != "vision":
            raise LookupError(f"no model {reference} in tenant {tenant}")
        return ResolvedModel(self.version, f"/registry/embed/{self.version}")


def test_a_moved_alias_makes_a_revision_that_loads_the_new_version(tmp_path: Path) -> None:
    engine = open_store(f"sqlite:///{tmp_path / 'corral.db'}")
    jobs, services, registry = JobStore(engine), ServiceStore(engine), Registry()
    controller = ServiceController(services, jobs, Gateway(CollectorRegistry()), lambda: None, registry)
    spec = ServiceSpec(name="embed", model="models:/embed@prod")
    first = services.apply("vision", spec, ("1", "/registry/embed/1")).service
    assert controller._follow_aliases([first]) == [first]  # the alias has not moved: nothing new

    registry.version = "2"
    (moved,) = controller._follow_aliases([first])
    assert (moved.stable, moved.canary) == (1, 2)
    assert [(r.number, r.model_version, r.model_path) for r in moved.revisions] == [
        (1, "1", "/registry/embed/1"),
        (2, "2", "/registry/embed/2"),
    ]
    for number in (1, 2):
        controller._submit(moved, number)
    commands = {
        jobs.get(r.job_id).spec["name"].split("-")[1]: jobs.get(r.job_id).spec["command"]
        for r in services.replicas()
    }
    assert commands["r1"][commands["r1"].index("--model") + 1] == "/registry/embed/1"
    assert commands["r2"][commands["r2"].index("--model") + 1] == "/registry/embed/2"
    assert services.apply("vision", spec, ("2", "/registry/embed/2")).new_revision is False
