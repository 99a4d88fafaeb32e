"""Where a job's files are on the server's machine, so that an artifact a user names is one of them.

A pod runs in its spec's ``workdir``, else in its own folder under ``<data dir>/runs/<job id>`` (the local
backend's layout), and writes checkpoints to ``checkpoint.dir``. An artifact must lie inside one of these
folders once symbolic links are followed: otherwise a push could copy any file the server may read.
"""

from __future__ import annotations

from pathlib import Path

from corral.errors import CorralError
from corral.spec.job import JobSpec


class ArtifactNotFound(CorralError):
    """The path names nothing inside the job's folders on this machine."""


def job_folders(job_id: str, spec: JobSpec, runs: Path | None) -> list[Path]:
    """The job's working directory (the spec's, else its run folder when pods run here), then its
    checkpoint directory."""
    folders = [Path(spec.workdir).expanduser()] if spec.workdir else []
    if runs is not None:
        folders.append(runs / job_id)
    if spec.checkpoint is not None:
        folders.append(Path(spec.checkpoint.dir).expanduser())
    return [folder.resolve() for folder in folders]


def locate(path: str, job_id: str, folders: list[Path]) -> tuple[Path, str]:
    """The file or directory ``path`` names, and its artifact name: where it lies inside its folder.

    A relative path is looked for in each folder in turn; an absolute one must be inside one of them."""
    candidates = [Path(path)] if Path(path).is_absolute() else [folder / path for folder in folders]
    for candidate in candidates:
        resolved = candidate.resolve()
        if not resolved.exists():
            continue
        if resolved.is_dir() and not any(inner.is_file() for inner in resolved.rglob("*")):
            raise ArtifactNotFound(f"path: {path!r} is an empty directory of job {job_id}: nothing to copy")
        for folder in folders:
            if resolved.is_relative_to(folder):
                inside = resolved.relative_to(folder).as_posix()
                return resolved, folder.name if inside == "." else inside
    where = ", ".join(str(folder) for folder in folders) or "none on this machine"
    raise ArtifactNotFound(
        f"path: {path!r} is not a file or directory inside job {job_id}'s folders ({where}); "
        "pods run by agents keep their files on their own machines"
    )
