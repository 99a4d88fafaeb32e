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
import signal
import sys
import threading
import time
import uuid
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
        self._experiments: dict[str, tuple[str, str, float]] = {}
        """Experiments by stored name: id, artifact location, and until when (monotonic) to trust them."""

    def make_runs(self, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A run for each request (``corral.mlops.writer_process.RunRequest``), in order: the made (or,
        with ``adopt``, found) run, or the error that kept it from being made. The runs to make are
        inserted in one transaction; if that fails (an experiment deleted meanwhile, say), each is made
        on its own through MLflow's ``create_run``, so one job's failure costs no other its run."""
        try:
            return self._make_together(runs)
        except Exception:
            log.warning("making %d runs in one transaction failed; making them one by one", len(runs))
            self._experiments.clear()
        made = []
        for run in runs:
            try:
                made.append(self._make_run(run))
            except Exception as error:
                log.exception("job %s: no MLflow run", run["job_id"])
                made.append({"job_id": run["job_id"], "error": f"{type(error).__name__}: {error}"})
        return made

    def _make_together(self, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``make_runs`` in one transaction of MLflow's own rows (``SqlRun``, ``SqlTag``), as its
        ``create_run`` writes them: one commit for a batch instead of two per run."""
        from mlflow.entities import LifecycleStage, RunStatus, SourceType
        from mlflow.store.tracking.dbmodels.models import SqlRun, SqlTag
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
        from mlflow.utils.uri import append_to_uri_path

        made: list[dict[str, Any]] = []
        rows = []
        for run in runs:
            experiment_id, artifact_location = self._experiment(run["experiment"], run["tenant"])
            if run["adopt"]:
                found = self._orphan(experiment_id, run["job_id"])
                if found is not None:
                    attempt = int(found.data.tags.get("corral.attempt", 0))
                    made.append(_made(run, experiment_id, found.info.run_id, attempt, made=False))
                    continue
            run_id = uuid.uuid4().hex
            tags = run["tags"] | {MLFLOW_RUN_NAME: run["run_name"]}
            rows.append(
                SqlRun(
                    name=run["run_name"],
                    artifact_uri=append_to_uri_path(artifact_location, run_id, "artifacts"),
                    run_uuid=run_id,
                    experiment_id=int(experiment_id),
                    source_type=SourceType.to_string(SourceType.UNKNOWN),
                    source_name="",
                    entry_point_name="",
                    user_id=run["tenant"],
                    status=RunStatus.to_string(RunStatus.RUNNING),
                    start_time=run["start_ms"],
                    end_time=None,
                    deleted_time=None,
                    source_version="",
                    lifecycle_stage=LifecycleStage.ACTIVE,
                    tags=[SqlTag(key=key, value=value) for key, value in tags.items()],
                )
            )
            made.append(_made(run, experiment_id, run_id, run["attempt"], made=True))
        if rows:
            with self.store.ManagedSessionMaker(read_only=False) as session:
                session.add_all(rows)
        return made

    def _make_run(self, run: dict[str, Any]) -> dict[str, Any]:
        from mlflow.entities import RunTag
        from mlflow.exceptions import MlflowException

        experiment_id, _ = self._experiment(run["experiment"], run["tenant"])
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
            experiment_id, _ = self._experiment(run["experiment"], run["tenant"])
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

    def _experiment(self, stored: str, tenant: str) -> tuple[str, str]:
        """The id and artifact location of experiment ``stored``, made if missing."""
        from mlflow.entities import ExperimentTag
        from mlflow.exceptions import MlflowException

        known = self._experiments.get(stored)
        if known is not None and known[2] > time.monotonic():
            return known[0], known[1]
        found = self.store.get_experiment_by_name(stored)
        if found is None:
            try:
                self.store.create_experiment(stored, tags=[ExperimentTag("corral.tenant", tenant)])
            except MlflowException:  # made meanwhile through the gate
                pass
            found = self.store.get_experiment_by_name(stored)
            if found is None:
                raise MlflowException(f"experiment {stored!r} could not be made")
        experiment_id, location = str(found.experiment_id), str(found.artifact_location)
        self._experiments[stored] = (experiment_id, location, time.monotonic() + EXPERIMENT_CACHE_SECONDS)
        return experiment_id, location

    def end_runs(self, ends: list[dict[str, Any]]) -> list[str]:
        """End each run (``{"run_id", "status", "end_ms"}``), in one transaction; the ids of those
        ended. A run that is not there (deleted) is left out, so the server does not ask again forever;
        if the transaction fails, each is ended on its own through MLflow's ``update_run_info`` and one
        MLflow cannot end now is left for the server to try again."""
        if not ends:
            return []
        try:
            return self._end_together(ends)
        except Exception:
            log.warning("ending %d runs in one transaction failed; ending them one by one", len(ends))
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

    def _end_together(self, ends: list[dict[str, Any]]) -> list[str]:
        from mlflow.entities import LifecycleStage
        from mlflow.store.tracking.dbmodels.models import SqlRun

        by_id = {end["run_id"]: end for end in ends}
        with self.store.ManagedSessionMaker(read_only=False) as session:
            runs = session.query(SqlRun).filter(SqlRun.run_uuid.in_(by_id)).all()
            for run in runs:
                if run.lifecycle_stage == LifecycleStage.ACTIVE:
                    run.status = by_id[run.run_uuid]["status"]
                    run.end_time = by_id[run.run_uuid]["end_ms"]
            return [run.run_uuid for run in runs]  # read before the commit expires them

    def set_tags(self, tagged: list[dict[str, Any]]) -> None:
        """Set tags (``{"run_id", "tags": {key: value}}``, of several runs), in one transaction; if it
        fails (a run deleted meanwhile), run by run through MLflow's ``set_tag``."""
        from mlflow.entities import RunTag
        from mlflow.store.tracking.dbmodels.models import SqlTag

        try:
            with self.store.ManagedSessionMaker(read_only=False) as session:
                for run in tagged:
                    for key, value in run["tags"].items():
                        session.merge(SqlTag(run_uuid=run["run_id"], key=key, value=value))
            return
        except Exception:
            log.warning("tagging %d runs in one transaction failed; tagging them one by one", len(tagged))
        for run in tagged:
            try:
                for key, value in run["tags"].items():
                    self.store.set_tag(run["run_id"], RunTag(key, value))
            except Exception:
                log.exception("run %s could not be tagged", run["run_id"])

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
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C of the server's terminal: it ends by its stdin
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
    held: dict[str, Any] | None = None
    while True:
        command = held if held is not None else commands.get()
        command, held = _with_following_tags(command, commands)
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


def _with_following_tags(
    command: dict[str, Any], commands: queue.SimpleQueue[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``command``, and if it sets tags, the tags of the ``set_tags`` commands queued right after it
    folded in (one transaction for a round's starts); the first other command taken out of the queue
    meanwhile, to run next."""
    if command["op"] != "set_tags" or command.get("id") is not None:
        return command, None
    tagged = list(command["args"]["tagged"])
    while True:
        try:
            following = commands.get_nowait()
        except queue.Empty:
            return {"id": None, "op": "set_tags", "args": {"tagged": tagged}}, None
        if following["op"] != "set_tags" or following.get("id") is not None:
            return {"id": None, "op": "set_tags", "args": {"tagged": tagged}}, following
        tagged += following["args"]["tagged"]


if __name__ == "__main__":
    main()
