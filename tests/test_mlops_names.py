"""Tenancy of MLflow's names, and corral without MLflow: what needs no MLflow server to be checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from corral.control.reconcile import Inventory
from corral.mlops import INSTALL_HINT, names
from corral.mlops.gate import find_route
from corral.mlops.tokens import is_job_token, split_job_token, token_secret, token_text
from corral.server.app import API, create_app
from corral.store.accounts import AccountStore
from corral.store.database import open_store
from corral.store.jobs import JobStore


def test_names_are_stored_per_tenant_and_their_owner_is_the_prefix() -> None:
    assert names.stored_experiment("lab", "train") == "lab/train"
    assert names.stored_model("lab", "iris.v2") == "lab.iris.v2"
    assert names.experiment_owner("lab/a/b") == "lab"
    assert names.model_owner("lab.iris.v2") == "lab"
    assert names.experiment_owner("Default") is None  # MLflow's own experiment is nobody's
    assert names.shown("lab.iris.v2", "lab", names.MODEL_SEPARATOR) == "iris.v2"


def test_a_search_is_narrowed_to_the_tenant_and_its_name_conditions_get_the_prefix() -> None:
    assert names.tenant_filter("lab", ".", None) == "name LIKE 'lab.%'"
    assert names.tenant_filter("lab", ".", "name = 'iris'") == "name LIKE 'lab.%' AND name = 'lab.iris'"
    assert names.tenant_filter("lab", "/", "name LIKE 'tr%' AND tags.x = '1'") == (
        "name LIKE 'lab/%' AND name LIKE 'lab/tr%' AND tags.x = '1'"
    )


def test_only_allowed_endpoints_pass_and_artifacts_are_routed_by_path() -> None:
    assert find_route("GET", "/api/2.0/mlflow/runs/get") is not None
    assert find_route("POST", "/api/2.0/mlflow/runs/get") is None
    assert find_route("POST", "/api/2.0/mlflow/traces") is None
    assert find_route("GET", "/api/2.0/mlflow/gateway/routes") is None
    route, args = find_route("PUT", "/api/2.0/mlflow-artifacts/artifacts/3/abc/artifacts/model.pkl") or (
        None,
        {},
    )
    assert route is not None and args == {"path": "3/abc/artifacts/model.pkl"} and not route.json_body


def test_a_job_token_is_recognised_and_its_secret_follows_from_the_key() -> None:
    token = token_text(b"k" * 32, "jabc123")
    assert is_job_token(token) and not is_job_token("corral_abc123_secret")
    assert split_job_token(token) == ("jabc123", token_secret(b"k" * 32, "jabc123"))
    assert token_secret(b"k" * 32, "jabc123") != token_secret(b"x" * 32, "jabc123")


def test_without_mlflow_the_tracking_routes_say_what_to_install(tmp_path: Path) -> None:
    store = JobStore(open_store(f"sqlite:///{tmp_path / 'corral.db'}"))
    token = AccountStore(store.engine).bootstrap()
    http = TestClient(create_app(store, Inventory([])))
    headers = {"Authorization": f"Bearer {token}"}
    for answer in (
        http.post("/mlflow/api/2.0/mlflow/experiments/search", json={}, headers=headers),
        http.get(f"{API}/models", headers=headers),
    ):
        assert answer.status_code == 404
        assert answer.json()["detail"] == INSTALL_HINT


def test_a_spec_may_name_its_experiment_which_defaults_to_the_queue() -> None:
    from pydantic import ValidationError

    from corral.mlops.tracking import experiment_name
    from corral.spec.job import JobSpec

    named = JobSpec(name="train", command="true", experiment="llama sweep/2")
    assert experiment_name("lab", named, "nlp") == "lab/llama sweep/2"
    assert experiment_name("lab", JobSpec(name="train", command="true"), "nlp") == "lab/nlp"
    with pytest.raises(ValidationError):
        JobSpec(name="train", command="true", experiment="/absolute")
