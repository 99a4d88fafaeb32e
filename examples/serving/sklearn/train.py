"""Train a small scikit-learn classifier on the iris data set (it ships with scikit-learn) and save it
as an MLflow model folder, which corral's built-in MLflow runtime serves:

    python examples/serving/sklearn/train.py /tmp/corral-demo/iris
    corral serve examples/serving/sklearn/iris.yaml
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow.sklearn  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/corral-demo/iris")
features, labels = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=500).fit(features, labels)
folder.parent.mkdir(parents=True, exist_ok=True)
mlflow.sklearn.save_model(model, str(folder), pip_requirements=["scikit-learn"])
folder.chmod(0o755)  # replicas run as another user, who must read it
print(f"saved to {folder}; accuracy on the training set {model.score(features, labels):.2f}")
