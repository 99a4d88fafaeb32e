"""The MLflow writer: a child process of the server that makes, tags and ends the runs of corral's jobs.

Making a job's run, tagging it and ending it are MLflow ``SqlAlchemyStore`` calls that cost about 18 ms
of Python per job; on threads of the server they held the server's one interpreter lock for most of a
burst's time, and bounded it at about 16-24 jobs/s with tracking on. Here they run in a process of their
own, on another core, over the same backend store the server's ``/mlflow`` gate serves; the server only
sends small JSON messages and gets run ids back (``corral.mlops.writer_process``).

It is started as ``python -m corral.mlops.writer`` with pipes for stdin and stdout, nothing else: no
port or socket a job could reach, and its environment is only what Python and MLflow need. The first
line it reads is its configuration (the backend store URI, which for PostgreSQL holds a password and is
therefore never put in its arguments, which every user can read in ``/proc``). Then each line is one
command ``{"id": N, "op": ..., "args": {...}}``; a command with an ``id`` gets one answer line
``{"id": N, "result": ...}`` or ``{"id": N, "error": "..."}``, in order. At the end of its stdin (the
server exited, or was killed) it exits at once, even in the middle of a command: it never outlives the
server. Every write is one of MLflow's own transactions, so being killed anywhere loses only the command
in progress; the server makes the runs of a command that got no answer again, adopting (by the
``corral.job_id`` tag) any that were made.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
from typing import IO, Any

log = logging.getLogger("corral.mlops.writer")

EXPERIMENT_CACHE_SECONDS = 2.0
"""How long a looked-up experiment id is used for new runs without asking MLflow again: looking one up
was a fifth of making a job's run. A rename is seen within this; an id that fails is looked up again."""


OPS = frozenset({"make_runs", "end_runs", "set_tags", "delete_run"})
"""The commands the writer takes: ``RunWriter``'s methods of those names."""


class RunWriter:
    """The writes corral makes to MLflow's tracking store, by batch."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._experiments: dict[str, tuple[str, float]] = {}

    def make_runs(self, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A run for each request (``corral.mlops.writer_process.RunRequest``), in order: the made (or,
        with ``adopt``, found) run, or the error that kept it from being made."""
        made = []
        for run in runs:
            try:
                made.append(self._make_run(run))
            except Exception as error:  # one job's run failing must not cost the others theirs
                log.exception("job %s: no MLflow run", run["job_id"])
                made.append({"job_id": run["job_id"], "error": f"{type(error).__name__}: {error}"})
        return made

    def _make_run(self, run: dict[str, Any]) -> dict[str, Any]:
        from mlflow.entities import RunTag
        from mlflow.exceptions import MlflowException

        experiment_id = self._experiment(run["experiment"], run["tenant"])
        if run["adopt"]:
            found = self._orphan(experiment_id, run["job_id"])
            if found is not None:
                attempt = int(found.data.tags.get("corral.attempt", 0))
                return _made(run, experiment_id, found.info.run_id, attempt, made=False)
        tags = [RunTag(key, value) for key, value in run["tags"].items()]

        def create(experiment: str) -> Any:
            return self.store.create_run(
                experiment_id=experiment,
                user_id=run["tenant"],
                start_time=run["start_ms"],
                tags=tags,
                run_name=run["run_name"],
            )

        try:
            created = create(experiment_id)
        except MlflowException:  # the experiment was deleted or made again since it was looked up
            self._experiments.pop(run["experiment"], None)
            experiment_id = self._experiment(run["experiment"], run["tenant"])
            created = create(experiment_id)
        return _made(run, experiment_id, created.info.run_id, run["attempt"], made=True)

    def _orphan(self, experiment_id: str, job_id: str) -> Any:
        """The live run made for ``job_id`` by a writer or server that was killed before it was
        recorded."""
        from mlflow.entities import ViewType

        found = self.store.search_runs(
            [experiment_id], f"tags.`corral.job_id` = '{job_id}'", ViewType.ACTIVE_ONLY, max_results=1
        )
        return found[0] if found else None

    def _experiment(self, stored: str, tenant: str) -> str:
        from mlflow.entities import ExperimentTag
        from mlflow.exceptions import MlflowException

        known = self._experiments.get(stored)
        if known is not None and known[1] > time.monotonic():
            return known[0]
        found = self.store.get_experiment_by_name(stored)
        if found is not None:
            experiment_id = str(found.experiment_id)
        else:
            try:
                experiment_id = str(
                    self.store.create_experiment(stored, tags=[ExperimentTag("corral.tenant", tenant)])
                )
            except MlflowException:  # made meanwhile through the gate
                again = self.store.get_experiment_by_name(stored)
                if again is None:
                    raise
                experiment_id = str(again.experiment_id)
        self._experiments[stored] = (experiment_id, time.monotonic() + EXPERIMENT_CACHE_SECONDS)
        return experiment_id

    def end_runs(self, ends: list[dict[str, Any]]) -> list[str]:
        """End each run (``{"run_id", "status", "end_ms"}``); the ids of those ended (one MLflow cannot
        end now is left for the server to try again)."""
        from mlflow.entities import RunStatus

        ended = []
        for end in ends:
            try:
                self.store.update_run_info(
                    end["run_id"], RunStatus.from_string(end["status"]), end["end_ms"], None
                )
            except Exception:
                log.exception("run %s could not be ended", end["run_id"])
                continue
            ended.append(end["run_id"])
        return ended

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        for key, value in tags.items():
            self.store.set_tag(run_id, RunTag(key, value))

    def delete_run(self, run_id: str) -> None:
        self.store.delete_run(run_id)


def _made(run: dict[str, Any], experiment_id: str, run_id: str, attempt: int, made: bool) -> dict[str, Any]:
    return {
        "job_id": run["job_id"],
        "experiment_id": experiment_id,
        "run_id": run_id,
        "attempt": attempt,
        "made": made,
    }


def open_tracking_store(backend_uri: str) -> Any:
    """MLflow's tracking store over ``backend_uri`` (already migrated by the server), with the SQLite
    pragmas the server's own connections have."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from corral.mlops.stores import SERVED_ARTIFACTS_ROOT, use_wal

    store = SqlAlchemyStore(backend_uri, SERVED_ARTIFACTS_ROOT)
    if backend_uri.startswith("sqlite"):
        use_wal(store.engine)
    return store


def _read_commands(source: IO[bytes], commands: queue.SimpleQueue[dict[str, Any]]) -> None:
    """Hand each command line on; exit the process when the server's end of the pipe is closed."""
    for line in source:
        commands.put(json.loads(line))
    os._exit(0)


def _answer(out: IO[bytes], message: dict[str, Any]) -> None:
    out.write(json.dumps(message).encode() + b"\n")
    out.flush()


def main() -> None:
    """Serve the server's commands until its end of the pipe closes."""
    logging.basicConfig(level=logging.WARNING, format="corral-mlflow-writer: %(levelname)s %(message)s")
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    source, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything a library prints must not land among the answers
    config = json.loads(source.readline() or "null")
    if config is None:
        return
    commands: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
    threading.Thread(target=_read_commands, args=(source, commands), daemon=True).start()
    try:
        writer = RunWriter(open_tracking_store(config["backend_uri"]))
    except Exception as error:
        log.exception("MLflow's store could not be opened")
        _answer(out, {"failed": f"{type(error).__name__}: {error}"})
        return
    _answer(out, {"ready": True})
    while True:
        command = commands.get()
        try:
            if command["op"] not in OPS:
                raise ValueError(f"unknown command {command['op']!r}")
            result = getattr(writer, command["op"])(**command["args"])
        except Exception as error:
            log.exception("%s failed", command["op"])
            if command.get("id") is not None:
                _answer(out, {"id": command["id"], "error": f"{type(error).__name__}: {error}"})
            continue
        if command.get("id") is not None:
            _answer(out, {"id": command["id"], "result": result})


if __name__ == "__main__":
    main()
