"""Tracking for every job: one MLflow run per job, its variables in each pod, its end with the job's.

A job gets a run in its tenant's experiment, tagged with what produced it, and a job token for its
attempt, before its pods start: ``make_ahead`` (after every reconcile round, off the loop's and the
start threads' way) makes them for the next ``runs_ahead`` waiting jobs, oldest first, so a start only
reads the job's row and tags the run with its nodes. A job that starts without one (it jumped the queue,
or the server runs Ray or Kubernetes clusters, whose pods get no variables) gets its run when its pods
are first handed out. A later attempt (a retry, a preemption, a lost node) logs into the same run: its
``corral.attempt`` tag moves on and a new token replaces the last one. ``sweep`` (after every reconcile
round) ends the runs of jobs that ended: FINISHED, FAILED or KILLED; a job cancelled before it started
ends its run made ahead as KILLED.

MLflow's writes are made by the writer process (``corral.mlops.writer``), in batches: they cost about
18 ms of Python per job, which on the server's threads held its interpreter lock for most of a burst.
This module decides what to write and records the runs in corral's store (``job_tracking``); the tokens
and the rows stay the server's.

A kill -9 of the server between the writer making a run and the server recording it, or of the writer
before its answer arrived, leaves a run no row names: for a job submitted before this server process
started, and for a job whose command got no answer, a run is first looked for by its ``corral.job_id``
tag and adopted, so one job never gets two.

MLflow (or the writer) being unavailable never stops a pod: the pod starts without the variables and
the error is logged; the next hand-out tries again, and a run the writer makes after the start gave up
waiting is still recorded (and ended with its job).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import Engine, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.backends.pods import DesiredPod
from corral.mlops import names
from corral.mlops.tokens import new_token_id, secret_digest, split_job_token, token_secret, token_text
from corral.mlops.writer_process import MadeRun, RunEnd, RunRequest, WriterProcess, WriterUnavailable
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
START_WAIT_SECONDS = 10.0
"""How long a start waits for the writer to make its job's run (or for the run ``make_ahead`` is making
for it) before its pods start without tracking (the run is still recorded when the writer answers,
and ended with the job)."""
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
        writer: WriterProcess,
        key: bytes,
        clock: Callable[[], float] = time.time,
        runs_ahead: int = 0,
    ) -> None:
        """``writer``: the process that makes, tags and ends runs in MLflow's store; ``runs_ahead``: how
        many waiting jobs ``make_ahead`` gives a run (0: none, when some pods never get tracking
        variables, as Ray's and Kubernetes' do not)."""
        self.engine = engine
        self.writer = writer
        self.key = key
        self.clock = clock
        self.runs_ahead = runs_ahead
        self._since = clock()
        """Jobs submitted before this may have a run from an earlier process that no row names."""
        self._doubtful: set[str] = set()
        """Jobs whose run a command to the writer may have made without its answer arriving (the writer
        died or was late): their next run is looked for by its tag before one is made."""
        self._ending: set[str] = set()
        """Runs a command to the writer is ending now: the next sweep leaves them alone."""
        self._runs: dict[tuple[str, int], JobRun] = {}
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
            row, ours = self._create_run(made, nodes)
            if ours:
                return JobRun(pod.job_id, row.attempt, shown, row.run_id, row.token_id)
        if row.attempt != pod.attempt:
            return self._next_attempt(row, pod, nodes, shown)
        self.writer.set_tags(row.run_id, {"corral.node": ",".join(nodes)})  # made ahead, before it had nodes
        return JobRun(pod.job_id, row.attempt, shown, row.run_id, row.token_id)

    def make_ahead(self) -> Future[int]:
        """Give the ``runs_ahead`` oldest waiting jobs a run each (those without one yet, nor one being
        made), tagged with everything but their nodes, in one command to the writer; without waiting
        for it: the answer (how many runs were made) is recorded when it comes, so the next round can
        ask for the next jobs meanwhile. A job whose run cannot be made now gets it at its start."""
        made: Future[int] = Future()
        if self.runs_ahead <= 0:
            made.set_result(0)
            return made
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
        jobs = []
        for found in waiting:
            try:
                spec = JobSpec.model_validate(found.spec)
            except ValueError:
                log.exception("job %s: its spec no longer reads; no MLflow run made ahead", found.id)
                continue
            jobs.append(
                _Job(found.id, found.tenant, spec, found.queue, found.attempt + 1, found.submitted_at)
            )
        with self._lock:  # not those made by a start since the query, or being made by one now
            jobs = [j for j in jobs if (j.id, j.attempt) not in self._runs and j.id not in self._making]
            events = {job.id: threading.Event() for job in jobs}
            self._making.update(events)
        if not jobs:
            made.set_result(0)
            return made
        answer, tenants = self._request_runs(jobs, None)

        def record(answer: Future[list[MadeRun | str]]) -> None:
            try:
                recorded = self._recorded(answer, jobs, tenants)
            except Exception as error:
                log.warning(
                    "no MLflow runs made ahead (%s); they are made at the jobs' starts instead", error
                )
                recorded = {}
            finally:
                self._made(events)
            made.set_result(sum(ours for _, ours in recorded.values()))

        answer.add_done_callback(record)
        return made

    def _create_run(self, job: _Job, nodes: list[str]) -> tuple[JobTrackingRow, bool]:
        """The job's row after making its run, unless another thread of this process is making it: then
        the row it recorded, once it has."""
        with self._lock:
            other = self._making.get(job.id)
            if other is None:
                mine = self._making[job.id] = threading.Event()
        if other is not None:
            answered = other.wait(START_WAIT_SECONDS)
            with Session(self.engine) as session:
                found = session.get(JobTrackingRow, job.id)
            if found is not None:
                return found, False
            if not answered:  # recorded when the writer answers
                raise WriterUnavailable(f"job {job.id}'s run is not made yet")
            with self._lock:  # the other failed: this start tries itself
                mine = self._making.setdefault(job.id, threading.Event())
        try:
            recorded = self._make_runs([job], nodes, START_WAIT_SECONDS)
        finally:
            self._made({job.id: mine})
        if job.id not in recorded:
            raise WriterUnavailable(f"the MLflow writer could not make job {job.id}'s run")
        return recorded[job.id]

    def _made(self, events: dict[str, threading.Event]) -> None:
        with self._lock:
            for job_id, event in events.items():
                if self._making.get(job_id) is event:
                    del self._making[job_id]
        for event in events.values():
            event.set()

    def _make_runs(
        self, jobs: list[_Job], nodes: list[str] | None, wait: float
    ) -> dict[str, tuple[JobTrackingRow, bool]]:
        """Make the jobs' runs (tagged with ``nodes`` if known) through the writer and record them: each
        job's row, and whether its run is the one recorded (another thread or server process may have
        recorded one first, or the run is one an earlier writer or server made and is adopted). If the
        writer does not answer within ``wait`` seconds the runs are recorded when it does."""
        answer, tenants = self._request_runs(jobs, nodes)
        try:
            answer.result(wait)
        except TimeoutError:
            self._doubt(jobs)
            answer.add_done_callback(partial(self._record_late, tenants))
            raise WriterUnavailable(f"the MLflow writer did not answer within {wait:g} s") from None
        except WriterUnavailable:
            pass  # doubted below
        return self._recorded(answer, jobs, tenants)

    def _request_runs(
        self, jobs: list[_Job], nodes: list[str] | None
    ) -> tuple[Future[list[MadeRun | str]], dict[str, str]]:
        """Ask the writer for the jobs' runs: its answer, and the jobs' tenants (to record them)."""
        now = int(self.clock() * 1000)
        tenants = {job.id: job.tenant for job in jobs}
        with self._lock:
            requests = [
                RunRequest(
                    job_id=job.id,
                    tenant=job.tenant,
                    experiment=experiment_name(job.tenant, job.spec, job.queue),
                    run_name=f"{job.spec.name}-{job.id}",
                    start_ms=now,
                    attempt=job.attempt,
                    tags=run_tags(job.id, job.tenant, job.spec, job.attempt, job.queue, nodes),
                    adopt=job.submitted_at < self._since or job.id in self._doubtful,
                )
                for job in jobs
            ]
        return self.writer.make_runs(requests), tenants

    def _recorded(
        self, answer: Future[list[MadeRun | str]], jobs: list[_Job], tenants: dict[str, str]
    ) -> dict[str, tuple[JobTrackingRow, bool]]:
        """The runs of a finished answer, recorded; ``WriterUnavailable`` (the jobs doubted) if the
        writer died before answering."""
        error = answer.exception()
        if error is not None:
            self._doubt(jobs)
            raise error
        return self._record([run for run in answer.result() if isinstance(run, MadeRun)], tenants)

    def _doubt(self, jobs: list[_Job]) -> None:
        with self._lock:
            self._doubtful.update(job.id for job in jobs)

    def _record_late(self, tenants: dict[str, str], answer: Future[list[MadeRun | str]]) -> None:
        """Record the runs of an answer that came after its caller stopped waiting, so that none is left
        running without a row (the sweep ends only runs that have one)."""
        if answer.exception() is None:
            self._record([run for run in answer.result() if isinstance(run, MadeRun)], tenants)

    def _record(self, made: list[MadeRun], tenants: dict[str, str]) -> dict[str, tuple[JobTrackingRow, bool]]:
        """Record the runs made, in one transaction if none was recorded meanwhile: each job's row, and
        whether its run was made now and is the one recorded (False: adopted, or another's recorded)."""
        rows = [self._row(run, tenants[run.job_id]) for run in made]
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                session.add_all(rows)
            recorded = {row.job_id: (row, run.made) for run, row in zip(made, rows, strict=True)}
        except IntegrityError:  # some job's run was recorded first by another thread or process
            recorded = {run.job_id: self._record_one(run, row) for run, row in zip(made, rows, strict=True)}
        with self._lock:
            self._doubtful.difference_update(recorded)
        return recorded

    def _record_one(self, run: MadeRun, row: JobTrackingRow) -> tuple[JobTrackingRow, bool]:
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                session.add(row)
            return row, run.made
        except IntegrityError:
            with Session(self.engine) as session:
                found = session.get(JobTrackingRow, run.job_id)
            if found is None:
                raise
            if run.made and found.run_id != run.run_id:
                self.writer.delete_run(run.run_id)
            return found, run.made and found.run_id == run.run_id

    def _row(self, run: MadeRun, tenant: str) -> JobTrackingRow:
        token_id = new_token_id()
        return JobTrackingRow(
            job_id=run.job_id,
            tenant=tenant,
            experiment_id=run.experiment_id,
            run_id=run.run_id,
            attempt=run.attempt,
            token_id=token_id,
            token_digest=secret_digest(token_secret(self.key, token_id)),
            created_at=self.clock(),
        )

    def _next_attempt(self, row: JobTrackingRow, pod: DesiredPod, nodes: list[str], shown: str) -> JobRun:
        token_id = new_token_id()
        self.writer.set_tags(row.run_id, {"corral.attempt": str(pod.attempt), "corral.node": ",".join(nodes)})
        with Session(self.engine) as session, session.begin():
            stored = session.get(JobTrackingRow, pod.job_id, with_for_update=True)
            if stored is not None and stored.attempt < pod.attempt:
                stored.attempt, stored.token_id = pod.attempt, token_id
                stored.token_digest = secret_digest(token_secret(self.key, token_id))
            elif stored is not None:
                token_id = stored.token_id
        return JobRun(pod.job_id, pod.attempt, shown, row.run_id, token_id)

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
        """End the runs of jobs that ended (FINISHED, FAILED or KILLED), in one command to the writer,
        without waiting: they are marked ended when it answers. A run that cannot be ended now is ended
        after a later round."""
        with Session(self.engine) as session:
            ended = session.execute(
                select(JobTrackingRow.job_id, JobTrackingRow.run_id, JobRow.status, JobRow.ended_at)
                .join(JobRow, JobRow.id == JobTrackingRow.job_id)
                .where(JobTrackingRow.ended_status.is_(None), JobRow.status.in_(RUN_STATUS))
            ).all()
        with self._lock:  # not those being ended now
            ended = [row for row in ended if row.run_id not in self._ending]
            self._ending.update(row.run_id for row in ended)
        if not ended:
            return
        finals = {run_id: (job_id, RUN_STATUS[status]) for job_id, run_id, status, _ in ended}
        ends = [
            RunEnd(run_id, RUN_STATUS[status], int((ended_at or self.clock()) * 1000))
            for _, run_id, status, ended_at in ended
        ]
        self.writer.end_runs(ends).add_done_callback(partial(self._mark_ended, finals))

    def _mark_ended(self, finals: dict[str, tuple[str, str]], answer: Future[list[str]]) -> None:
        """Mark the runs the writer ended, in one transaction (a burst's sweep ends dozens)."""
        try:
            error = answer.exception()
            if error is not None:
                log.warning(
                    "%d MLflow runs not ended yet (%s); trying again after a later round", len(finals), error
                )
                return
            done = answer.result()
            if done:
                with Session(self.engine) as session, session.begin():
                    rows = [{"job": finals[run_id][0], "final": finals[run_id][1]} for run_id in done]
                    session.execute(_ENDED, rows)
        finally:
            with self._lock:
                self._ending.difference_update(finals)

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
