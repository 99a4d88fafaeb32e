"""Running pods as local processes: what both the local backend and ``corral agent`` do on a machine.

Each pod has a folder ``<runs>/<job>/attempt-<n>/pod-<i>``, the runner's: the pod's output, its pid, a
record of its process (start time, node, GPUs, grace period) and its exit code. Inside it ``work`` is the
pod's own: its home, temporary and default working directory, owned by the user it runs as.

A pod runs under a small shell wrapper that writes its exit code to a file; so whoever supervises the
pods (this process, or the same program after a restart) can tell a pod that still runs from one that
ended, and how it ended, without having started it: pods are adopted, never started twice. Liveness is
read before the exit file: a pod that ends between the two readings is seen ending, never as vanished.
A runner killed between the spawn and writing the pid leaves a ``starting`` mark (written before the
spawn) and, if the wrapper ran, its ``exit.began``: the next runner adopts the wrapper it finds by the
exit file's path, counts a pod that began and is gone as vanished, and starts only one that never began.

Isolation (docs/security.md): the wrapper gets none of the runner's environment; the pod gets a small
allowlist of it (PATH, locale, time zone), HOME and TMPDIR set to its ``work`` folder, its spec's ``env``
and corral's variables. When the runner is root the wrapper stays root and only the command drops to the
pod's user (``setpriv``, no other groups, no new privileges), so the pod can neither write its own exit
code nor signal the wrapper; the pod's environment reaches it through variables the root wrapper does not
interpret (``CORRAL_POD_ENV_<name>``), so nothing a spec sets (``LD_PRELOAD``, ``PATH``) runs as root.

Stopping a pod signals every process of its session: SIGTERM, then SIGKILL once its spec's
``stop_grace_period`` has passed, checked on each sync so stopping never blocks one. Until none of its
processes is left its GPUs are held: no pod is started on them. A pod that cannot be started (its workdir
does not exist, the kernel refuses its command) fails alone, with the reason, and never stops the others.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
from pydantic import BaseModel, ConfigDict, Field

from corral.backends.pod_users import NoPodUser, PodIdentity, PodUsers
from corral.core.units import MILLI_PER_GPU
from corral.errors import CorralError
from corral.log_files import free_dropped
from corral.logs import DEFAULT_LOG_CAP
from corral.pipelines.artifacts import store_outputs
from corral.spec.job import DEFAULT_STOP_GRACE, ENV_NAME, JobSpec
from corral.workdirs import PackedFolder, below, unpack


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
    tenant: str = "default"
    """Whose job it is: on a node set up per tenant, the pod runs as that tenant's Unix user."""
    port: int | None = None
    """The port the server has recorded for the pod (``JobSpec.listen_port``; None: not reported yet)."""
    tracking: dict[str, str] = Field(default_factory=dict)
    """``MLFLOW_*`` variables for its job's run and job-scoped token (docs/mlops.md), set by the server
    that hands the pod out; empty when tracking is off or MLflow could not be reached."""

    def environment(self) -> dict[str, str]:
        """What the pod's process is told, beside the spec's ``env``: its GPUs, who it is, its share, its
        MLflow run. A spec naming its own ``MLFLOW_TRACKING_URI`` logs there and gets none of corral's
        tracking variables (a run id or token of corral's would mean nothing to that server)."""
        tracking = {} if "MLFLOW_TRACKING_URI" in self.spec.env else self.tracking
        env = (
            tracking
            | self.spec.env
            | {
                "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in self.gpus),
                "CORRAL_JOB_ID": self.job_id,
                "CORRAL_POD_INDEX": str(self.pod),
                "CORRAL_ATTEMPT": str(self.attempt),
                "CORRAL_GPU_FRACTION": f"{self.gpu_milli / MILLI_PER_GPU:g}" if self.gpus else "0",
                "CORRAL_GPU_MEMORY_GIB": f"{self.gpu_memory_gib:g}",
            }
        )
        if self.spec.checkpoint is not None:
            env["CORRAL_CHECKPOINT_DIR"] = self.spec.checkpoint.dir
            env["CORRAL_CHECKPOINT_INTERVAL"] = f"{self.spec.checkpoint.interval:g}"
        return env

    @property
    def spec_command_line(self) -> str:
        """The spec's command as one shell line."""
        command = self.spec.command
        return command if isinstance(command, str) else shlex.join(command)

    @property
    def command_line(self) -> str:
        """The spec's command as one shell line, after its ``setup`` (which must succeed first): where
        setups are not cached (Ray actors), every pod runs it."""
        if self.spec.setup is None:
            return self.spec_command_line
        return f"{{ {self.spec.setup}\n}} && {{ {self.spec_command_line}\n}}"

    @property
    def setup_key(self) -> str:
        """What a cached setup's result depends on: its commands, the code it runs in (the upload's
        digest or the node's workdir, and the outputs it mounts), the image and the spec's environment. Pods agreeing on all of
        these on one node, of one tenant, share one setup run."""
        spec = self.spec
        mounts = [(mount.digest, mount.path) for mount in spec.mounts]  # they are in the folder it keeps
        parts = [spec.setup, spec.code, spec.workdir, spec.image, sorted(spec.env.items()), mounts]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.job_id, self.attempt, self.pod)


@dataclass(frozen=True)
class PodFiles:
    folder: Path

    @property
    def work(self) -> Path:
        """The pod's own folder: its home and default working directory."""
        return self.folder / "work"

    @property
    def log(self) -> Path:
        return self.folder / "output.log"

    @property
    def pid(self) -> Path:
        return self.folder / "pid"

    @property
    def process(self) -> Path:
        """A ``PodProcess`` as JSON: what stopping the pod needs once it is no longer desired."""
        return self.folder / "process.json"

    @property
    def exit(self) -> Path:
        return self.folder / "exit"

    @property
    def port(self) -> Path:
        """The port chosen for it where it runs (``JobSpec.listen_port``), kept for whoever reports it."""
        return self.folder / "port"

    @property
    def starting(self) -> Path:
        """Written right before the pod's process is spawned: a pod that has it but no pid file may be
        running though its pid was never written (the runner was killed in between)."""
        return self.folder / "starting"

    @property
    def began(self) -> Path:
        """Written by the wrapper (root's, when pods switch users) before it runs the command: a pod with
        no process and no exit code that has it ran, and never runs again."""
        return self.folder / "exit.began"

    @property
    def start_error(self) -> Path:
        return self.folder / "start-error"

    @property
    def stopping(self) -> Path:
        """When it was first asked to stop (Unix seconds): its grace period runs from then."""
        return self.folder / "stopping"

    @property
    def gone(self) -> Path:
        """None of its processes is left: nothing to stop, no GPU held."""
        return self.folder / "gone"


class PodProcess(BaseModel):
    """The pod's session leader (its wrapper) and what it holds: pid reuse cannot fool a later reading,
    which checks the leader's start time."""

    pid: int
    created: float
    """Its start time as psutil reads it; negative: unknown (a pod started before records were kept)."""
    node: str
    gpus: tuple[int, ...]
    grace: float = DEFAULT_STOP_GRACE


VANISHED_EXIT_CODE = 137
"""What a pod whose process disappeared without an exit code counts as: killed (128 + SIGKILL)."""
START_FAILED_EXIT_CODE = 127
"""What a pod that could not be started counts as (the shell's "could not run the command")."""
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The only environment the wrapper has: what it runs (``mv``, ``setpriv``) is found here."""
HOST_VARIABLES = frozenset({"PATH", "LANG", "LANGUAGE", "TZ"})
"""What a pod is told of the runner's environment, with ``LC_*``; nothing else (tokens, keys) leaks."""
ENV_PREFIX = "CORRAL_POD_ENV_"
COMMAND_VARIABLE = "CORRAL_POD_COMMAND"
"""Where the wrapper passes the pod's command line: in its environment, which only root may read, not in
its arguments, which every process on the machine reads (``/proc/<pid>/cmdline``): another tenant's pod
would see the command, its secrets and scripts included."""
CREATE_TIME_TOLERANCE = 0.5
"""Seconds a process's start time may differ from the recorded one and still be the same process."""

CACHED_SETUP = """\
export PATH="$CORRAL_SETUP_DIR/venv/bin:$PATH" && \
{{ exec 9>"$CORRAL_SETUP_DIR/.lock" && flock 9 && if [ -e "$CORRAL_SETUP_DIR/.done" ]; then {restore}
else find "$CORRAL_SETUP_DIR" -mindepth 1 -maxdepth 1 ! -name .lock -exec rm -rf {{}} + && {{ {setup}
}} && {snapshot}touch "$CORRAL_SETUP_DIR/.done"; fi; }} && exec 9>&- && \
if [ -d "$CORRAL_SETUP_DIR/venv/bin" ]; then export VIRTUAL_ENV="$CORRAL_SETUP_DIR/venv"; fi && \
{{ {command}
}}"""
"""A pod's command line where its node caches setups: the first pod of a setup key runs the setup,
holding the key's lock (pods starting together wait for it), and marks it done; later pods skip it. A
setup that failed or was stopped leaves no mark and runs again, in a folder emptied first. A ``venv``
in ``$CORRAL_SETUP_DIR`` comes first on ``PATH``, from the setup's next command on (so its ``pip``
installs there) and in every pod of the key."""
SNAPSHOT_POD_FOLDER = (
    'mkdir "$CORRAL_SETUP_DIR/work" && tar -C {folder} --exclude=./.cache -cf - . '
    '| tar -C "$CORRAL_SETUP_DIR/work" -xf - && '
)
"""After the setup: the pod's folder as it left it (its code and what it wrote there; not caches)."""
RESTORE_POD_FOLDER = 'find {folder} -mindepth 1 -delete && cp -a "$CORRAL_SETUP_DIR/work/." {folder}'
"""A later pod starts in a fresh copy of that folder, as if it had run the setup itself."""
WRAPPER = (
    'exit_file=$1; shift; : > "$exit_file.began"; "$@"; '
    'echo $? > "$exit_file.tmp" && mv "$exit_file.tmp" "$exit_file"'
)
"""Marks that it began (``PodFiles.began``), runs its arguments (the command, after dropping
privileges) and records the exit code atomically."""
POD_SHELL = (
    'set -- "$1" "$2" "$' + COMMAND_VARIABLE + '"; '
    'for name in $1; do eval "export $name=\\"\\$'
    + ENV_PREFIX
    + '$name\\""; unset "'
    + ENV_PREFIX
    + '$name"; '
    'done; if [ -n "$2" ]; then cd -- "$2" || exit 126; fi; '
    "export " + COMMAND_VARIABLE + '="$3"; exec /bin/sh -c \'eval "$' + COMMAND_VARIABLE + "\"'"
)
"""The first thing run as the pod's user: its environment from ``CORRAL_POD_ENV_*`` (names in $1, all
validated shell names), into its workdir ($2, checked as the pod's user), then its command line, from
``COMMAND_VARIABLE`` (kept in $3 first, so no spec's variable of that name replaces it); the command
line's first line unsets it."""

PodIdentities = Callable[[str], PodIdentity | None]
"""A tenant's pod user on this machine; None: run as this process's own user."""
CodeSource = Callable[["DesiredPod"], Path]
"""Where the archive of a pod's uploaded code (its spec's ``code``) is on this machine, fetched first if
need be (the agent downloads it through the API)."""
MountSource = Callable[["DesiredPod", str], Path]
"""Where the archive of one of a pod's mounts (by digest) is on this machine, fetched first if need be."""
Prepare = Callable[["DesiredPod"], "DesiredPod"]
"""What a pod is given right before it starts, e.g. its job's MLflow run (``corral.mlops.tracking``):
work that pods already running need not wait for, done on the thread that starts the pod."""


class PodStartError(Exception):
    """The pod's process could not be started; the message says why (e.g. its workdir is missing)."""


class PodRunner:
    def __init__(
        self,
        runs: Path,
        identities: PodIdentities | None = None,
        code: CodeSource | None = None,
        mounts: MountSource | None = None,
        node_address: str = "127.0.0.1",
        log_cap: int = DEFAULT_LOG_CAP,
    ) -> None:
        """``node_address``: what pods are told to listen on (``CORRAL_NODE_ADDRESS``) to be reached
        from corral's server, a service's replica by the gateway. ``identities``: who each tenant's pods run as (default ``PodUsers()``: corral-<tenant>, the pod
        user, nobody; as the runner itself when it is not root). ``code``: the archives of uploaded
        working folders (None: a pod whose job has one cannot start here); ``mounts``: the archives of
        stored outputs a pod's spec mounts (None: such a pod cannot start here). Setups are cached beside
        ``runs``, in ``setups/<tenant>/<key>``."""
        self.runs = runs.resolve()  # pods run in their own folder: relative paths would break there
        self.setups = self.runs.with_name("setups")
        self.identities = identities or PodUsers()
        self.code = code
        self.mounts = mounts
        self.node_address = node_address
        self.log_cap = log_cap
        """Bytes of each pod's output served (``corral.logs``): the file's disk beyond twice that is freed."""
        self.on_start: Callable[[DesiredPod, int], None] | None = None
        """Called (on the thread that started it) with a pod given a port (``JobSpec.listen_port``) and
        that port, once it started: its supervisor reports it."""
        self.on_exit: Callable[[], None] | None = None
        """Called (from a watcher thread) as soon as a pod this runner started exits, so its supervisor
        can look now rather than at its next tick; adopted pods are seen at the next look."""
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        """Pods this runner started, by pid; adopted pods are watched through the kernel."""
        self._held: set[tuple[str, int]] = set()
        """(node, GPU) of pods being stopped whose processes are not all gone yet, as of the last
        ``stop_others``: no pod starts there until they are."""
        self._lock = threading.Lock()
        """Guards ``_not_gone``, which pods started on other threads (``start``) add to, and
        ``_spawning``."""
        self._spawning: set[tuple[str, int, int]] = set()
        """Pods whose ``start`` is under way on some thread: their ``starting`` mark is this runner's
        own, not one left by a runner killed mid-start."""
        self._not_gone: set[Path] | None = None
        """The pid files of pods not yet found gone: what ``stop_others`` looks through. Filled by one
        look through every pod folder on its first call (pods an earlier runner left), then kept as pods
        start and go, so a call costs what runs now, not every pod folder ever made."""

    def files(self, job_id: str, attempt: int, pod: int) -> PodFiles:
        return PodFiles(self.runs / job_id / f"attempt-{attempt}" / f"pod-{pod}")

    def ensure(self, desired: DesiredPod, prepare: Prepare | None = None) -> int | None:
        """The pod's exit code if it has ended; else make sure it runs (start it, or adopt it). A pod that
        could not start has ended with ``START_FAILED_EXIT_CODE`` (``start_error`` says why).
        ``prepare`` is applied to a pod about to start, and only then (see ``Prepare``)."""
        code = self.exit_code(desired)
        files = self.files(desired.job_id, desired.attempt, desired.pod)
        if code is not None or files.pid.exists():
            return code
        if self.held(desired):
            return None  # a stopped pod's processes still run there: start once they are gone
        return self.start(prepare(desired) if prepare is not None else desired)

    def held(self, desired: DesiredPod) -> bool:
        """Whether a stopped pod's processes still run on one of the pod's GPUs (as of ``stop_others``)."""
        return any((desired.node, gpu) in self._held for gpu in desired.gpus)

    def start(self, desired: DesiredPod) -> int | None:
        """Start the pod, which the caller found neither started nor held (``ensure`` is what checks):
        None, or ``START_FAILED_EXIT_CODE`` when it could not start (``start_error`` says why). Safe
        from another thread than the one calling ``stop_others``."""
        files = self.files(desired.job_id, desired.attempt, desired.pod)
        with self._lock:
            self._spawning.add(desired.key)
        try:
            self._start(desired, files)
        except PodStartError as error:
            files.starting.unlink(missing_ok=True)  # nothing was spawned
            files.folder.mkdir(parents=True, exist_ok=True)
            with open(files.log, "a") as log:
                log.write(f"corral: the pod could not start: {error}\n")
            files.start_error.write_text(str(error))
            _write_atomically(files.exit, f"{START_FAILED_EXIT_CODE}\n")
            return START_FAILED_EXIT_CODE
        finally:
            with self._lock:
                self._spawning.discard(desired.key)
        return None

    def _recover(self, files: PodFiles, node: str, gpus: tuple[int, ...], grace: float) -> None:
        """A pod marked ``starting`` without a pid file, by a runner that died mid-start: adopt its
        wrapper if it runs (found by its exit file's path, its own argument); else, if it began, it
        vanished (``VANISHED_EXIT_CODE``, never a second run); else it never ran, and may start."""
        wrapper = _find_wrapper(files.exit)
        if wrapper is not None:
            try:
                created = wrapper.create_time()
            except psutil.NoSuchProcess:
                created = -1.0
            record = PodProcess(pid=wrapper.pid, created=created, node=node, gpus=gpus, grace=grace)
            self._record_process(files, record)
        elif _exit_code(files) is None and files.began.exists():
            _write_atomically(files.exit, f"{VANISHED_EXIT_CODE}\n")
        elif _exit_code(files) is None:
            files.starting.unlink(missing_ok=True)

    def exit_code(self, desired: DesiredPod) -> int | None:
        """The pod's exit code if it has ended, else None (running, or never started); starts nothing."""
        files = self.files(desired.job_id, desired.attempt, desired.pod)
        if not files.pid.exists() and files.starting.exists():
            with self._lock:
                ours = desired.key in self._spawning
            if not ours:
                self._recover(files, desired.node, desired.gpus, desired.spec.stop_grace_period)
        if files.pid.exists():
            pid = int(files.pid.read_text())
            running = self._running(pid, files)  # first: if it ends now, its exit file is there below
            code = _exit_code(files)
            if code is not None:
                child = self._children.pop(pid, None)
                if child is not None:
                    child.wait(timeout=10)  # the wrapper exits right after writing the code
                return code
            if running:
                return None
            # Gone without its wrapper writing a code (killed with it, or the machine restarted): a
            # failure, recorded so it is reported once, and never a silent second start.
            _write_atomically(files.exit, f"{VANISHED_EXIT_CODE}\n")
            return VANISHED_EXIT_CODE
        return _exit_code(files)  # set only when it could not start

    def free_dropped_output(self, desired: DesiredPod) -> None:
        """Give back the disk that the pod's output past ``log_cap`` takes (``corral.log_files``)."""
        free_dropped(self.files(desired.job_id, desired.attempt, desired.pod).log, self.log_cap)

    def port(self, desired: DesiredPod) -> int | None:
        """The port the pod was given when it started here (``JobSpec.listen_port``), if it was."""
        try:
            return int(self.files(desired.job_id, desired.attempt, desired.pod).port.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def start_error(self, desired: DesiredPod) -> str | None:
        """Why the pod could not be started, if it could not."""
        path = self.files(desired.job_id, desired.attempt, desired.pod).start_error
        return path.read_text() if path.exists() else None

    def stop_others(self, wanted: set[tuple[str, int, int]]) -> None:
        """Stop every pod here that is not in ``wanted`` (cancelled, preempted, moved, ended with children
        left): SIGTERM to its processes now, SIGKILL on a later call once its grace period has passed.
        Until they are gone their GPUs are held (``ensure`` starts nothing there)."""
        held: set[tuple[str, int]] = set()
        with self._lock:
            first_look = self._not_gone is None
        if first_look:  # pods an earlier runner left mid-start get their pid file first, where they run
            marks = self.runs.glob("*/attempt-*/pod-*/starting") if self.runs.exists() else ()
            for mark in marks:
                files = PodFiles(mark.parent)
                if not files.pid.exists():
                    self._recover(files, node="", gpus=(), grace=DEFAULT_STOP_GRACE)
        with self._lock:
            if self._not_gone is None:
                found = self.runs.glob("*/attempt-*/pod-*/pid") if self.runs.exists() else ()
                self._not_gone = {pid_file for pid_file in found if not (pid_file.parent / "gone").exists()}
            looked_at = sorted(self._not_gone)
        sessions: dict[int, list[int]] | None = None
        strays: dict[tuple[str, int, int], list[psutil.Process]] | None = None
        now = time.time()
        for pid_file in looked_at:
            files = PodFiles(pid_file.parent)
            job_id, attempt, pod = pid_file.parts[-4], pid_file.parts[-3], pid_file.parts[-2]
            key = (job_id, int(attempt.removeprefix("attempt-")), int(pod.removeprefix("pod-")))
            if key in wanted:
                continue
            if files.gone.exists():
                self._gone(pid_file)
                continue
            record = _record(files) or PodProcess(pid=int(pid_file.read_text()), created=-1, node="", gpus=())
            if sessions is None:
                sessions = _sessions()  # one look at the process table per sync, only when needed
            processes = _pod_processes(record, sessions)
            if not processes:  # its session is empty: what left it (setsid, a daemon) still counts
                if strays is None:
                    strays = _strays()
                processes = _owned_by(strays.get(key, []), files.work)
            if not processes:
                files.gone.touch()
                self._gone(pid_file)
                child = self._children.pop(int(pid_file.read_text()), None)
                if child is not None:
                    child.poll()  # reap the wrapper
                continue
            held |= {(record.node, gpu) for gpu in record.gpus}
            if not files.stopping.exists():
                files.stopping.write_text(f"{now}\n")
                _signal(processes, signal.SIGTERM)
            elif now - float(files.stopping.read_text()) >= record.grace:
                _signal(processes, signal.SIGKILL)
            child = self._children.get(record.pid)
            if child is not None and child.poll() is not None:
                del self._children[record.pid]
        self._held = held

    def _gone(self, pid_file: Path) -> None:
        with self._lock:
            assert self._not_gone is not None
            self._not_gone.discard(pid_file)

    def alive(self, pid: int) -> bool:
        """Whether the pod whose wrapper has ``pid`` still runs (pid reuse aside: see ``_running``)."""
        child = self._children.get(pid)
        if child is not None:
            if child.poll() is None:
                return True
            del self._children[pid]  # reaped
            return False
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE  # adopted: ask the kernel
        except psutil.NoSuchProcess:
            return False

    def _running(self, pid: int, files: PodFiles) -> bool:
        if not self.alive(pid):
            return False
        record = _record(files)
        if record is None or pid in self._children:
            return True
        try:
            return abs(psutil.Process(pid).create_time() - record.created) <= CREATE_TIME_TOLERANCE
        except psutil.NoSuchProcess:
            return False

    def _start(self, desired: DesiredPod, files: PodFiles) -> None:
        spec = desired.spec
        workdir = Path(spec.workdir).expanduser().absolute() if spec.workdir else None
        if workdir is not None and not workdir.is_dir():
            raise PodStartError(
                f"workdir {workdir} does not exist"
                if not workdir.exists()
                else f"workdir {workdir} is not a directory"
            )
        try:
            identity = self.identities(desired.tenant)
        except NoPodUser as error:
            raise PodStartError(str(error)) from None
        drop: list[str] = []
        if identity is not None:
            setpriv = shutil.which("setpriv", path=SAFE_PATH)
            if setpriv is None:
                raise PodStartError("setpriv (util-linux) is not installed: it runs pods as their user")
            drop = [setpriv, f"--reuid={identity.uid}", f"--regid={identity.gid}", "--clear-groups"]
            drop += ["--no-new-privs", "--"]
        try:
            self._make_folders(files, identity)
            if spec.code is not None:
                self._unpack_code(desired, files, identity)
            if spec.mounts:
                self._unpack_mounts(desired, files, identity)
            env = pod_environment(desired, files.work, identity) | {"CORRAL_NODE_ADDRESS": self.node_address}
            port = free_port(self.node_address) if spec.listen_port else None
            if port is not None:
                env |= {"PORT": str(port), "CORRAL_PORT": str(port)}
                _write_atomically(files.port, f"{port}\n")
            command_line = desired.command_line
            if spec.setup is not None and shutil.which("flock", path=SAFE_PATH) is not None:
                env["CORRAL_SETUP_DIR"] = str(self._setup_folder(desired, identity))
                in_own_folder = workdir is None  # else the node's folder keeps what setup did there
                folder = shlex.quote(str(files.work))  # not $HOME, which the spec's env may set
                command_line = CACHED_SETUP.format(
                    setup=spec.setup,
                    command=desired.spec_command_line,
                    snapshot=SNAPSHOT_POD_FOLDER.format(folder=folder) if in_own_folder else "",
                    restore=RESTORE_POD_FOLDER.format(folder=folder) if in_own_folder else ":",
                )
            arguments = ["/bin/sh", "-c", WRAPPER, "corral-pod", str(files.exit), *drop]
            arguments += ["/bin/sh", "-c", POD_SHELL, "corral-pod", " ".join(env), str(workdir or "")]
            descriptor = os.open(files.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            files.starting.touch()  # before the spawn: see ``_recover``
            with os.fdopen(descriptor, "ab") as log:
                process = subprocess.Popen(
                    arguments,
                    cwd=files.work,
                    env={"PATH": SAFE_PATH, COMMAND_VARIABLE: f"unset {COMMAND_VARIABLE}\n{command_line}"}
                    | {ENV_PREFIX + name: value for name, value in env.items()},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # its own session: stopping it finds all its processes
                )
        except (OSError, ValueError, subprocess.SubprocessError) as error:
            raise PodStartError(str(error)) from None
        self._children[process.pid] = process
        try:
            created = psutil.Process(process.pid).create_time()
        except psutil.NoSuchProcess:
            created = time.time()
        record = PodProcess(
            pid=process.pid,
            created=created,
            node=desired.node,
            gpus=desired.gpus,
            grace=spec.stop_grace_period,
        )
        self._record_process(files, record)
        if port is not None and self.on_start is not None:
            self.on_start(desired, port)
        if self.on_exit is not None:
            threading.Thread(target=self._watch, args=(process,), name="corral-pod-exit", daemon=True).start()

    def _record_process(self, files: PodFiles, record: PodProcess) -> None:
        """The pod's process record, then its pid file: from then on it is started (or adopted)."""
        _write_atomically(files.process, record.model_dump_json())
        files.pid.write_text(str(record.pid))
        with self._lock:
            if self._not_gone is not None:
                self._not_gone.add(files.pid)

    def _watch(self, process: subprocess.Popen[bytes]) -> None:
        process.wait()  # reaps it; liveness checks then read the return code Popen keeps
        if self.on_exit is not None:
            self.on_exit()

    def _unpack_code(self, desired: DesiredPod, files: PodFiles, identity: PodIdentity | None) -> None:
        """A fresh copy of the job's uploaded working folder in the pod's own folder (where it starts),
        owned by the pod's user, who may change it as it likes: no pod sees another's changes."""
        if self.code is None:
            raise PodStartError(f"code {desired.spec.code}: this machine has no way to fetch uploaded code")
        try:
            archive = self.code(desired)
            unpack(archive, files.work)
        except (OSError, tarfile.TarError, CorralError) as error:
            raise PodStartError(f"code {desired.spec.code} could not be unpacked: {error}") from None
        if identity is not None:
            for path in [files.work, *below(files.work)]:
                os.chown(path, identity.uid, identity.gid, follow_symlinks=False)

    def _setup_folder(self, desired: DesiredPod, identity: PodIdentity | None) -> Path:
        """The folder a setup runs once for, per tenant and setup key: the pod user's alone, below
        folders pods may pass through but not list."""
        tenant = self.setups / desired.tenant
        folder = tenant / desired.setup_key
        for parent in (self.setups, tenant):
            parent.mkdir(exist_ok=True)
            parent.chmod(0o711)
        folder.mkdir(mode=0o700, exist_ok=True)
        if identity is not None:
            os.chown(folder, identity.uid, identity.gid)
        return folder

    def _unpack_mounts(self, desired: DesiredPod, files: PodFiles, identity: PodIdentity | None) -> None:
        """The outputs of earlier jobs the spec mounts, each unpacked at its path in the pod's folder."""
        for mount in desired.spec.mounts:
            if self.mounts is None:
                raise PodStartError(f"mount {mount.digest}: this machine has no way to fetch stored outputs")
            try:
                target = files.work / mount.path
                target.mkdir(parents=True, exist_ok=True)
                unpack(self.mounts(desired, mount.digest), target)
            except (OSError, tarfile.TarError, CorralError) as error:
                raise PodStartError(f"mount {mount.digest} could not be unpacked: {error}") from None
        if identity is not None:
            for path in [files.work, *below(files.work)]:
                os.chown(path, identity.uid, identity.gid, follow_symlinks=False)

    def store_outputs(self, desired: DesiredPod, keep: Callable[[str, PackedFolder], None]) -> None:
        """Pack the declared outputs from the pod's folder and ``keep`` each; what cannot be (missing,
        behind a link, too large) is said in the pod's output, and the step that needed it fails."""
        files = self.files(desired.job_id, desired.attempt, desired.pod)
        problems = store_outputs(files.work, desired.spec.outputs, keep)
        if problems:
            with open(files.log, "a") as log:
                for name, problem in problems.items():
                    log.write(f"corral: output {name} was not stored: {problem}\n")

    def _make_folders(self, files: PodFiles, identity: PodIdentity | None) -> None:
        """The runner's folders may be passed through (0711) but not listed or read by pods; ``work`` is
        the pod user's alone."""
        for folder in (self.runs, files.folder.parent.parent, files.folder.parent, files.folder):
            folder.mkdir(exist_ok=True)
            folder.chmod(0o711)
        files.work.mkdir(mode=0o700, exist_ok=True)
        if identity is not None:
            os.chown(files.work, identity.uid, identity.gid)


def pod_environment(desired: DesiredPod, home: Path, identity: PodIdentity | None) -> dict[str, str]:
    """Everything the pod's command is told: the allowlist of the runner's own environment, its home,
    then its spec's ``env`` and corral's variables."""
    env = host_environment() | {"HOME": str(home), "TMPDIR": str(home)}
    if identity is not None:
        env |= {"USER": identity.name, "LOGNAME": identity.name}
    return env | desired.environment()


def free_port(address: str) -> int:
    """A port nothing on this machine listens on now, on any interface of ``address``'s family (the
    kernel's pick for port 0 on the wildcard address), released at once for the pod to bind. Another
    process could take it in between; far less likely than for a port chosen on another machine."""
    family, wildcard = (socket.AF_INET6, "::") if ":" in address else (socket.AF_INET, "0.0.0.0")
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((wildcard, 0))
        return int(probe.getsockname()[1])


def host_environment() -> dict[str, str]:
    """What a pod is told of the environment of whoever starts it: PATH, locale, time zone; no secret."""
    host = {
        name: value
        for name, value in os.environ.items()
        if (name in HOST_VARIABLES or name.startswith("LC_")) and ENV_NAME.fullmatch(name)
    }
    return {"PATH": SAFE_PATH} | host


def _exit_code(files: PodFiles) -> int | None:
    try:
        text = files.exit.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if re.fullmatch(r"-?\d+", text) else 1


def _record(files: PodFiles) -> PodProcess | None:
    try:
        return PodProcess.model_validate_json(files.process.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def _sessions() -> dict[int, list[int]]:
    """Every process id on the machine, by session id: a system call each, where reading every
    process's status (``psutil.process_iter``) took 40 times as long, once per ended pod in a burst."""
    found: dict[int, list[int]] = {}
    for pid in psutil.pids():
        try:
            found.setdefault(os.getsid(pid), []).append(pid)
        except OSError:
            continue  # ended meanwhile
    return found


def _find_wrapper(exit_file: Path) -> psutil.Process | None:
    """The live wrapper of the pod whose exit file this is: a session leader of this runner's user
    running ``WRAPPER`` with that path as its first argument. Anyone may start a process with that
    command line; a pod (another user, when pods switch users) that did would be adopted in place of the
    pod it names, which then never starts."""
    expected = ["/bin/sh", "-c", WRAPPER, "corral-pod", str(exit_file)]
    for pid in psutil.pids():
        try:
            if os.getsid(pid) != pid:
                continue
            process = psutil.Process(pid)
            if process.uids().real != os.getuid():
                continue
            if process.cmdline()[:5] == expected and process.status() != psutil.STATUS_ZOMBIE:
                return process
        except (OSError, psutil.Error):
            continue  # ended meanwhile, or not ours to read
    return None


def _strays() -> dict[tuple[str, int, int], list[psutil.Process]]:
    """Live processes by the pod whose variables they carry (``CORRAL_JOB_ID``, ``CORRAL_ATTEMPT``,
    ``CORRAL_POD_INDEX``): a pod's process that left its session (``setsid``, a daemon, ``nohup``)
    still has them, so stopping the pod finds it and its GPUs stay held until it is gone. Read from
    ``/proc/<pid>/environ`` as the runner, which (as root) may read every process's; a process that
    cleared its own escapes (docs/security.md). Reading the files directly costs a sixth of psutil's
    ``environ()``, and a zombie's is empty."""
    found: dict[tuple[str, int, int], list[psutil.Process]] = {}
    for pid in psutil.pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                data = environ.read()
        except OSError:
            continue  # ended meanwhile, not ours to read, or no /proc here
        if b"CORRAL_JOB_ID=" not in data or pid == os.getpid():
            continue
        env = dict(item.split(b"=", 1) for item in data.split(b"\0") if b"=" in item)
        try:
            key = (env[b"CORRAL_JOB_ID"].decode(), int(env[b"CORRAL_ATTEMPT"]), int(env[b"CORRAL_POD_INDEX"]))
            found.setdefault(key, []).append(psutil.Process(pid))
        except (KeyError, ValueError, UnicodeDecodeError, psutil.Error):
            continue
    return found


def _owned_by(processes: list[psutil.Process], work: Path) -> list[psutil.Process]:
    """Those of ``processes`` running as the user the pod ran as (its ``work`` folder's owner): a pod of
    another user that copied the pod's variables into its own environment would otherwise keep the
    pod's GPUs held."""
    try:
        uid = work.stat().st_uid
    except FileNotFoundError:
        return []
    owned = []
    for process in processes:
        try:
            if process.uids().real == uid:
                owned.append(process)
        except psutil.Error:
            continue
    return owned


def _pod_processes(record: PodProcess, sessions: dict[int, list[int]]) -> list[psutil.Process]:
    """The pod's live processes: those of the session its wrapper leads, zombies left out. While any is
    left the kernel reuses neither the session id nor the pid; a leader with another start time is
    someone else's."""
    members = []
    for pid in sessions.get(record.pid, []):
        try:
            process = psutil.Process(pid)
            if process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except psutil.NoSuchProcess:
            continue  # ended meanwhile
    for process in members:
        if process.pid == record.pid and record.created >= 0:
            try:
                if abs(process.create_time() - record.created) > CREATE_TIME_TOLERANCE:
                    return []
            except psutil.NoSuchProcess:
                pass
    return members


def _signal(processes: list[psutil.Process], signal_number: int) -> None:
    for process in processes:
        try:
            process.send_signal(signal_number)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
