"""The local backend: every pod of a running job as a process on this machine, on its assigned GPUs.

After each reconcile round ``sync`` makes the processes match the store: it starts pods that should run
(``CUDA_VISIBLE_DEVICES`` set to their GPUs, a share's size in ``CORRAL_GPU_FRACTION`` and
``CORRAL_GPU_MEMORY_GIB``), stops pods of jobs that no longer should (cancelled, preempted), and records
jobs whose pods have all exited: finished when every pod exited 0, failed otherwise.

Each pod runs under a small shell wrapper that writes its exit code to a file, and its pid is written
next to it, so a restarted server re-adopts pods that kept running instead of starting them twice, and
learns how pods ended while it was down.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core.units import MILLI_PER_GPU
from corral.spec.job import JobSpec
from corral.store.jobs import JobStore
from corral.store.schema import JobRow, PlacementRow


@dataclass(frozen=True)
class PodFiles:
    folder: Path

    @property
    def log(self) -> Path:
        return self.folder / "output.log"

    @property
    def pid(self) -> Path:
        return self.folder / "pid"

    @property
    def exit(self) -> Path:
        return self.folder / "exit"


class LocalBackend:
    def __init__(self, store: JobStore, data_dir: Path) -> None:
        self.store = store
        self.runs = data_dir / "runs"
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        """Pods this backend started, by pid; pods adopted after a restart are watched through the kernel."""

    def files(self, job_id: str, pod: int, attempt: int) -> PodFiles:
        return PodFiles(self.runs / job_id / f"attempt-{attempt}" / f"pod-{pod}")

    def read_log(self, job_id: str, pod: int) -> str | None:
        """The output of ``pod`` in the job's latest attempt, or None when it never ran here."""
        attempts = sorted(
            self.runs.glob(f"{job_id}/attempt-*"), key=lambda p: int(p.name.removeprefix("attempt-"))
        )
        if not attempts:
            return None
        log = attempts[-1] / f"pod-{pod}" / "output.log"
        return log.read_text(errors="replace") if log.exists() else None

    def sync(self) -> None:
        """Make local processes match the store (see the module docstring)."""
        with Session(self.store.engine) as session:
            running = {
                row.id: row for row in session.scalars(select(JobRow).where(JobRow.status == "running"))
            }
            placements = list(
                session.scalars(select(PlacementRow).where(PlacementRow.job_id.in_(list(running))))
            )
            session.expunge_all()
        by_job: dict[str, list[PlacementRow]] = {}
        for placement in placements:
            by_job.setdefault(placement.job_id, []).append(placement)
        for job_id, rows in by_job.items():
            job = running[job_id]
            exits = [self._ensure(job, placement) for placement in sorted(rows, key=lambda p: p.pod)]
            if all(code is not None for code in exits):
                failed = [(pod, code) for pod, code in enumerate(exits) if code != 0]
                reason = ", ".join(f"pod {pod} exited with code {code}" for pod, code in failed) or None
                self.store.finish(job_id, succeeded=not failed, reason=reason)
        self._stop_unwanted({job_id: row.attempt for job_id, row in running.items()})

    def _ensure(self, job: JobRow, placement: PlacementRow) -> int | None:
        """The pod's exit code if it has ended; else make sure it runs (start it or adopt it)."""
        files = self.files(job.id, placement.pod, job.attempt)
        if files.exit.exists():
            if files.pid.exists():
                child = self._children.pop(int(files.pid.read_text()), None)
                if child is not None:
                    child.wait(timeout=10)  # the wrapper exits right after writing the code
            text = files.exit.read_text().strip()
            return int(text) if text.lstrip("-").isdigit() else 1
        if files.pid.exists() and self._alive(int(files.pid.read_text())):
            return None
        self._start(job, placement, files)
        return None

    def _start(self, job: JobRow, placement: PlacementRow, files: PodFiles) -> None:
        spec = JobSpec.model_validate(job.spec)
        files.folder.mkdir(parents=True, exist_ok=True)
        command = spec.command if isinstance(spec.command, str) else shlex.join(spec.command)
        wrapper = f"({command}); echo $? > {shlex.quote(str(files.exit))}.tmp && mv {shlex.quote(str(files.exit))}.tmp {shlex.quote(str(files.exit))}"
        env = (
            os.environ
            | spec.env
            | {
                "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in placement.gpus),
                "CORRAL_JOB_ID": job.id,
                "CORRAL_POD_INDEX": str(placement.pod),
                "CORRAL_ATTEMPT": str(job.attempt),
                "CORRAL_GPU_FRACTION": f"{placement.gpu_milli / MILLI_PER_GPU:g}" if placement.gpus else "0",
                "CORRAL_GPU_MEMORY_GIB": f"{placement.gpu_memory_gib:g}",
            }
        )
        if spec.checkpoint is not None:
            env["CORRAL_CHECKPOINT_DIR"] = spec.checkpoint.dir
        workdir = Path(spec.workdir).expanduser() if spec.workdir else files.folder
        with open(files.log, "ab") as log:
            process = subprocess.Popen(
                ["/bin/sh", "-c", wrapper],
                cwd=workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, so stopping it stops its children
            )
        self._children[process.pid] = process
        files.pid.write_text(str(process.pid))

    def _stop_unwanted(self, running: dict[str, int]) -> None:
        """Stop pods the store no longer wants: their job was cancelled, preempted or failed, or they
        belong to an earlier attempt of a job that runs again."""
        if not self.runs.exists():
            return
        for pid_file in self.runs.glob("*/attempt-*/pod-*/pid"):
            job_id, attempt = pid_file.parts[-4], int(pid_file.parts[-3].removeprefix("attempt-"))
            if running.get(job_id) == attempt or pid_file.with_name("exit").exists():
                continue
            pid = int(pid_file.read_text())
            if self._alive(pid):
                try:
                    os.killpg(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                child = self._children.pop(pid, None)
                if child is not None:
                    child.wait(timeout=10)

    def _alive(self, pid: int) -> bool:
        child = self._children.get(pid)
        if child is not None:
            if child.poll() is None:
                return True
            del self._children[pid]  # reaped
            return False
        try:
            os.kill(pid, 0)  # adopted after a restart: ask the kernel
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
