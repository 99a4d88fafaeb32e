"""A job's declared outputs as archives: packed on the node that ran pod 0 once it exited 0, kept in the
server per tenant and content (the same store as uploaded code), unpacked into the pods of the steps
that need them (``JobSpec.mounts``), on ``corral up``'s machine or on an agent's.

An output is packed as it lies in the pod's folder, its path kept (``data/iris.csv``), with the same
deterministic entries as an uploaded working folder: the same files always give the same digest, which
is what lets a rerun of an upstream step that made the same bytes leave its downstream steps cached.

The pod wrote these files, and the node may read them as root: nothing on the way to an output may be a
symbolic link (``out -> /root``), and links inside an output folder are stored as links, never followed.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

from corral.errors import CorralError
from corral.workdirs import MAX_CODE_BYTES, PackedFolder, below, digest_of, tar_entry


class OutputUnavailable(CorralError):
    """A declared output is missing, lies behind a link, or packs to more than the limit."""


RAW_BYTES_PER_PACKED_BYTE = 16
"""How many bytes of files an output may hold per byte of its packed limit: outputs are read by the
reconcile loop (or an agent), so what is read is bounded by the files' sizes before reading, not by
what they compress to; a pod's sparse terabyte of zeros packs small but took hours to read."""


def pack_output(work: Path, path: str, limit: int = MAX_CODE_BYTES) -> PackedFolder:
    """The file or folder ``path`` (relative, validated by the spec) of a pod's folder ``work``, packed;
    refused before reading past ``RAW_BYTES_PER_PACKED_BYTE * limit`` bytes of files."""
    target = work
    for part in Path(path).parts:
        target = target / part
        if target.is_symlink():
            raise OutputUnavailable(
                f"{path}: {target.relative_to(work)} is a symbolic link; outputs are files"
            )
    if not target.exists():
        raise OutputUnavailable(f"{path} was not written")
    buffer = io.BytesIO()
    files = raw = 0
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for entry in _entries(target):
            info = tar_entry(work, entry)
            if info.isfile():
                with _open_regular(entry, path) as content:
                    info.size = os.fstat(content.fileno()).st_size
                    raw += info.size
                    if raw > RAW_BYTES_PER_PACKED_BYTE * limit:
                        raise OutputUnavailable(
                            f"{path} holds more than {RAW_BYTES_PER_PACKED_BYTE * limit >> 20} MiB of files"
                        )
                    archive.addfile(info, content)
                files += 1
            else:
                archive.addfile(info)
            if buffer.tell() > limit:
                raise OutputUnavailable(f"{path} packs to more than {limit >> 20} MiB")
    data = buffer.getvalue()
    if len(data) > limit:
        raise OutputUnavailable(f"{path} packs to more than {limit >> 20} MiB")
    return PackedFolder(digest_of(data), data, files)


def store_outputs(
    work: Path, outputs: dict[str, str], keep: Callable[[str, PackedFolder], None]
) -> dict[str, str]:
    """Pack each declared output of the pod folder ``work`` and ``keep`` it (name, archive); returns
    what could not be, name -> why (the step fails with that)."""
    problems: dict[str, str] = {}
    for name, path in outputs.items():
        try:
            keep(name, pack_output(work, path))
        except (OSError, CorralError) as error:  # unreadable, or no room left in the tenant's archives
            problems[name] = str(error)
    return problems


def _open_regular(entry: Path, output: str) -> io.BufferedReader:
    """``entry`` opened for reading if it is a regular file: never a FIFO or device, which would block
    or read forever (the node may be root, reading what an untrusted pod left), nor a link."""
    try:
        descriptor = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        raise OutputUnavailable(f"{output}: {entry.name} cannot be read: {error.strerror}") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise OutputUnavailable(f"{output}: {entry.name} is not a regular file")
    return os.fdopen(descriptor, "rb")


def _entries(target: Path) -> list[Path]:
    """The output and, for a folder, everything below it, sorted; links are entries, never entered."""
    if not target.is_dir():
        return [target]  # a FIFO or device is refused when it is opened
    return sorted([target, *below(target)], key=lambda p: p.parts)
