"""Specs no process could be started with are refused at submit (422, nothing stored): NUL bytes, env
names a shell cannot export, commands and environments too big for the kernel; a stop grace period is a
duration of at most an hour."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from builders import make_cluster, make_pool
from fastapi.testclient import TestClient

from corral.control.reconcile import Inventory
from corral.server.app import API, create_app
from corral.spec.job import DEFAULT_STOP_GRACE, MAX_COMMAND_BYTES, JobSpec
from corral.store.accounts import AccountStore
from corral.store.database import open_store
from corral.store.jobs import JobStore

INVENTORY = Inventory(clusters=[make_cluster("lab", [make_pool("dgx", flavor="a100", count=1, gpus=8)])])
JOB = {"name": "train", "command": "true"}


@pytest.fixture
def member(database_url: str) -> Iterator[TestClient]:
    """An API client holding a member's token (the attacker of issue 14)."""
    store = JobStore(open_store(database_url))
    accounts = AccountStore(store.engine)
    accounts.bootstrap()
    accounts.create_tenant("vision")
    token = accounts.create_user("mallory", "vision", "member")[1]
    yield TestClient(create_app(store, INVENTORY), headers={"Authorization": f"Bearer {token}"})
    store.engine.dispose()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"command": "echo a\0b"}, "command contains a NUL byte"),
        ({"command": ["echo", "a\0b"]}, "command contains a NUL byte"),
        ({"command": "x" * (MAX_COMMAND_BYTES + 1)}, f"at most {MAX_COMMAND_BYTES} (64 KiB)"),
        ({"command": ["echo"] * 5000}, "at most 4096"),
        ({"env": {"A": "x\0y"}}, "env A contains a NUL byte"),
        ({"env": {"A=B": "x"}}, "env name 'A=B' is not a variable name"),
        ({"env": {"1A": "x"}}, "is not a variable name"),
        ({"env": {"": "x"}}, "is not a variable name"),
        ({"env": {"A": "x" * 40_000}}, "at most 32768 (32 KiB)"),
        ({"env": {f"V{i}": "x" for i in range(300)}}, "at most 256"),
        ({"env": {f"V{i}": "x" * 30_000 for i in range(10)}}, "at most 262144 (256 KiB)"),
        ({"workdir": "/tmp/\0"}, "workdir contains a NUL byte"),
        ({"workdir": "/" + "a" * 5000}, "at most 4096"),
        ({"checkpoint": {"dir": "/c\0", "interval": 60}}, "checkpoint.dir contains a NUL byte"),
        ({"queue": "q\0"}, "queue contains a NUL byte"),
        ({"stop_grace_period": "2h"}, "stop_grace_period"),
    ],
)
def test_a_spec_no_process_could_start_with_is_refused_at_submit(
    member: TestClient, change: dict, message: str
) -> None:
    answer = member.post(f"{API}/jobs", json=JOB | change)
    assert answer.status_code == 422, answer.text
    assert message in answer.json()["detail"]
    assert member.get(f"{API}/jobs").json() == []


def test_a_stop_grace_period_is_a_duration_defaulting_to_30_seconds() -> None:
    assert JobSpec.model_validate(JOB).stop_grace_period == DEFAULT_STOP_GRACE == 30.0
    assert JobSpec.model_validate(JOB | {"stop_grace_period": "1m"}).stop_grace_period == 60.0
