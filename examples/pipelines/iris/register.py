"""Register the best model of report.json in MLflow's registry and point an alias (champion) at it.

Uses MLflow's own API through the tracking server pods are given (MLFLOW_TRACKING_URI); without one it
exits 1 saying so, rather than writing a registry nobody can find into the pod's folder.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--name", required=True)
parser.add_argument("--alias", default="champion")
args = parser.parse_args()

if not os.environ.get("MLFLOW_TRACKING_URI"):
    sys.exit(
        "register: MLFLOW_TRACKING_URI is not set: run this on a corral server with tracking "
        "(corral[mlops]), or set it in this step's env"
    )

import mlflow  # noqa: E402  (only once there is somewhere to register)
from mlflow import MlflowClient  # noqa: E402

best = json.loads(Path("report.json").read_text())["best"]
with open(Path("models") / best["instance"] / "model.pkl", "rb") as file:
    model = pickle.load(file)["model"]
tags = {
    name: os.environ[name] for name in ("CORRAL_PIPELINE_RUN", "CORRAL_PIPELINE_STEP") if name in os.environ
}
with mlflow.start_run(run_id=os.environ.get("MLFLOW_RUN_ID"), tags=tags):
    mlflow.log_params({"c": best["c"]})
    mlflow.log_metric("test_accuracy", best["accuracy"])
    info = mlflow.sklearn.log_model(
        model, name="model", registered_model_name=args.name, pip_requirements=["scikit-learn"]
    )
version = info.registered_model_version
MlflowClient().set_registered_model_alias(args.name, args.alias, version)
print(
    f"registered {args.name} version {version} (C={best['c']}, accuracy {best['accuracy']:.3f}) as {args.name}@{args.alias}"
)
