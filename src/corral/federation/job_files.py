"""Which files on the server's machine are a job's, so that an artifact a user names is one of them.

A file is a job's when its own pods wrote it: it lies in the job's folder under ``<data dir>/runs/<job
id>`` (the local backend's layout: one folder per attempt and pod), or in its ``checkpoint.dir`` when
that lies inside that folder, once symbolic links are followed. Folders a user names (``workdir``, a
checkpoint dir elsewhere, ``/``) make nothing the job's: otherwise a job could claim another job's files,
and push a sensitive job's data to a public cluster as its own model.
"""

from __future__ import annotations

from pathlib import Path

from corral.errors import CorralError
from corral.spec.job import JobSpec
from corral.workdirs import below


class ArtifactNotFound(CorralError):
    """The path names nothing inside the job's folders on this machine."""


class ArtifactOfAnotherJob(CorralError):
    """The path names a file another job's pods wrote: its rules (sensitive, tenant) are not this job's."""


def job_folders(job_id: str, spec: JobSpec, runs: Path | None) -> list[Path]:
    """The job's folder under ``runs`` (None: pods do not run on this machine, so nothing), then its
    checkpoint directory if that lies inside it."""
    if runs is None:
        return []
    own = (runs / job_id).resolve()
    folders = [own]
    if spec.checkpoint is not None:
        checkpoint = Path(spec.checkpoint.dir).expanduser().resolve()
        if checkpoint.is_relative_to(own) and checkpoint != own:
            folders.append(checkpoint)
    return folders


def locate(path: str, job_id: str, folders: list[Path], runs: Path | None = None) -> tuple[Path, str]:
    """The file or directory ``path`` names, and its artifact name: where it lies inside its folder.

    A relative path is looked for in each folder in turn; an absolute one must be inside one of them. A
    path into another job's folder under ``runs`` is ``ArtifactOfAnotherJob``."""
    candidates = [Path(path)] if Path(path).is_absolute() else [folder / path for folder in folders]
    for candidate in candidates:
        resolved = candidate.resolve()
        if not resolved.exists():
            continue
        holding = [folder for folder in folders if resolved.is_relative_to(folder)]
        if holding:
            folder = max(holding, key=lambda f: len(f.parts))  # inside the checkpoint dir: named from there
            if resolved.is_dir() and not any(inner.is_file() for inner in below(resolved)):
                raise ArtifactNotFound(
                    f"path: {path!r} is an empty directory of job {job_id}: nothing to copy"
                )
            inside = resolved.relative_to(folder).as_posix()
            return resolved, folder.name if inside == "." else inside
        if runs is not None and resolved.is_relative_to(runs.resolve()):
            inside = resolved.relative_to(runs.resolve()).parts
            whose = f"job {inside[0]}'s" if inside else "every job's"
            raise ArtifactOfAnotherJob(
                f"path: {path!r} is {whose} files, not job {job_id}'s: a job copies only what its own pods "
                "wrote, whatever its workdir or checkpoint.dir"
            )
    where = ", ".join(str(folder) for folder in folders) or "none on this machine"
    raise ArtifactNotFound(
        f"path: {path!r} is not a file or directory inside job {job_id}'s folders ({where}); "
        "pods run by agents keep their files on their own machines"
    )
