"""Cost per tenant, queue and cluster: each pod's GPUs x hours x its pool's price, kept after jobs end,
over any period; members see only their tenant's spend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from builders import make_cluster, make_pool
from fastapi.testclient import TestClient

from corral.control.reconcile import Inventory, reconcile
from corral.scheduling import get_policy
from corral.server.app import API, create_app
from corral.spec.job import JobSpec
from corral.store.accounts import AccountStore
from corral.store.costs import spend
from corral.store.database import open_store
from corral.store.jobs import JobStore

INVENTORY = Inventory(
    clusters=[
        make_cluster("lab", [make_pool("dgx", flavor="a100", count=1, gpus=8)]),
        make_cluster(
            "cloud",
            [make_pool("rent", flavor="h100", count=1, gpus=8, model="H100", cost=3.0)],
            private=False,
        ),
    ]
)
POLICY = get_policy("default")


@pytest.fixture
def store(database_url: str) -> Iterator[JobStore]:
    store = JobStore(open_store(database_url), clock=lambda: 0.0)
    yield store
    store.engine.dispose()


def _spec(name: str, gpus: str) -> JobSpec:
    return JobSpec.model_validate({"name": name, "command": "true", "resources": {"gpus": gpus}})


def test_cost_is_gpus_times_hours_times_price_over_the_period(store: JobStore) -> None:
    cloud = store.submit(_spec("rented", "H100:2"), tenant="vision")
    home = store.submit(_spec("owned", "A100:4"), tenant="nlp")
    reconcile(store.engine, INVENTORY, POLICY, now=0.0)
    store.clock = lambda: 3600.0
    store.finish(cloud.id, succeeded=True)  # 2 GPUs x 1 h x 3 USD
    by_tenant = {s.key: (s.usd, s.gpu_hours) for s in spend(store.engine, 0.0, 7200.0, "tenant")}
    assert by_tenant == {"vision": (6.0, 2.0), "nlp": (0.0, 8.0)}  # nlp's job still runs: counted to 7200
    by_cluster = {s.key: s.usd for s in spend(store.engine, 1800.0, 7200.0, "cluster")}
    assert by_cluster == {"cloud": 3.0, "lab": 0.0}  # only the half hour inside the period
    assert [s.key for s in spend(store.engine, 0.0, 7200.0, "queue", tenant="nlp")] == ["default"]
    store.cancel(home.id)
    assert spend(store.engine, 0.0, 7200.0, "tenant", tenant="nlp")[0].gpu_hours == 4.0  # ended at 1 h


def test_members_see_their_tenant_s_cost_and_admins_everyone_s(store: JobStore) -> None:
    accounts = AccountStore(store.engine)
    admin = accounts.bootstrap()
    accounts.create_tenant("vision")
    member = accounts.create_user("alice", "vision", "member")[1]
    store.submit(_spec("rented", "H100:2"), tenant="vision")
    store.submit(_spec("other", "H100:1"), tenant="default")
    reconcile(store.engine, INVENTORY, POLICY, now=0.0)
    http = TestClient(create_app(store, INVENTORY))
    window = {"since": 0, "until": 3600}

    def keys(token: str, **params: object) -> dict[str, float]:
        answer = http.get(f"{API}/cost", params=window | params, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
        return {s["key"]: s["usd"] for s in answer.json()}

    assert keys(admin) == {"vision": 6.0, "default": 3.0}
    assert keys(member) == keys(member, tenant="default") == {"vision": 6.0}
    backwards = http.get(
        f"{API}/cost", params={"since": 10, "until": 5}, headers={"Authorization": f"Bearer {admin}"}
    )
    assert backwards.status_code == 422
