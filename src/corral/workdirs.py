"""Shipping a job's code: a local working folder packed on the submitting machine, unpacked on the node.

``workdir: .`` in a spec file (or ``corral run --workdir .``) packs that folder into a gzipped tar and
uploads it; the job then names it by content (``code: sha256:...``) and every pod starts in a fresh copy
of it, on whichever machine runs it, as SkyPilot's ``workdir`` and dstack's repo upload do.

The archive is deterministic (entries sorted, no times, owners or modes beyond the executable bit), so
the same tree always has the same digest and a submit of unchanged code uploads nothing. What the
folder's ``.gitignore`` or ``.corralignore`` matches is left out (the patterns of those two files at its
top, gitignore syntax), as is ``.git``; data, checkpoints and virtual environments belong there, since an
archive is at most ``MAX_CODE_BYTES``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from pathspec import GitIgnoreSpec

from corral.errors import CorralError
from corral.limits import MAX_REQUEST_BYTES

MAX_CODE_BYTES = MAX_REQUEST_BYTES
"""Most bytes of one packed (compressed) working folder: one upload request."""
IGNORE_FILES = (".gitignore", ".corralignore")
ALWAYS_LEFT_OUT = (".git/",)


class WorkdirTooLarge(CorralError):
    """The folder packs to more than the limit; the message says how much and what to leave out."""


@dataclass(frozen=True)
class PackedFolder:
    digest: str
    """``sha256:<hex>`` of ``data``."""
    data: bytes
    files: int


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def pack(folder: Path, limit: int = MAX_CODE_BYTES) -> PackedFolder:
    """``folder`` as a deterministic gzipped tar, its ignore files' matches left out; ``WorkdirTooLarge``
    as soon as the archive outgrows ``limit`` bytes (a folder of datasets is not read to its end)."""
    root = folder.resolve()
    if not root.is_dir():
        raise CorralError(f"workdir {folder}: no such folder on this machine")
    ignored = _ignore_spec(root)
    buffer = io.BytesIO()
    files = 0
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for path in _walk(root, ignored):
            info = tar_entry(root, path)
            if info.isfile():
                with open(path, "rb") as content:
                    archive.addfile(info, content)
                files += 1
            else:
                archive.addfile(info)
            if buffer.tell() > limit:
                raise WorkdirTooLarge(_too_large(folder, buffer.tell(), limit))
    data = buffer.getvalue()
    if len(data) > limit:
        raise WorkdirTooLarge(_too_large(folder, len(data), limit))
    return PackedFolder(digest_of(data), data, files)


def below(folder: Path) -> list[Path]:
    """Everything below ``folder``, unsorted; links are listed, never entered, and a folder that cannot be
    listed is left out (as ``os.walk`` does). Walked with a list, not recursion (``os.walk`` and
    ``Path.rglob`` recurse before Python 3.12): a pod's folders nested a thousand deep are walked, not
    a ``RecursionError`` in the reconcile loop or an agent."""
    found: list[Path] = []
    pending = [folder]
    while pending:
        try:
            with os.scandir(pending.pop()) as listing:
                for entry in listing:
                    found.append(Path(entry.path))
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(found[-1])
        except OSError:
            continue
    return found


def unpack(archive: Path, into: Path) -> None:
    """Extract an uploaded working folder into ``into`` (the pod's own folder). The ``data`` filter
    refuses absolute paths, ``..``, links that leave the folder and device files, and drops set-uid
    bits: an archive is the user's input, and the node may extract it as root."""
    with tarfile.open(archive, mode="r:gz") as opened:
        opened.extractall(into, filter="data")


def _ignore_spec(root: Path) -> GitIgnoreSpec:
    lines = list(ALWAYS_LEFT_OUT)
    for name in IGNORE_FILES:
        path = root / name
        if path.is_file():
            lines += path.read_text(errors="replace").splitlines()
    return GitIgnoreSpec.from_lines(lines)


def _walk(root: Path, ignored: GitIgnoreSpec) -> list[Path]:
    """Every regular file, folder and symbolic link under ``root`` that is not ignored, sorted: a folder
    before what it holds, an ignored folder not entered."""
    found: list[Path] = []
    for current, folders, names in os.walk(root):
        here = Path(current)
        inside = here.relative_to(root).as_posix()
        prefix = "" if inside == "." else inside + "/"
        folders[:] = sorted(f for f in folders if not ignored.match_file(f"{prefix}{f}/"))
        found += [here / f for f in folders]
        kept = [here / n for n in names if not ignored.match_file(f"{prefix}{n}")]
        found += [path for path in kept if path.is_symlink() or path.is_file()]  # no FIFOs, sockets
    return sorted(found, key=lambda path: path.relative_to(root).parts)


def tar_entry(root: Path, path: Path) -> tarfile.TarInfo:
    """A tar entry for ``path`` under ``root`` that depends on the content alone: no owner, time or mode
    beyond executable, so the same folder always packs to the same digest (code uploads, pipeline
    outputs and their cache keys rely on it). A link is an entry, never followed."""
    info = tarfile.TarInfo(path.relative_to(root).as_posix())
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    found = os.stat(path, follow_symlinks=False)
    if stat.S_ISLNK(found.st_mode):
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, os.readlink(path), 0o777
    elif stat.S_ISDIR(found.st_mode):
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    else:
        info.size = found.st_size
        info.mode = 0o755 if found.st_mode & stat.S_IXUSR else 0o644
    return info


def _too_large(folder: Path, size: int, limit: int) -> str:
    return (
        f"workdir {folder} packs to more than {limit >> 20} MiB ({size >> 20} MiB so far): leave data, "
        "checkpoints and virtual environments out with a .corralignore (gitignore syntax) there"
    )
