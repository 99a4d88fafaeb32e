"""Split scikit-learn's bundled iris data into train and test CSVs under data/ (no download)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split

parser = argparse.ArgumentParser()
parser.add_argument("--test-size", type=float, default=0.25)
parser.add_argument("--seed", type=int, default=7)
args = parser.parse_args()

frame = load_iris(as_frame=True).frame
train, test = train_test_split(
    frame, test_size=args.test_size, random_state=args.seed, stratify=frame["target"]
)
Path("data").mkdir(exist_ok=True)
train.to_csv("data/train.csv", index=False)
test.to_csv("data/test.csv", index=False)
print(f"prepared {len(train)} training and {len(test)} test rows")
