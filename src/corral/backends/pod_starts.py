"""Starting pods on worker threads, so the thread that runs reconcile rounds does not wait for them.

Starting a pod is a fork and exec, a few folders and files, and the wait until the child has exec'd:
with jobs that take no time, a third of the reconcile loop's thread went to it, and the next round (which
records those pods' exits and starts the next jobs) waited behind it; with MLflow on, making each job's
run (``prepare``) took as much again. ``BackgroundStarts.ensure`` does
what ``PodRunner.ensure`` does but hands the start itself to a small pool and returns at once; a pod whose
start is in flight is never handed over again, so no pod starts twice. Whether a pod may start (its GPUs
not held by a stopping pod) is decided on the caller's thread, after ``stop_others``, as before.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait

from corral.backends.pods import DesiredPod, PodRunner, Prepare

log = logging.getLogger(__name__)

WORKERS = 2
"""Pods started at once: enough to overlap one pod's exec with the next one's setup."""


class BackgroundStarts:
    def __init__(self, runner: PodRunner, workers: int = WORKERS) -> None:
        self.runner = runner
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="corral-pod-start")
        self._lock = threading.Lock()
        self._in_flight: dict[tuple[str, int, int], Future[None]] = {}

    def ensure(self, desired: DesiredPod, prepare: Prepare | None = None) -> int | None:
        """The pod's exit code if it has ended; else make sure it runs or is being started (``prepare``
        runs on the worker thread, right before the start: see ``Prepare``)."""
        with self._lock:
            if desired.key in self._in_flight:
                return None
        code = self.runner.exit_code(desired)
        files = self.runner.files(desired.job_id, desired.attempt, desired.pod)
        if code is not None or files.pid.exists() or self.runner.held(desired):
            return code
        with self._lock:
            self._in_flight[desired.key] = self._pool.submit(self._start, desired, prepare)
        return None

    def wait(self) -> None:
        """Until every start handed over so far is done (tests, shutdown)."""
        with self._lock:
            pending = list(self._in_flight.values())
        wait(pending)

    def _start(self, desired: DesiredPod, prepare: Prepare | None) -> None:
        try:
            failed = self.runner.start(prepare(desired) if prepare is not None else desired) is not None
        except Exception:
            log.exception(
                "job %s: pod %d could not be started; trying again after the next round",
                desired.job_id,
                desired.pod,
            )
            failed = False
        finally:
            with self._lock:
                del self._in_flight[desired.key]
        if failed and self.runner.on_exit is not None:
            self.runner.on_exit()  # it ended before it began: the loop records that now
