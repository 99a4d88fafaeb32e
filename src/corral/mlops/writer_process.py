"""The server's side of the MLflow writer (``corral.mlops.writer``): starts it, restarts it, talks to it.

Why a child process over pipes, not MLflow's own tracking server behind the gate: the writes corral
makes are a handful of store calls (make runs, tag them, end them) that batch naturally, and a pipe
needs no port (nothing a job could reach without the gate's auth), no second HTTP hop for the gate's
own requests, and dies with the server: the writer exits when its stdin closes, which the kernel does
when the server exits or is killed (the pipe's ends are close-on-exec, so no pod holds them).

Answers come back on a reader thread of the server and complete ``Future``s (on a thread of their own,
in order), so a caller waits without holding the interpreter lock and decides how long it waits, or
does not wait and hooks what to do with the answer on it. If the writer dies, every command without
an answer fails with ``WriterUnavailable`` and the next command starts a new writer (at most one start
every ``RESTART_SECONDS``: a writer that cannot open MLflow's store is not started in a tight loop).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)

RESTART_SECONDS = 2.0
"""The least time between two starts of the writer."""
ENVIRONMENT = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "SQLITE_TMPDIR")
"""What the writer gets of the server's environment: what Python needs to find corral and MLflow, not
the server's tokens or cloud credentials (it never touches artifacts)."""


class WriterUnavailable(RuntimeError):
    """The writer is not running (it died, or is being started again) or did not answer in time."""


@dataclass(frozen=True)
class RunRequest:
    """One job's run to make (``RunWriter.make_runs``)."""

    job_id: str
    tenant: str
    experiment: str
    """The experiment's stored name (``<tenant>/<name>``), made if missing."""
    run_name: str
    start_ms: int
    attempt: int
    tags: dict[str, str]
    adopt: bool
    """Look for a live run tagged with this job first, and use it: one may have been made for it by a
    writer or server that was killed before the run was recorded."""


@dataclass(frozen=True)
class MadeRun:
    job_id: str
    experiment_id: str
    run_id: str
    attempt: int
    """The run's ``corral.attempt``: the request's, or the adopted run's."""
    made: bool
    """Made now (False: adopted)."""


@dataclass(frozen=True)
class RunEnd:
    run_id: str
    status: str
    """``FINISHED``, ``FAILED`` or ``KILLED``."""
    end_ms: int


@dataclass
class _Child:
    process: subprocess.Popen[bytes]
    ready: threading.Event = field(default_factory=threading.Event)
    failed: str | None = None
    pending: dict[int, Future[Any]] = field(default_factory=dict)
    reader: threading.Thread | None = None


class WriterProcess:
    def __init__(self, backend_uri: str) -> None:
        """``backend_uri``: MLflow's backend store, migrated already (the server opens it first)."""
        self.backend_uri = backend_uri
        self._child: _Child | None = None
        self._started_at = -RESTART_SECONDS
        self._lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._next_id = 0
        self._closed = False
        self._answers = ThreadPoolExecutor(1, thread_name_prefix="corral-mlflow-answers")
        """Completes the answers, in order, and runs what their callers hooked on them (recording runs
        in corral's store), so the reader never stops reading the writer's answers for that."""

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.process.pid if child is not None else None

    def start(self, timeout: float) -> bool:
        """Start the writer (if it is not running) and wait until it has opened MLflow's store; whether
        it did within ``timeout`` seconds."""
        with self._lock:
            child = self._running()
        return child.ready.wait(timeout) and child.failed is None

    def make_runs(self, runs: list[RunRequest]) -> Future[list[MadeRun | str]]:
        """A run for each request, in order, or the error (text) that kept one from being made."""
        answer = self._request("make_runs", {"runs": [asdict(run) for run in runs]})
        made: Future[list[MadeRun | str]] = Future()

        def parse(done: Future[Any]) -> None:
            error = done.exception()
            if error is not None:
                made.set_exception(error)
                return
            made.set_result([r["error"] if "error" in r else MadeRun(**r) for r in done.result()])

        answer.add_done_callback(parse)
        return made

    def end_runs(self, ends: list[RunEnd]) -> Future[list[str]]:
        """The ids of the runs ended."""
        return self._request("end_runs", {"ends": [asdict(end) for end in ends]})

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """Tag a run, without waiting: done before any command sent after it. Lost (and logged) if the
        writer is not running."""
        self._send("set_tags", {"tagged": [{"run_id": run_id, "tags": tags}]})

    def delete_run(self, run_id: str) -> None:
        """Delete a run, without waiting (a run made twice for one job: the one not recorded)."""
        self._send("delete_run", {"run_id": run_id})

    def settle(self, timeout: float) -> None:
        """Until every command sent so far is done (the writer runs them in order)."""
        self.end_runs([]).result(timeout)

    def close(self) -> None:
        """Stop the writer: its stdin closes, so it exits."""
        with self._lock:
            self._closed = True
            child, self._child = self._child, None
        if child is not None:
            _close(child)
            child.process.wait(10)
            if child.reader is not None:
                child.reader.join(10)
        self._answers.shutdown()

    def _send(self, op: str, args: dict[str, Any]) -> None:
        try:
            self._write({"id": None, "op": op, "args": args}, None)
        except WriterUnavailable as error:
            log.warning("MLflow writer: %s not done (%s)", op, error)

    def _request(self, op: str, args: dict[str, Any]) -> Future[Any]:
        answer: Future[Any] = Future()
        try:
            self._write({"op": op, "args": args}, answer)
        except WriterUnavailable as error:
            answer.set_exception(error)
        return answer

    def _write(self, command: dict[str, Any], answer: Future[Any] | None) -> None:
        with self._lock:
            child = self._running()
            if answer is not None:
                with self._pending_lock:
                    self._next_id += 1
                    command["id"] = self._next_id
                    child.pending[self._next_id] = answer
            try:
                assert child.process.stdin is not None
                child.process.stdin.write(json.dumps(command).encode() + b"\n")
                child.process.stdin.flush()
            except OSError as error:  # it died: this command is failed here, not by its reader
                if answer is not None:
                    with self._pending_lock:
                        child.pending.pop(command["id"], None)
                raise WriterUnavailable(f"the MLflow writer exited ({error})") from None

    def _running(self) -> _Child:
        """The running writer, started if there is none (``_lock`` held)."""
        if self._closed:
            raise WriterUnavailable("the MLflow writer was stopped")
        if self._child is not None and self._child.process.poll() is None:
            return self._child
        if time.monotonic() - self._started_at < RESTART_SECONDS:
            raise WriterUnavailable("the MLflow writer exited; it is started again shortly")
        if self._child is not None:
            _close(self._child)  # the exited writer's pipe
        self._started_at = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "corral.mlops.writer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=writer_environment(),
            close_fds=True,
        )
        child = self._child = _Child(process)
        assert process.stdin is not None
        process.stdin.write(json.dumps({"backend_uri": self.backend_uri}).encode() + b"\n")
        process.stdin.flush()
        child.reader = threading.Thread(
            target=self._read, args=(child,), name="corral-mlflow-writer", daemon=True
        )
        child.reader.start()
        return child

    def _read(self, child: _Child) -> None:
        """Complete the answers of ``child`` until it exits, then fail what it left unanswered."""
        assert child.process.stdout is not None
        for line in child.process.stdout:
            message = json.loads(line)
            if "ready" in message or "failed" in message:
                child.failed = message.get("failed")
                child.ready.set()
                continue
            with self._pending_lock:
                answer = child.pending.pop(message["id"], None)
            if answer is None:
                continue
            if "error" in message:
                error = WriterUnavailable(f"the MLflow writer failed: {message['error']}")
                self._answers.submit(answer.set_exception, error)
            else:
                self._answers.submit(answer.set_result, message["result"])
        child.process.stdout.close()
        code = child.process.wait()
        child.ready.set()
        with self._pending_lock:
            left, child.pending = child.pending, {}
        if not self._closed:
            log.warning("the MLflow writer exited (code %s); it is started again at the next write", code)
        for answer in left.values():
            self._answers.submit(
                answer.set_exception, WriterUnavailable(f"the MLflow writer exited (code {code})")
            )


def writer_environment() -> dict[str, str]:
    """The writer's environment: ``ENVIRONMENT`` of the server's, and MLflow's telemetry off."""
    env = {name: os.environ[name] for name in ENVIRONMENT if name in os.environ}
    return env | {"MLFLOW_DISABLE_TELEMETRY": "true"}


def _close(child: _Child) -> None:
    try:
        assert child.process.stdin is not None
        child.process.stdin.close()
    except OSError:
        pass
