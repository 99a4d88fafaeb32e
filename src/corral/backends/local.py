"""The local backend: every pod of a running job as a process on this machine, on its assigned GPUs.

After each reconcile round ``sync`` makes the processes match the store: it starts pods that should run
(``CUDA_VISIBLE_DEVICES`` set to their GPUs, a share's size in ``CORRAL_GPU_FRACTION`` and
``CORRAL_GPU_MEMORY_GIB``), stops pods of jobs that no longer should (cancelled, preempted), and records
jobs whose pods have all exited: finished when every pod exited 0, failed otherwise. Processes are run by
``PodRunner``, which adopts pods that kept running across a restart.

A pod's exit calls the runner's ``on_exit`` at once (the server sets the loop's poke), and the loop calls
``record_exits`` before each round, so the round that follows an exit frees its GPUs and starts the next
job: one round per exit, not one to notice it and another to use the room.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.backends.pods import DesiredPod, PodRunner
from corral.spec.job import JobSpec
from corral.store.jobs import JobStore, exit_outcome
from corral.store.schema import JobRow, PlacementRow


class LocalBackend:
    def __init__(self, store: JobStore, data_dir: Path, nodes: Collection[str] | None = None) -> None:
        """``nodes``: the nodes whose pods run here (None: all); pods of a Ray cluster's nodes do not."""
        self.store = store
        self.runner = PodRunner(data_dir / "runs")
        self.nodes = set(nodes) if nodes is not None else None

    def read_log(self, job_id: str, pod: int) -> str | None:
        return self.runner.read_log(job_id, pod)

    def sync(self) -> None:
        """Make local processes match the store (see the module docstring)."""
        desired = self._desired()
        self.runner.stop_others({pod.key for pod in desired})  # free GPUs before starting new pods
        for job_id, pods in _by_job(desired).items():
            self._finish_if_ended(job_id, [self.runner.ensure(pod) for pod in pods])

    def record_exits(self) -> None:
        """Record the jobs whose pods have all exited, starting nothing: what a round needs to know first."""
        for job_id, pods in _by_job(self._desired()).items():
            self._finish_if_ended(job_id, [self.runner.exit_code(pod) for pod in pods])

    def _desired(self) -> list[DesiredPod]:
        return [p for p in desired_pods(self.store) if self.nodes is None or p.node in self.nodes]

    def _finish_if_ended(self, job_id: str, exits: list[int | None]) -> None:
        if all(code is not None for code in exits):
            succeeded, reason = exit_outcome([code for code in exits if code is not None])
            self.store.finish(job_id, succeeded=succeeded, reason=reason)


def _by_job(pods: list[DesiredPod]) -> dict[str, list[DesiredPod]]:
    """Each job's pods, in pod order."""
    by_job: dict[str, list[DesiredPod]] = {}
    for pod in sorted(pods, key=lambda p: (p.job_id, p.pod)):
        by_job.setdefault(pod.job_id, []).append(pod)
    return by_job


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
            )
            for placement, job in session.execute(query)
        ]
