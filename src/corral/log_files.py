"""Bounding the disk a pod's output file takes, without moving a byte of what is still served.

A local pod writes its output to a file opened for appending, as fast as it likes: ``yes`` fills a
disk in minutes, and the server's data dir (its database) with it. Only the newest ``cap`` bytes are
served (``corral.logs.FileLog``), so what lies before them is dead weight. It is given back to the file
system by punching a hole over it (``fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)``): the
file keeps its length and every offset, the writer's appends go on where they were, and readers never
read the hole, which lies before ``kept_from``. glibc has the call; Python's ``os`` does not expose its
flags, hence ``ctypes``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
ALIGNMENT = 1 << 20
"""Holes end on a MiB boundary: whole blocks on every file system, and few calls."""

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_fallocate = getattr(_libc, "fallocate", None)  # Linux only
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def free_dropped(path: Path, cap: int) -> bool:
    """Give back the disk of ``path``'s bytes before its last ``cap`` once it holds more than twice
    ``cap`` (so a file costs one ``stat`` a look, and at most ``2 * cap`` plus what is written between
    looks). False where nothing was freed: under the bound, gone, or a file system (or system) without
    hole punching, where the file keeps growing."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return False
    if _fallocate is None or found.st_blocks * 512 <= 2 * cap:
        return False
    end = (found.st_size - cap) // ALIGNMENT * ALIGNMENT
    descriptor = os.open(path, os.O_WRONLY)
    try:
        return _fallocate(descriptor, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, end) == 0
    finally:
        os.close(descriptor)
