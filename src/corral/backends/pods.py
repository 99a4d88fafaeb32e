"""Running pods as local processes: what both the local backend and ``corral agent`` do on a machine.

A pod runs under a small shell wrapper that writes its exit code to a file; its pid is written next to
it. So whoever supervises the pods (this process, or the same program after a restart) can tell a pod
that still runs from one that ended, and how it ended, without having started it: pods are adopted, never
started twice.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from corral.core.units import MILLI_PER_GPU
from corral.spec.job import JobSpec


class DesiredPod(BaseModel):
    """One pod that should run on a node: which job and attempt, its GPUs, and the job's spec. Also what
    ``GET /api/v1/nodes/{name}/pods`` sends to that node's agent."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    attempt: int
    pod: int
    node: str
    gpus: tuple[int, ...]
    gpu_milli: int
    gpu_memory_gib: float
    cpu: float
    memory_gib: float
    spec: JobSpec

    def environment(self) -> dict[str, str]:
        """What the pod's process is told, beside the spec's ``env``: its GPUs, who it is, its share."""
        env = self.spec.env | {
            "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in self.gpus),
            "CORRAL_JOB_ID": self.job_id,
            "CORRAL_POD_INDEX": str(self.pod),
            "CORRAL_ATTEMPT": str(self.attempt),
            "CORRAL_GPU_FRACTION": f"{self.gpu_milli / MILLI_PER_GPU:g}" if self.gpus else "0",
            "CORRAL_GPU_MEMORY_GIB": f"{self.gpu_memory_gib:g}",
        }
        if self.spec.checkpoint is not None:
            env["CORRAL_CHECKPOINT_DIR"] = self.spec.checkpoint.dir
            env["CORRAL_CHECKPOINT_INTERVAL"] = f"{self.spec.checkpoint.interval:g}"
        return env

    @property
    def command_line(self) -> str:
        command = self.spec.command
        return command if isinstance(command, str) else shlex.join(command)

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.job_id, self.attempt, self.pod)


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


VANISHED_EXIT_CODE = 137
"""What a pod whose process disappeared without an exit code counts as: killed (128 + SIGKILL)."""


class PodRunner:
    def __init__(self, runs: Path, on_exit: Callable[[], None] | None = None) -> None:
        """``on_exit`` is called (from a watcher thread) as soon as a pod this runner started exits, so
        its supervisor can look now rather than at its next tick; adopted pods are seen at the next look."""
        self.runs = runs.resolve()  # pods run in their own folder: relative paths would break there
        self.on_exit = on_exit
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        """Pods this runner started, by pid; adopted pods are watched through the kernel."""

    def files(self, job_id: str, attempt: int, pod: int) -> PodFiles:
        return PodFiles(self.runs / job_id / f"attempt-{attempt}" / f"pod-{pod}")

    def ensure(self, desired: DesiredPod) -> int | None:
        """The pod's exit code if it has ended; else make sure it runs (start it, or adopt it)."""
        code = self.exit_code(desired)
        files = self.files(desired.job_id, desired.attempt, desired.pod)
        if code is None and not files.pid.exists():
            self._start(desired, files)
        return code

    def exit_code(self, desired: DesiredPod) -> int | None:
        """The pod's exit code if it has ended, else None (running, or never started); starts nothing."""
        files = self.files(desired.job_id, desired.attempt, desired.pod)
        if files.exit.exists():
            if files.pid.exists():
                child = self._children.pop(int(files.pid.read_text()), None)
                if child is not None:
                    child.wait(timeout=10)  # the wrapper exits right after writing the code
            text = files.exit.read_text().strip()
            return int(text) if text.lstrip("-").isdigit() else 1
        if files.pid.exists():
            if self.alive(int(files.pid.read_text())):
                return None
            # Gone without its wrapper writing a code (killed with it, or the machine restarted): a
            # failure, recorded so it is reported once, and never a silent second start.
            files.exit.write_text(f"{VANISHED_EXIT_CODE}\n")
            return VANISHED_EXIT_CODE
        return None

    def stop_others(self, wanted: set[tuple[str, int, int]]) -> None:
        """Stop every pod still running here that is not in ``wanted`` (cancelled, preempted, moved)."""
        if not self.runs.exists():
            return
        for pid_file in self.runs.glob("*/attempt-*/pod-*/pid"):
            job_id, attempt, pod = pid_file.parts[-4], pid_file.parts[-3], pid_file.parts[-2]
            key = (job_id, int(attempt.removeprefix("attempt-")), int(pod.removeprefix("pod-")))
            if key in wanted or pid_file.with_name("exit").exists():
                continue
            pid = int(pid_file.read_text())
            if self.alive(pid):
                try:
                    os.killpg(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                child = self._children.pop(pid, None)
                if child is not None:
                    child.wait(timeout=10)

    def read_log(self, job_id: str, pod: int) -> str | None:
        """The output of ``pod`` in the job's latest attempt here, or None when it never ran here."""
        attempts = sorted(
            self.runs.glob(f"{job_id}/attempt-*"), key=lambda p: int(p.name.removeprefix("attempt-"))
        )
        if not attempts:
            return None
        log = attempts[-1] / f"pod-{pod}" / "output.log"
        return log.read_text(errors="replace") if log.exists() else None

    def alive(self, pid: int) -> bool:
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

    def _start(self, desired: DesiredPod, files: PodFiles) -> None:
        spec = desired.spec
        files.folder.mkdir(parents=True, exist_ok=True)
        exit_file = shlex.quote(str(files.exit))
        wrapper = f"({desired.command_line}); echo $? > {exit_file}.tmp && mv {exit_file}.tmp {exit_file}"
        env = os.environ | desired.environment()
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
        if self.on_exit is not None:
            threading.Thread(target=self._watch, args=(process,), name="corral-pod-exit", daemon=True).start()

    def _watch(self, process: subprocess.Popen[bytes]) -> None:
        process.wait()  # reaps it; ``alive`` and ``ensure`` then read the return code Popen keeps
        if self.on_exit is not None:
            self.on_exit()
