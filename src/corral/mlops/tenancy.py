"""Which tenant owns an MLflow object, read from MLflow's stores and remembered (owners never change).

An experiment's tenant is its stored name's prefix (``corral.mlops.names``); a run's is its experiment's;
a logged model's is its experiment's. Renaming cannot move an object to another tenant: new names get
the caller's own prefix. Artifact paths served by ``mlflow-artifacts`` start with the experiment id.
"""

from __future__ import annotations

import threading
from typing import Any

from corral.mlops import names

CACHE_LIMIT = 100_000


class NotFound(Exception):
    """No such object, or another tenant's: the caller gets the same 404 for both."""


class Owners:
    def __init__(self, tracking: Any) -> None:
        self.tracking = tracking
        self._experiments: dict[str, str | None] = {}
        self._runs: dict[str, str] = {}
        self._models: dict[str, str] = {}
        self._lock = threading.Lock()

    def experiment(self, experiment_id: str) -> str | None:
        """The tenant owning an experiment (None: nobody's, e.g. MLflow's ``Default``)."""
        with self._lock:
            if experiment_id in self._experiments:
                return self._experiments[experiment_id]
        try:
            experiment = self.tracking.get_experiment(experiment_id)
        except Exception as error:  # MLflow raises for ids that do not exist or are malformed
            raise NotFound(f"no experiment {experiment_id!r}") from error
        owner = names.experiment_owner(experiment.name)
        return self._remember(self._experiments, experiment_id, owner)

    def experiments_of(self, tenant: str) -> list[str]:
        """The ids of the tenant's experiments, deleted ones included (their artifacts still take room)."""
        from mlflow.entities import ViewType

        ids: list[str] = []
        token = None
        while True:
            page = self.tracking.search_experiments(
                view_type=ViewType.ALL,
                max_results=1000,
                filter_string=names.tenant_filter(tenant, names.EXPERIMENT_SEPARATOR, None),
                page_token=token,
            )
            ids += [str(experiment.experiment_id) for experiment in page]
            token = page.token
            if not token:
                return ids

    def run_experiment(self, run_id: str) -> str:
        with self._lock:
            if run_id in self._runs:
                return self._runs[run_id]
        try:
            run = self.tracking.get_run(run_id)
        except Exception as error:
            raise NotFound(f"no run {run_id!r}") from error
        return self._remember(self._runs, run_id, str(run.info.experiment_id))

    def logged_model_experiment(self, model_id: str) -> str:
        with self._lock:
            if model_id in self._models:
                return self._models[model_id]
        try:
            model = self.tracking.get_logged_model(model_id)
        except Exception as error:
            raise NotFound(f"no logged model {model_id!r}") from error
        return self._remember(self._models, model_id, str(model.experiment_id))

    def _remember(self, cache: dict[str, Any], key: str, value: Any) -> Any:
        with self._lock:
            if len(cache) > CACHE_LIMIT:
                cache.clear()
            cache[key] = value
        return value
