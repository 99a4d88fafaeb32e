"""Fit a logistic regression with inverse regularisation C on data/train.csv; write model.pkl."""

from __future__ import annotations

import argparse
import pickle

import pandas as pd
from sklearn.linear_model import LogisticRegression

parser = argparse.ArgumentParser()
parser.add_argument("--c", type=float, required=True)
args = parser.parse_args()

train = pd.read_csv("data/train.csv")
model = LogisticRegression(C=args.c, max_iter=500).fit(train.drop(columns="target"), train["target"])
with open("model.pkl", "wb") as file:
    pickle.dump({"c": args.c, "model": model}, file)
print(
    f"trained C={args.c}: training accuracy {model.score(train.drop(columns='target'), train['target']):.3f}"
)
