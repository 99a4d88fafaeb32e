"""Score every trained model (models/<c=...>/model.pkl) on data/test.csv; write report.json, best first."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pandas as pd

test = pd.read_csv("data/test.csv")
features, target = test.drop(columns="target"), test["target"]
scores = []
for path in sorted(Path("models").glob("*/model.pkl")):
    with open(path, "rb") as file:
        trained = pickle.load(file)
    accuracy = trained["model"].score(features, target)
    scores.append({"instance": path.parent.name, "c": trained["c"], "accuracy": accuracy})
    print(f"{path.parent.name}: test accuracy {accuracy:.3f}")
scores.sort(key=lambda score: (-score["accuracy"], score["c"]))
Path("report.json").write_text(json.dumps({"best": scores[0], "scores": scores}, indent=2))
