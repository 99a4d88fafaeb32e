"""The local backend: every pod of a running job as a process on this machine, on its assigned GPUs.

After each reconcile round ``sync`` makes the processes match the store: it starts pods that should run
(``CUDA_VISIBLE_DEVICES`` set to their GPUs, a share's size in ``CORRAL_GPU_FRACTION`` and
``CORRAL_GPU_MEMORY_GIB``), stops pods of jobs that no longer should (cancelled, preempted), and records
jobs whose pods have all exited (one transaction for all that a look finds): finished when every pod
exited 0, failed otherwise. Processes are run by ``PodRunner``, which adopts pods that kept running across a restart, runs them as an unprivileged user
with a scrubbed environment, and kills a stopped pod's processes after its grace period.

The store frees a cancelled job's GPUs at once, so the next round may place a new pod on GPUs whose old
processes are still within their grace period. Such a pod waits here, its job running but its process not
started, until the old processes are gone: two pods never share a GPU the scheduler gave to one. A pod
that cannot start fails its job alone, with the reason; one job's trouble never stops a sync.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.backends.pod_starts import BackgroundStarts
from corral.backends.pods import DesiredPod, PodIdentities, PodRunner, Prepare
from corral.logs import DEFAULT_LOG_CAP
from corral.spec.job import JobSpec
from corral.store.code import CodeStore
from corral.store.jobs import JobAlreadyEnded, JobEnd, JobNotFound, JobStore, StaleAttempt, exit_outcome
from corral.store.pipelines import PipelineStore
from corral.store.schema import JobRow, PlacementRow
from corral.workdirs import PackedFolder

log = logging.getLogger(__name__)


class LocalBackend:
    def __init__(
        self,
        store: JobStore,
        data_dir: Path,
        nodes: Collection[str] | None = None,
        identities: PodIdentities | None = None,
        code: CodeStore | None = None,
        tracking: Callable[[list[DesiredPod]], list[DesiredPod]] | None = None,
        background_starts: bool = False,
        log_cap: int = DEFAULT_LOG_CAP,
    ) -> None:
        """``nodes``: the nodes whose pods run here (None: all); pods of a Ray cluster's nodes do not.
        ``identities``: who each tenant's pods run as (see ``PodRunner``); ``code``: the server's uploaded
        working folders, which pods of jobs with ``code`` start in a copy of; ``tracking`` gives pods their
        job's MLflow variables as they start (``corral.mlops.tracking``). ``background_starts``:
        ``sync`` hands pod starts to worker threads and returns (``BackgroundStarts``), as the server
        does; otherwise every pod has started when it returns. ``log_cap``: bytes of each pod's output
        served; the disk its file takes beyond twice that is given back on each sync."""
        self.store = store
        self.code = code
        self.outputs = PipelineStore(store.engine, store.clock)
        source = (lambda pod: code.path(pod.tenant, pod.spec.code or "")) if code is not None else None
        mounts = (lambda pod, digest: code.path(pod.tenant, digest)) if code is not None else None
        self.runner = PodRunner(data_dir / "runs", identities, source, mounts, log_cap=log_cap)
        self.runner.on_start = self._record_port
        self.starts = BackgroundStarts(self.runner) if background_starts else None
        self.nodes = set(nodes) if nodes is not None else None
        self.tracking = tracking

    def sync(self) -> None:
        """Make local processes match the store (see the module docstring)."""
        desired = self._desired()
        self.runner.stop_others({pod.key for pod in desired})  # free GPUs before starting new pods
        ensure = self.starts.ensure if self.starts is not None else self.runner.ensure
        prepare = self._tracked(desired)
        self._each_job(desired, lambda pod: ensure(pod, prepare))
        for pod in desired:  # adopted pods (a restart between a start and its record) are caught up
            if pod.spec.listen_port and pod.port is None and (port := self.runner.port(pod)) is not None:
                self._record_port(pod, port)
            self.runner.free_dropped_output(pod)

    def _record_port(self, pod: DesiredPod, port: int) -> None:
        """Keep the port a pod was given with its placement (its start is reported directly)."""
        try:
            self.store.record_port(pod.job_id, pod.attempt, pod.pod, port)
        except (JobNotFound, StaleAttempt):
            pass  # stopped meanwhile: the next sync stops the pod

    def record_exits(self) -> None:
        """Record the jobs whose pods have all exited, starting nothing: what a round needs to know first."""
        self._each_job(self._desired(), self.runner.exit_code)

    def _tracked(self, desired: list[DesiredPod]) -> Prepare | None:
        """What gives a pod about to start its job's MLflow variables (``tracking``, told all the job's
        pods, for their nodes): only pods that start need them, and with background starts the run is
        made on a start thread, not on the loop's."""
        tracking = self.tracking
        if tracking is None:
            return None

        def attach(pod: DesiredPod) -> DesiredPod:
            tracked = tracking([p for p in desired if p.job_id == pod.job_id])
            return next(p for p in tracked if p.key == pod.key)

        return attach

    def _desired(self) -> list[DesiredPod]:
        return [p for p in desired_pods(self.store) if self.nodes is None or p.node in self.nodes]

    def _each_job(self, desired: list[DesiredPod], look: Callable[[DesiredPod], int | None]) -> None:
        """``look`` at each job's pods and record the jobs that ended, all in one transaction; one job's
        error never stops the rest."""
        by_job: dict[str, list[DesiredPod]] = {}
        for pod in sorted(desired, key=lambda p: (p.job_id, p.pod)):
            by_job.setdefault(pod.job_id, []).append(pod)
        ends: list[JobEnd] = []
        for job_id, pods in by_job.items():
            try:
                end = self._end_of(job_id, pods, look)
            except Exception:
                log.exception(
                    "job %s: its pods could not be synced; trying again after the next round", job_id
                )
                continue
            if end is not None:
                ends.append(end)
        if ends:
            self._record(ends)

    def _record(self, ends: list[JobEnd]) -> None:
        try:
            self.store.finish_many(ends)  # a job cancelled meanwhile is left out: its pods stop next sync
        except Exception:  # one job's trouble must not hold back the others': each on its own
            for end in ends:
                try:
                    self.store.finish(end.job_id, succeeded=end.succeeded, reason=end.reason)
                except JobAlreadyEnded:
                    pass
                except Exception:
                    log.exception(
                        "job %s: its end could not be recorded; looking again after the next round",
                        end.job_id,
                    )

    def _end_of(
        self, job_id: str, pods: list[DesiredPod], look: Callable[[DesiredPod], int | None]
    ) -> JobEnd | None:
        """How the job ended, if all its pods have (or one could not start); None while any runs."""
        exits: list[int | None] = []
        for pod in pods:
            code = look(pod)
            if code is not None and (error := self.runner.start_error(pod)) is not None:
                # Its other pods are no longer desired once it fails, so they are stopped next sync.
                return JobEnd(job_id, succeeded=False, reason=f"pod {pod.pod} did not start: {error}")
            exits.append(code)
        if any(code is None for code in exits):
            return None
        succeeded, reason = exit_outcome([code for code in exits if code is not None])
        if succeeded and pods[0].spec.outputs:
            self._store_outputs(pods[0])  # before the end is recorded: a dependent step mounts them
        return JobEnd(job_id, succeeded=succeeded, reason=reason)

    def _store_outputs(self, pod: DesiredPod) -> None:
        """Keep pod 0's declared outputs in the server's archive store, as its tenant's."""
        code = self.code
        if code is None:
            return

        def keep(name: str, packed: PackedFolder) -> None:
            code.keep(pod.tenant, packed.digest, packed.data, lambda: self.store.codes_in_use(pod.tenant))
            self.outputs.record_output(pod.job_id, name, packed.digest, len(packed.data))

        self.runner.store_outputs(pod, keep)


def desired_pods(store: JobStore, node: str | None = None) -> list[DesiredPod]:
    """The pods of running jobs (on ``node`` only, when given), as the store has them."""
    with Session(store.engine) as session:
        query = select(PlacementRow, JobRow).join(JobRow, JobRow.id == PlacementRow.job_id)
        query = query.where(JobRow.status == "running")
        if node is not None:
            query = query.where(PlacementRow.node == node)
        return [
            DesiredPod(
                job_id=job.id,
                node=placement.node,
                attempt=job.attempt,
                pod=placement.pod,
                gpus=tuple(placement.gpus),
                gpu_milli=placement.gpu_milli,
                gpu_memory_gib=placement.gpu_memory_gib,
                cpu=placement.cpu,
                memory_gib=placement.memory_gib,
                spec=JobSpec.model_validate(job.spec),
                tenant=job.tenant,
                port=placement.port,
            )
            for placement, job in session.execute(query)
        ]
