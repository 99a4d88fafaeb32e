"""The job spec users write: a command, where it runs, and resources in the forms people already use.

    name: train-llama
    queue: nlp
    command: python train.py --epochs 3
    pods: 2
    resources:
      gpus: A100:2          # also: 2, 0.5 (a share of one GPU), "A100|H100:4", "T4" (one T4)
      gpu_memory: 20GiB     # for a share: the GPU memory it needs
      cpu: 8
      memory: 64GiB
    checkpoint: {dir: /ckpt/run1, interval: 10m}
    time_limit: 2h

A spec compiles to the scheduler's ``Workload``; everything the scheduler does not need (command, env,
working directory, retries) stays with the spec for the backend that runs it.
"""

from __future__ import annotations

import math
import re
import shlex
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from corral.core.units import MILLI_PER_GPU
from corral.core.workloads import Workload
from corral.limits import (
    GPU_MODEL_MAX,
    INT32_MAX,
    MAX_CPU,
    MAX_GPUS_PER_POD,
    MAX_MEMORY_GIB,
    MAX_PODS,
    MAX_SECONDS,
    NAME_MAX,
)
from corral.spec.validation import read_text, validate_yaml

DEFAULT_TIME_LIMIT = 24 * 3600.0
"""Seconds a job may run when its spec sets no ``time_limit``. It is a cap, not a statement about the job:
the scheduler then plans with learned run times (``Workload.time_limit`` is None), never with a day."""
IMAGE_MAX = 512
"""Longest image reference accepted (registry, path, tag and digest together)."""
DEFAULT_STOP_GRACE = 30.0
"""Seconds a stopped pod gets between SIGTERM and SIGKILL when its spec sets no ``stop_grace_period``."""

MAX_COMMAND_BYTES = 64 * 1024
"""Longest command line (an argv list counts as joined with shell quoting). The kernel refuses any single
argument over 128 KiB and the pod's command line is one; half of that leaves room for the wrapper."""
MAX_ARGV_ITEMS = 4096
MAX_ENV_VARIABLES = 256
MAX_ENV_VALUE_BYTES = 32 * 1024
MAX_ENV_BYTES = 256 * 1024
"""Most bytes of names and values together: with the command, well inside the kernel's 2 MiB for a new
program's arguments and environment, so a spec that validates can always be started."""
MAX_PATH_BYTES = 4096
"""Longest workdir or checkpoint dir (the kernel's PATH_MAX)."""
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CODE_DIGEST = r"^sha256:[0-9a-f]{64}$"
"""How a job names its uploaded code: the archive's sha256 (``corral.workdirs``)."""
"""What a shell accepts as a variable name; anything else cannot be exported to the pod."""

_BYTES = {
    "": 2**30,  # a bare number is GiB
    "k": 10**3, "kb": 10**3, "ki": 2**10, "kib": 2**10,
    "m": 10**6, "mb": 10**6, "mi": 2**20, "mib": 2**20,
    "g": 10**9, "gb": 10**9, "gi": 2**30, "gib": 2**30,
    "t": 10**12, "tb": 10**12, "ti": 2**40, "tib": 2**40,
}  # fmt: skip
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_memory_gib(value: Any) -> float:
    """``64GiB``, ``64Gi``, ``512Mi``, ``1.5T`` or a number of GiB, as GiB. GB/G are decimal (10^9 bytes)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 64GiB, 512Mi or a number of GiB")
    if isinstance(value, int | float):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
        if match is None or match.group(2).lower() not in _BYTES:
            raise ValueError("expected a size such as 64GiB, 512Mi, 20GB or a number of GiB")
        number, unit = float(match.group(1)), match.group(2).lower()
    if not math.isfinite(number) or number < 0:
        raise ValueError("a size must be a finite number, not negative")
    gib = number * _BYTES[unit] / 2**30
    if gib > MAX_MEMORY_GIB:
        raise ValueError(f"a size is at most {MAX_MEMORY_GIB:g} GiB (1 PiB)")
    return gib


def parse_seconds(value: Any) -> float:
    """``90``, ``30s``, ``10m``, ``2h``, ``1h30m`` or ``1d``, as seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text)
        if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
            raise ValueError("expected a duration such as 90, 30s, 10m, 2h or 1h30m")
        seconds = sum(float(number) * _SECONDS[unit] for number, unit in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("a duration must be a positive, finite number of seconds")
    if seconds > MAX_SECONDS:
        raise ValueError(f"a duration is at most {MAX_SECONDS:g} s (ten years)")
    return seconds


MemoryGiB = Annotated[float, BeforeValidator(parse_memory_gib)]
Seconds = Annotated[float, BeforeValidator(parse_seconds)]


class GpuRequest(BaseModel):
    """GPUs per pod: ``count`` whole GPUs, or one GPU shared at ``milli`` (< 1000); optionally of models."""

    model_config = ConfigDict(frozen=True)

    count: int = Field(default=0, ge=0, le=MAX_GPUS_PER_POD)
    milli: int = Field(default=MILLI_PER_GPU, ge=1, le=MILLI_PER_GPU)
    models: tuple[Annotated[str, Field(min_length=1, max_length=GPU_MODEL_MAX)], ...] | None = Field(
        default=None, min_length=1, max_length=16
    )

    @model_validator(mode="after")
    def _share_of_one_gpu(self) -> GpuRequest:
        """The stored form can say what the short forms cannot: a share is of exactly one GPU."""
        if self.milli < MILLI_PER_GPU and self.count != 1:
            raise ValueError(f"milli {self.milli} is a share of one GPU: count must be 1, not {self.count}")
        return self

    @classmethod
    def parse(cls, value: Any) -> GpuRequest:
        """``2``, ``0.5``, ``"A100:2"``, ``"A100|H100:4"``, ``"T4"`` (one T4) or ``"A100:0.5"``."""
        if value is None:
            return cls()
        if isinstance(value, GpuRequest):
            return value
        if isinstance(value, dict):
            return cls.model_validate(value)  # the stored form, {"count": 2, "milli": 1000, ...}
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError("expected a GPU count such as 2, a share such as 0.5, or MODEL:COUNT")
        models: tuple[str, ...] | None = None
        amount: Any = value
        if isinstance(value, str):
            text = value.strip()
            model_part, colon, count_part = text.rpartition(":")
            if colon and not model_part.strip():
                raise ValueError(f"empty GPU model in {text!r}: write MODEL:COUNT, e.g. A100:2")
            if not model_part and not _is_number(count_part) and not _looks_numeric(count_part):
                model_part, count_part = count_part, "1"  # "T4": one T4 (but "inf" or "-2" is no model)
            if model_part:
                models = tuple(m.strip() for m in model_part.split("|"))
                if not all(models):
                    raise ValueError(f"empty GPU model in {text!r}: write MODEL:COUNT, e.g. A100:2")
            if not _is_number(count_part):
                raise ValueError(
                    f"{count_part!r} is not a GPU count: write a whole number (2), a share below 1 (0.5) "
                    "or MODEL:COUNT (A100:2)"
                )
            amount = float(count_part)
        amount = float(amount)
        if not math.isfinite(amount):
            raise ValueError("the GPU amount must be a finite number")
        if amount > MAX_GPUS_PER_POD:
            raise ValueError(f"{amount:g} GPUs: a pod gets at most {MAX_GPUS_PER_POD} (use more pods)")
        if amount <= 0:
            raise ValueError("the GPU amount must be positive (leave gpus out for a CPU-only job)")
        if amount < 1:
            milli = round(amount * MILLI_PER_GPU)
            if milli < 1:
                raise ValueError("a GPU share is at least 0.001")
            return cls(count=1, milli=milli, models=models)
        if not amount.is_integer():
            raise ValueError(
                f"{amount:g} GPUs: ask for whole GPUs ({math.ceil(amount)}) or a share of one below 1 (e.g. 0.5)"
            )
        return cls(count=int(amount), models=models)


def _path(value: str, field: str) -> str:
    if "\0" in value:
        raise ValueError(f"{field} contains a NUL byte, which no path can hold")
    if len(value.encode()) > MAX_PATH_BYTES:
        raise ValueError(f"{field} is {len(value.encode())} bytes; at most {MAX_PATH_BYTES}")
    return value


def _is_number(text: str) -> bool:
    return re.fullmatch(r"\d+(?:\.\d+)?", text.strip()) is not None


def _looks_numeric(text: str) -> bool:
    """Whether Python reads ``text`` as a float ("inf", "nan", "-2", "1e3"): a mistyped amount, not a
    GPU model named so."""
    try:
        float(text)
    except ValueError:
        return False
    return True


class Resources(BaseModel):
    """What each pod needs."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    gpus: Annotated[GpuRequest, BeforeValidator(GpuRequest.parse)] = Field(
        default_factory=GpuRequest, description="2, 0.5, A100:2, A100|H100:4 or T4."
    )
    gpu_memory: MemoryGiB = Field(default=0.0, description="GPU memory a share needs, e.g. 20GiB.")
    cpu: float = Field(default=1.0, ge=0, le=MAX_CPU, description="CPU cores.")
    memory: MemoryGiB = Field(default=4.0, description="Main memory, e.g. 64GiB (a bare number is GiB).")

    @model_validator(mode="after")
    def _gpu_memory_needs_a_gpu(self) -> Resources:
        if self.gpu_memory and not self.gpus.count:
            raise ValueError("gpu_memory is set but no gpus: add gpus (e.g. gpus: 0.5) or remove gpu_memory")
        return self


class Checkpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: str = Field(min_length=1, description="Where the job writes checkpoints; it resumes from here.")
    interval: Seconds = Field(description="How often it checkpoints, e.g. 10m.")

    @field_validator("dir")
    @classmethod
    def _dir_is_a_path(cls, value: str) -> str:
        return _path(value, "checkpoint.dir")


OUTPUT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
"""How a job names a declared output (and a pipeline step names an input)."""
MAX_OUTPUTS = 64


def relative_path(value: str, field: str) -> str:
    """A path inside the pod's own folder: relative, normalised, never above it (no ``..``)."""
    _path(value, field)
    parts = Path(value).parts
    if not value or Path(value).is_absolute() or ".." in parts:
        raise ValueError(f"{field} {value!r} must be a path inside the pod's folder: relative, without ..")
    return Path(value).as_posix()


class Mount(BaseModel):
    """A stored archive (an earlier job's output, see ``JobSpec.outputs``) unpacked into every pod's own
    folder, at ``path``, before its command starts: how a pipeline step gets what the steps it needs made."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    digest: str = Field(pattern=CODE_DIGEST, description="sha256:<hex> of the archive, in the job's tenant.")
    path: str = Field(default=".", description="Where in the pod's folder (relative) it is unpacked.")

    @field_validator("path")
    @classmethod
    def _inside_the_pod(cls, value: str) -> str:
        return "." if value in ("", ".") else relative_path(value, "path")


class JobSpec(BaseModel):
    """One job as a user writes it (YAML or JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$", description="Lowercase name.")
    queue: str = Field(default="default", min_length=1, max_length=NAME_MAX)
    command: str | list[str] = Field(description="A shell command line, or an argv list.")
    workdir: str | None = Field(
        default=None,
        description="Where pods start. In a spec file or `corral run --workdir`, a folder on the submitting "
        "machine (relative: to the spec file): it is uploaded and becomes `code`. An absolute path sent "
        "to the API is a folder on the node that runs the pod.",
    )
    code: str | None = Field(
        default=None,
        pattern=CODE_DIGEST,
        description="An uploaded working folder (PUT /code/{digest}, by the tenant that submits): every pod "
        "starts in a fresh copy of it. The CLI sets it from a local workdir.",
    )
    setup: str | None = Field(
        default=None,
        min_length=1,
        description="Shell commands run in the pod's folder before `command` (e.g. pip install -r "
        "requirements.txt); the pod fails if they do.",
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=IMAGE_MAX,
        description="Container image its pods run in; needed on Kubernetes clusters, unused elsewhere.",
    )
    env: dict[str, str] = Field(default_factory=dict)
    experiment: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00/][^\x00]*$",
        description="The MLflow experiment its run is logged in (per tenant; default: the queue's name). "
        "See docs/mlops.md.",
    )
    pods: int = Field(default=1, ge=1, le=MAX_PODS, description="Identical pods started together (a gang).")
    resources: Resources = Field(default_factory=Resources)
    priority: int = Field(default=0, ge=-INT32_MAX, le=INT32_MAX)
    sensitive: bool = Field(default=False, description="Sensitive data: private clusters only.")
    burstable: bool = Field(default=True, description="May run on public-cloud clusters.")
    deadline: datetime | None = Field(default=None, description="Should finish by then (soft), ISO 8601.")
    checkpoint: Checkpoint | None = None
    retries: int = Field(default=0, ge=0, le=100, description="Runs again after a failure, up to this often.")
    time_limit: Seconds | None = Field(
        default=None, description="Stopped after running this long (default 24h); forecasts scale it."
    )
    stop_grace_period: Annotated[float, BeforeValidator(parse_seconds), Field(le=3600)] = Field(
        default=DEFAULT_STOP_GRACE,
        description="A stopped pod gets SIGTERM, then SIGKILL this long after (at most 1h).",
    )
    outputs: dict[str, str] = Field(
        default_factory=dict,
        max_length=MAX_OUTPUTS,
        description="Declared outputs, name: path relative to the pod's folder (a file or a folder): when "
        "pod 0 exits 0 they are stored in the server, one archive each, for the steps that need them.",
    )
    mounts: list[Mount] = Field(
        default_factory=list,
        max_length=MAX_OUTPUTS,
        description="Stored outputs (of the job's tenant) unpacked into each pod's folder before it starts.",
    )
    listen_port: bool = Field(
        default=False,
        description="Each pod gets a port free where it runs, chosen just before it starts, in PORT and "
        "CORRAL_PORT; the port is reported to the server (a service's replica is reached there).",
    )

    @field_validator("command")
    @classmethod
    def _command_can_be_run(cls, value: str | list[str]) -> str | list[str]:
        """Refuse what no process could be started with, so that it is a 422 at submit and not a pod
        that fails (or a backend that trips) later."""
        if not (value.strip() if isinstance(value, str) else value):
            raise ValueError("command is empty: give a command line or an argv list")
        parts = [value] if isinstance(value, str) else value
        if len(parts) > MAX_ARGV_ITEMS:
            raise ValueError(f"command has {len(parts)} arguments; at most {MAX_ARGV_ITEMS}")
        if any("\0" in part for part in parts):
            raise ValueError("command contains a NUL byte, which no program can be given")
        line = value if isinstance(value, str) else shlex.join(value)
        if len(line.encode()) > MAX_COMMAND_BYTES:
            raise ValueError(f"command is {len(line.encode())} bytes; at most {MAX_COMMAND_BYTES} (64 KiB)")
        return value

    @field_validator("outputs")
    @classmethod
    def _outputs_inside_the_pod(cls, value: dict[str, str]) -> dict[str, str]:
        for name, path in value.items():
            if re.fullmatch(OUTPUT_NAME, name) is None:
                raise ValueError(f"output name {name!r}: letters, digits, _ . - (at most 63)")
            value[name] = relative_path(path, f"output {name}")
        return value

    @field_validator("workdir")
    @classmethod
    def _workdir_is_a_path(cls, value: str | None) -> str | None:
        return None if value is None else _path(value, "workdir")

    @model_validator(mode="after")
    def _code_is_the_workdir(self) -> JobSpec:
        """Uploaded code is where pods start, so a second working folder would contradict it; setup and
        command run as one shell line, which the kernel bounds."""
        if self.code is not None and self.workdir is not None:
            raise ValueError("code is the pods' working folder: leave workdir out (or code, to use workdir)")
        if self.setup is not None:
            if "\0" in self.setup:
                raise ValueError("setup contains a NUL byte, which no shell can be given")
            command = self.command if isinstance(self.command, str) else shlex.join(self.command)
            total = len(self.setup.encode()) + len(command.encode())
            if total > MAX_COMMAND_BYTES:
                raise ValueError(f"setup and command are {total} bytes together; at most {MAX_COMMAND_BYTES}")
        return self

    @field_validator("image")
    @classmethod
    def _image_is_one_word(cls, value: str | None) -> str | None:
        if value is not None and (value != value.strip() or any(c.isspace() or c == "\0" for c in value)):
            raise ValueError(
                f"image {value!r} has whitespace; give one reference, e.g. nvcr.io/nvidia/pytorch:24.05-py3"
            )
        return value

    @field_validator("queue")
    @classmethod
    def _queue_has_no_nul(cls, value: str) -> str:
        if "\0" in value:
            raise ValueError("queue contains a NUL byte")
        return value

    @field_validator("env")
    @classmethod
    def _env_can_be_exported(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_ENV_VARIABLES:
            raise ValueError(f"env has {len(value)} variables; at most {MAX_ENV_VARIABLES}")
        for name, text in value.items():
            if ENV_NAME.fullmatch(name) is None:
                raise ValueError(
                    f"env name {name!r} is not a variable name: letters, digits and _, not first a digit"
                )
            if "\0" in text:
                raise ValueError(f"env {name} contains a NUL byte, which no program can be given")
            if len(text.encode()) > MAX_ENV_VALUE_BYTES:
                raise ValueError(
                    f"env {name} is {len(text.encode())} bytes; at most {MAX_ENV_VALUE_BYTES} (32 KiB)"
                )
        total = sum(len(name.encode()) + len(text.encode()) + 2 for name, text in value.items())
        if total > MAX_ENV_BYTES:
            raise ValueError(f"env is {total} bytes in all; at most {MAX_ENV_BYTES} (256 KiB)")
        return value

    @field_validator("deadline")
    @classmethod
    def _deadline_has_timezone(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("deadline needs a time zone, e.g. 2026-12-01T18:00:00Z")
        return value

    @property
    def enforced_time_limit(self) -> float:
        """Seconds its pods may run before they are stopped: ``time_limit``, else a day."""
        return self.time_limit if self.time_limit is not None else DEFAULT_TIME_LIMIT

    def to_workload(self, job_id: str, submit: float) -> Workload:
        """The scheduler's view of this job; ``submit`` and the deadline are Unix seconds."""
        gpus = self.resources.gpus
        return Workload(
            id=job_id,
            queue=self.queue,
            submit=submit,
            duration=self.enforced_time_limit,
            pods=self.pods,
            gpus_per_pod=gpus.count,
            gpu_milli=gpus.milli if gpus.count else 0,
            gpu_memory_gib=self.resources.gpu_memory,
            cpu=self.resources.cpu,
            memory_gib=self.resources.memory,
            gpu_model="|".join(gpus.models) if gpus.models else None,
            priority=self.priority,
            sensitive=self.sensitive,
            burstable=self.burstable,
            deadline=self.deadline.timestamp() if self.deadline else None,
            checkpoint_seconds=self.checkpoint.interval if self.checkpoint else None,
            time_limit=self.time_limit,
        )


def parse_job_spec(text: str, source: str = "<job spec>") -> JobSpec:
    """A job spec from YAML (or JSON) text; ``SpecError`` names the line, the field and the fix."""
    return validate_yaml(text, JobSpec, source=source, expected="a mapping with at least name and command")


def load_job_spec(path: str | Path) -> JobSpec:
    return parse_job_spec(read_text(Path(path)), source=str(path))
