"""Experiment tracking and the model registry: MLflow behind corral's server and its tokens.

MLflow is an optional dependency (the ``corral[mlops]`` extra): without it corral runs as before, the
tracking routes answer a 404 that says what to install, and pods get no ``MLFLOW_*`` variables.
See docs/mlops.md.
"""

from __future__ import annotations

import importlib.util

INSTALL_HINT = "experiment tracking and the model registry need MLflow: pip install 'corral[mlops]'"


def available() -> bool:
    """Whether MLflow can be imported here (without importing it: it takes seconds)."""
    return importlib.util.find_spec("mlflow") is not None
