"""Schemathesis against the ASGI app: every operation of the OpenAPI document, with generated valid and
invalid requests, as an admin and as a member, must answer without a 5xx and with a status, content type
and body the document declares. Bounded (a few examples per operation, derandomized) to run in seconds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import make_cluster, make_pool

schemathesis = pytest.importorskip("schemathesis")
from fastapi import FastAPI  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from corral.control.reconcile import Inventory  # noqa: E402
from corral.server.app import create_app  # noqa: E402
from corral.store.accounts import AccountStore  # noqa: E402
from corral.store.database import open_store  # noqa: E402
from corral.store.jobs import JobStore  # noqa: E402

EXAMPLES = 15
"""Per operation, mode and role: enough to hit the bounds of every field, few enough for 2 cores."""
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
INVENTORY = Inventory(clusters=[make_cluster("lab", [make_pool("dgx", flavor="a100", count=1, gpus=8)])])


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastAPI, dict[str, str]]]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    store = JobStore(open_store(f"sqlite:///{folder / 'corral.db'}"))
    app = create_app(store, INVENTORY, logs=lambda job_id, pod, attempt: None, runs=folder / "runs")
    accounts = AccountStore(store.engine)
    tokens = {"admin": accounts.bootstrap() or ""}
    accounts.create_tenant("vision")
    tokens["member"] = accounts.create_user("alice", "vision", "member")[1]
    yield app, tokens
    store.engine.dispose()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("role", ["admin", "member"])
def test_every_operation_answers_as_documented(api: tuple[FastAPI, dict[str, str]], role: str, mode) -> None:  # type: ignore[no-untyped-def]
    app, tokens = api
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = {"Authorization": f"Bearer {tokens[role]}"}
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case) -> None:  # type: ignore[no-untyped-def]
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            check()
        except Unsatisfiable:  # no parameters and no body: nothing to make invalid
            assert mode == GenerationMode.NEGATIVE, operation.label
        except (Exception, FailureGroup) as error:  # collect every operation's failure, not only the first
            failures.append(f"{operation.label}: {error}")
    assert not failures, "\n\n".join(failures)
