"""Tracking for every job: one MLflow run per job, its variables in each pod, its end with the job's.

A job gets a run in its tenant's experiment, tagged with what produced it, and a job token for its
attempt, before its pods start: ``make_ahead`` (after every reconcile round, off the loop's and the
start threads' way) makes them for the next ``runs_ahead`` waiting jobs, oldest first, so a start only
reads the job's row and tags the run with its nodes. A job that starts without one (it jumped the queue,
or the server runs Ray or Kubernetes clusters, whose pods get no variables) gets its run when its pods
are first handed out, as before. Making runs on the start threads was what bounded a burst's jobs/s with
tracking on: each start waited for MLflow's ``create_run`` (two transactions behind the one SQLite lock
the sweep's writes also take). A later attempt (a retry, a preemption, a lost node) logs into the same
run: its ``corral.attempt`` tag moves on and a new token replaces the last one. ``sweep`` (after every
reconcile round) ends the runs of jobs that ended: FINISHED, FAILED or KILLED; a job cancelled before
it started ends its run made ahead as KILLED.

A kill -9 between making a run in MLflow and recording it in corral's store leaves a run no row names:
for a job submitted before this server process started, a run is first looked for by its
``corral.job_id`` tag and adopted, so one job never gets two.

MLflow being unreachable never stops a pod: the pod starts without the variables and the error is
logged; the next hand-out tries again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.backends.pods import DesiredPod
from corral.mlops import names
from corral.mlops.stores import MlflowStores
from corral.mlops.tokens import new_token_id, secret_digest, split_job_token, token_secret, token_text
from corral.spec.job import JobSpec
from corral.store.schema import JobRow, JobTrackingRow

log = logging.getLogger(__name__)

PIPELINE_VARIABLES = {
    "CORRAL_PIPELINE_RUN": "corral.pipeline_run",
    "CORRAL_PIPELINE_STEP": "corral.pipeline_step",
}
"""Variables a pipeline step's spec carries (set by pipelines), copied to the run's tags for lineage."""
RUN_STATUS = {"finished": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
TOKEN_CACHE_SECONDS = 1.0
"""As for API tokens: a job that ends stops its token within this time."""
RUNS_AHEAD = 32
"""Waiting jobs, oldest first, that have a run before they start: enough for the starts of a few rounds
in a burst of short jobs, few enough that a deep queue does not hold thousands of runs that wait."""
MAKING_WAIT_SECONDS = 30.0
"""How long a start waits for the run another thread is making for its job before making its own."""
EXPERIMENT_CACHE_SECONDS = 2.0
"""How long a looked-up experiment id is used for new runs without asking MLflow again."""
MOUNT = "/mlflow"
"""Where the server answers MLflow's REST API; pods' ``MLFLOW_TRACKING_URI`` is the server's URL + this."""


@dataclass(frozen=True)
class JobCaller:
    """Who holds a job token: one job attempt of one tenant."""

    job_id: str
    tenant: str
    attempt: int


@dataclass(frozen=True)
class _Job:
    """What a job's run is made from, before or at its start."""

    id: str
    tenant: str
    spec: JobSpec
    queue: str
    attempt: int
    """The attempt that starts next: its run's ``corral.attempt``."""
    submitted_at: float


@dataclass(frozen=True)
class JobRun:
    job_id: str
    attempt: int
    experiment: str
    """The experiment's name as the tenant sees it."""
    run_id: str
    token_id: str


def experiment_name(tenant: str, spec: JobSpec, queue: str) -> str:
    """The stored name of a job's experiment: its spec's ``experiment``, else its queue's name."""
    return names.stored_experiment(tenant, spec.experiment or queue)


_ENDED = (
    update(JobTrackingRow.__table__)
    .where(JobTrackingRow.job_id == bindparam("job"))
    .values(ended_status=bindparam("final"))
)
"""A job's run is ended in MLflow: the sweep leaves it alone from now on."""


class JobTracking:
    def __init__(
        self,
        engine: Engine,
        stores: MlflowStores,
        key: bytes,
        clock: Callable[[], float] = time.time,
        runs_ahead: int = 0,
    ) -> None:
        """``runs_ahead``: how many waiting jobs ``make_ahead`` gives a run (0: none, when some pods
        never get tracking variables, as Ray's and Kubernetes' do not)."""
        self.engine = engine
        self.stores = stores
        self.key = key
        self.clock = clock
        self.runs_ahead = runs_ahead
        self._since = clock()
        """Jobs submitted before this may have a run from an earlier process that no row names."""
        self._runs: dict[tuple[str, int], JobRun] = {}
        self._experiments: dict[str, tuple[str, float]] = {}
        """Experiment ids by stored name, as found or made, and until when (monotonic) to trust them:
        looking one up was a fifth of making a job's run in a burst. A rename is seen within
        ``EXPERIMENT_CACHE_SECONDS``; an id that no longer works is looked up again at once."""
        self._callers: dict[str, tuple[JobCaller | None, float]] = {}
        self._making: dict[str, threading.Event] = {}
        """Jobs whose run a thread of this process is making now, set when it is recorded (or failed):
        a start and ``make_ahead`` reaching the same job make one run, not one each."""
        self._lock = threading.Lock()

    def attach(self, pods: Sequence[DesiredPod], server_url: str) -> list[DesiredPod]:
        """``pods`` with their job's MLflow variables, ``MLFLOW_TRACKING_URI`` being ``server_url``
        (the server as the pods' node reaches it) + ``/mlflow``. A job whose run cannot be made now keeps
        its pods without them."""
        uri = server_url.rstrip("/") + MOUNT
        runs: dict[tuple[str, int], JobRun | None] = {}
        attached = []
        for pod in pods:
            key = (pod.job_id, pod.attempt)
            if key not in runs:
                runs[key] = self._run_for(pod, [p.node for p in pods if p.job_id == pod.job_id])
            run = runs[key]
            if run is None:
                attached.append(pod)
                continue
            env = {
                "MLFLOW_TRACKING_URI": uri,
                "MLFLOW_TRACKING_TOKEN": token_text(self.key, run.token_id),
                "MLFLOW_EXPERIMENT_NAME": run.experiment,
                "MLFLOW_RUN_ID": run.run_id,
                "MLFLOW_DISABLE_TELEMETRY": "true",
            }
            attached.append(pod.model_copy(update={"tracking": env}))
        return attached

    def _run_for(self, pod: DesiredPod, nodes: list[str]) -> JobRun | None:
        key = (pod.job_id, pod.attempt)
        with self._lock:
            known = self._runs.get(key)
        if known is not None:
            return known
        try:
            run = self._ensure_run(pod, sorted(set(nodes)))
        except Exception:
            log.exception("job %s: no MLflow run (its pods start without tracking)", pod.job_id)
            return None
        with self._lock:
            if len(self._runs) > 10_000:
                self._runs.clear()
            self._runs[key] = run
        return run

    def _ensure_run(self, pod: DesiredPod, nodes: list[str]) -> JobRun:
        with Session(self.engine) as session:
            row = session.get(JobTrackingRow, pod.job_id)
            job = session.get(JobRow, pod.job_id)
            queue = job.queue if job is not None else "default"
            submitted = job.submitted_at if job is not None else self.clock()
        stored = experiment_name(pod.tenant, pod.spec, queue)
        shown = names.shown(stored, pod.tenant, names.EXPERIMENT_SEPARATOR)
        if row is None:
            made = _Job(pod.job_id, pod.tenant, pod.spec, queue, pod.attempt, submitted)
            row, ours = self._create_run(made, stored, nodes)
            if ours:
                return JobRun(pod.job_id, row.attempt, shown, row.run_id, row.token_id)
        if row.attempt != pod.attempt:
            return self._next_attempt(row, pod, nodes, shown)
        self._tag(row.run_id, {"corral.node": ",".join(nodes)})  # made ahead, before it had nodes
        return JobRun(pod.job_id, row.attempt, shown, row.run_id, row.token_id)

    def make_ahead(self) -> int:
        """Give the ``runs_ahead`` oldest waiting jobs a run each (those without one yet), tagged with
        everything but their nodes; how many were made. A job whose run cannot be made now gets it at
        its start."""
        if self.runs_ahead <= 0:
            return 0
        next_in_line = (
            select(JobRow.id)
            .where(JobRow.status == "pending")
            .order_by(JobRow.submitted_at, JobRow.id)
            .limit(self.runs_ahead)
            .subquery()
        )
        with Session(self.engine) as session:  # only the specs of those without a run are read
            waiting = session.execute(
                select(
                    JobRow.id, JobRow.tenant, JobRow.queue, JobRow.spec, JobRow.attempt, JobRow.submitted_at
                )
                .join(next_in_line, next_in_line.c.id == JobRow.id)
                .outerjoin(JobTrackingRow, JobTrackingRow.job_id == JobRow.id)
                .where(JobTrackingRow.job_id.is_(None))
                .order_by(JobRow.submitted_at, JobRow.id)
            ).all()
        made = 0
        for found in waiting:
            with self._lock:  # made by a start since the query, or being made by one now
                started = (found.id, found.attempt + 1) in self._runs or found.id in self._making
            if started:
                continue
            try:
                spec = JobSpec.model_validate(found.spec)
                job = _Job(found.id, found.tenant, spec, found.queue, found.attempt + 1, found.submitted_at)
                _, ours = self._create_run(job, experiment_name(found.tenant, spec, found.queue), None)
                made += ours
            except Exception:
                log.exception("job %s: no MLflow run made ahead (made at its start instead)", found.id)
        return made

    def _create_run(self, job: _Job, stored: str, nodes: list[str] | None) -> tuple[JobTrackingRow, bool]:
        """``_make_run``, unless another thread of this process is making the job's run: then the row it
        recorded, once it has."""
        with self._lock:
            other = self._making.get(job.id)
            if other is None:
                mine = self._making[job.id] = threading.Event()
        if other is not None:
            other.wait(MAKING_WAIT_SECONDS)
            with Session(self.engine) as session:
                found = session.get(JobTrackingRow, job.id)
            return (found, False) if found is not None else self._make_run(job, stored, nodes)
        try:
            return self._make_run(job, stored, nodes)
        finally:
            with self._lock:
                del self._making[job.id]
            mine.set()

    def _make_run(self, job: _Job, stored: str, nodes: list[str] | None) -> tuple[JobTrackingRow, bool]:
        """The job's row after making its run (tagged with ``nodes`` if known) and recording it, and
        whether that run is the one recorded: another server process may have recorded one first, or an
        earlier process made one and was killed before recording it (adopted, not made again)."""
        from mlflow.entities import RunTag
        from mlflow.exceptions import MlflowException

        tags = [
            RunTag(k, v)
            for k, v in run_tags(job.id, job.tenant, job.spec, job.attempt, job.queue, nodes).items()
        ]

        def create(experiment_id: str) -> Any:
            return self.stores.tracking.create_run(
                experiment_id=experiment_id,
                user_id=job.tenant,
                start_time=int(self.clock() * 1000),
                tags=tags,
                run_name=f"{job.spec.name}-{job.id}",
            )

        experiment_id = self._experiment(stored, job.tenant)
        orphan = self._orphan(experiment_id, job) if job.submitted_at < self._since else None
        if orphan is not None:
            run_id, attempt, ours = orphan.info.run_id, int(orphan.data.tags.get("corral.attempt", 0)), False
        else:
            try:
                run = create(experiment_id)
            except MlflowException:  # the experiment was deleted or made again since it was looked up
                with self._lock:
                    self._experiments.pop(stored, None)
                experiment_id = self._experiment(stored, job.tenant)
                run = create(experiment_id)
            run_id, attempt, ours = run.info.run_id, job.attempt, True
        token_id = new_token_id()
        row = JobTrackingRow(
            job_id=job.id,
            tenant=job.tenant,
            experiment_id=experiment_id,
            run_id=run_id,
            attempt=attempt,
            token_id=token_id,
            token_digest=secret_digest(token_secret(self.key, token_id)),
            created_at=self.clock(),
        )
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                session.add(row)
        except IntegrityError:  # another thread or server process recorded the job's run first
            if ours:
                self.stores.tracking.delete_run(run_id)
            with Session(self.engine) as session:
                found = session.get(JobTrackingRow, job.id)
            if found is None:
                raise
            return found, False
        return row, ours

    def _orphan(self, experiment_id: str, job: _Job) -> Any:
        """The live run an earlier server process made for ``job`` and was killed before recording."""
        from mlflow.entities import ViewType

        found = self.stores.tracking.search_runs(
            [experiment_id],
            f"tags.`corral.job_id` = '{job.id}'",
            ViewType.ACTIVE_ONLY,
            max_results=1,
        )
        return found[0] if found else None

    def _tag(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        for tag, value in tags.items():
            self.stores.tracking.set_tag(run_id, RunTag(tag, value))

    def _next_attempt(self, row: JobTrackingRow, pod: DesiredPod, nodes: list[str], shown: str) -> JobRun:
        token_id = new_token_id()
        self._tag(row.run_id, {"corral.attempt": str(pod.attempt), "corral.node": ",".join(nodes)})
        with Session(self.engine) as session, session.begin():
            stored = session.get(JobTrackingRow, pod.job_id, with_for_update=True)
            if stored is not None and stored.attempt < pod.attempt:
                stored.attempt, stored.token_id = pod.attempt, token_id
                stored.token_digest = secret_digest(token_secret(self.key, token_id))
            elif stored is not None:
                token_id = stored.token_id
        return JobRun(pod.job_id, pod.attempt, shown, row.run_id, token_id)

    def _experiment(self, stored: str, tenant: str) -> str:
        from mlflow.entities import ExperimentTag
        from mlflow.exceptions import MlflowException

        with self._lock:
            known = self._experiments.get(stored)
        if known is not None and known[1] > time.monotonic():
            return known[0]
        found = self.stores.tracking.get_experiment_by_name(stored)
        if found is not None:
            experiment_id = str(found.experiment_id)
        else:
            try:
                experiment_id = str(
                    self.stores.tracking.create_experiment(
                        stored, tags=[ExperimentTag("corral.tenant", tenant)]
                    )
                )
            except MlflowException:  # made meanwhile by a job of the same queue
                again = self.stores.tracking.get_experiment_by_name(stored)
                if again is None:
                    raise
                experiment_id = str(again.experiment_id)
        with self._lock:
            self._experiments[stored] = (experiment_id, time.monotonic() + EXPERIMENT_CACHE_SECONDS)
        return experiment_id

    def authenticate(self, token: str) -> JobCaller | None:
        """The job attempt a job token belongs to, while that attempt runs; None otherwise."""
        now = time.monotonic()
        with self._lock:
            cached = self._callers.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        caller = self._lookup(token)
        with self._lock:
            if len(self._callers) > 10_000:
                self._callers.clear()
            self._callers[token] = (caller, now + TOKEN_CACHE_SECONDS)
        return caller

    def _lookup(self, token: str) -> JobCaller | None:
        parts = split_job_token(token)
        if parts is None:
            return None
        token_id, secret = parts
        with Session(self.engine) as session:
            found = session.execute(
                select(JobTrackingRow.token_digest, JobRow.id, JobRow.tenant, JobRow.attempt, JobRow.status)
                .join(JobRow, JobRow.id == JobTrackingRow.job_id)
                .where(JobTrackingRow.token_id == token_id)
            ).first()
        if found is None or not hmac.compare_digest(found.token_digest, secret_digest(secret)):
            return None
        if found.status != "running":
            return None
        return JobCaller(found.id, found.tenant, found.attempt)

    def sweep(self) -> None:
        """End the runs of jobs that ended (FINISHED, FAILED or KILLED); a run MLflow cannot end now is
        ended after a later round."""
        from mlflow.entities import RunStatus

        with Session(self.engine) as session:
            ended = session.execute(
                select(JobTrackingRow.job_id, JobTrackingRow.run_id, JobRow.status, JobRow.ended_at)
                .join(JobRow, JobRow.id == JobTrackingRow.job_id)
                .where(JobTrackingRow.ended_status.is_(None), JobRow.status.in_(RUN_STATUS))
            ).all()
        finals: dict[str, str] = {}
        for job_id, run_id, status, ended_at in ended:
            final = RUN_STATUS[status]
            try:
                end = int((ended_at or self.clock()) * 1000)
                self.stores.tracking.update_run_info(run_id, RunStatus.from_string(final), end, None)
            except Exception:
                log.exception("job %s: its MLflow run could not be ended; trying again", job_id)
                continue
            finals[job_id] = final
        if finals:  # one transaction for all: a burst's sweep ends dozens of runs
            with Session(self.engine) as session, session.begin():
                rows = [{"job": job_id, "final": final} for job_id, final in finals.items()]
                session.execute(_ENDED, rows)

    def job_run(self, job_id: str) -> JobTrackingRow | None:
        with Session(self.engine) as session:
            return session.get(JobTrackingRow, job_id)


def gpu_request(spec: JobSpec) -> str:
    """A pod's GPUs as a spec writes them: ``0``, ``2``, ``0.5``, ``A100|H100:4``."""
    gpus: dict[str, Any] = spec.resources.model_dump(mode="json")["gpus"]
    count = gpus["count"] if gpus["milli"] >= 1000 else gpus["milli"] / 1000
    models = "|".join(gpus["models"] or ())
    return f"{models}:{count:g}" if models else f"{count:g}"


def run_tags(
    job_id: str, tenant: str, spec: JobSpec, attempt: int, queue: str, nodes: list[str] | None
) -> dict[str, str]:
    """What a job's run is tagged with: which job, attempt, tenant, queue, GPUs, nodes (None: not
    placed yet, tagged at its start), code and pipeline step produced what it logs."""
    command = spec.command if isinstance(spec.command, str) else "\0".join(spec.command)
    tags = {
        "corral.job_id": job_id,
        "corral.job_name": spec.name,
        "corral.attempt": str(attempt),
        "corral.tenant": tenant,
        "corral.queue": queue,
        "corral.pods": str(spec.pods),
        "corral.gpus": gpu_request(spec),
        "corral.command_sha256": hashlib.sha256(command.encode()).hexdigest(),
        "mlflow.source.name": spec.name,
        "mlflow.source.type": "JOB",
    }
    if nodes is not None:
        tags["corral.node"] = ",".join(nodes)
    if spec.code is not None:
        tags["corral.code"] = spec.code
    for variable, tag in PIPELINE_VARIABLES.items():
        if variable in spec.env:
            tags[tag] = spec.env[variable]
    return tags
