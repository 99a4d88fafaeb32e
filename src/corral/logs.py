"""Reading a pod's output by byte range, or its last lines, without loading the whole of it.

Output lives in a file on the machine that ran the pod (the local backend) or in chunks an agent shipped
to the store; both are a ``LogSource``: bytes ``[kept_from, length)`` of what the pod wrote. Offsets are
absolute and never reused, so a reader that follows a log asks for "from where I stopped" however much
was written or dropped meanwhile. A log grows without bound but is kept only up to a cap (``LOG_CAP``):
what is older is dropped (shipped chunks) or no longer served (files), and ``kept_from`` says from where.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

DEFAULT_LOG_CAP = 100 << 20
"""Bytes of one pod's output kept and served (per attempt): older output is dropped beyond it."""
BLOCK = 1 << 20
"""Bytes read at a time: a read of any range holds at most this much of it in memory."""


class LogSource(Protocol):
    """One pod's output in one attempt, as it is at the moment it was opened."""

    @property
    def length(self) -> int:
        """Bytes the pod has written: where the next byte will be."""
        ...

    @property
    def kept_from(self) -> int:
        """The first byte still kept: 0, unless the log outgrew its cap."""
        ...

    def read(self, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)``, within ``[kept_from, length)``."""
        ...


LogOpener = Callable[[str, int, int | None], LogSource | None]
"""(job id, pod, attempt or None for the latest) -> that output, or None when there is none here."""


@dataclass(frozen=True)
class FileLog:
    """A pod's output file as the local backend writes it: only its last ``cap`` bytes are served."""

    path: Path
    length: int
    cap: int

    @classmethod
    def open(cls, path: Path, cap: int = DEFAULT_LOG_CAP) -> FileLog | None:
        try:
            return cls(path, os.stat(path).st_size, cap)
        except FileNotFoundError:
            return None

    @property
    def kept_from(self) -> int:
        return max(0, self.length - self.cap)

    def read(self, start: int, stop: int) -> bytes:
        with open(self.path, "rb") as file:
            file.seek(start)
            return file.read(max(0, stop - start))


def pod_log_files(runs: Path, cap: int = DEFAULT_LOG_CAP) -> LogOpener:
    """Opens pods' output files under ``runs`` (``<job>/attempt-<n>/pod-<i>/output.log``)."""

    def open_log(job_id: str, pod: int, attempt: int | None) -> LogSource | None:
        if attempt is None:
            numbers = [int(p.name.removeprefix("attempt-")) for p in runs.glob(f"{job_id}/attempt-*")]
            if not numbers:
                return None
            attempt = max(numbers)
        return FileLog.open(runs / job_id / f"attempt-{attempt}" / f"pod-{pod}" / "output.log", cap)

    return open_log


@dataclass(frozen=True)
class Span:
    """Bytes ``[start, stop)`` of a log to send, and what the answer tells the reader about it."""

    start: int
    stop: int
    length: int
    kept_from: int


def span(source: LogSource, offset: int = 0, limit: int | None = None, tail: int | None = None) -> Span:
    """The bytes to send: from ``offset`` (or the start of the last ``tail`` lines), at most ``limit`` of
    them. What was dropped is skipped; a cut is moved back to a character's start, so a follower that
    resumes at ``stop`` never sees half a character."""
    length, kept = source.length, source.kept_from
    start = tail_start(source, tail) if tail is not None else offset
    start = min(max(start, kept), length)
    stop = length if limit is None else min(length, start + limit)
    if stop < length:
        stop = _character_start(source, start, stop)
    return Span(start, stop, length, kept)


def stream(source: LogSource, start: int, stop: int) -> Iterator[bytes]:
    """Bytes ``[start, stop)`` in blocks of at most ``BLOCK``."""
    while start < stop:
        data = source.read(start, min(stop, start + BLOCK))
        if not data:
            return
        yield data
        start += len(data)


def tail_start(source: LogSource, lines: int) -> int:
    """Where the last ``lines`` lines begin (a final line without a newline counts), reading backwards
    a block at a time; the kept start when the log has fewer."""
    kept, end = source.kept_from, source.length
    if lines <= 0 or end <= kept:
        return end
    if source.read(end - 1, end) == b"\n":
        end -= 1  # the newline that ends the last line does not start one
    found = 0
    while end > kept:
        begin = max(kept, end - BLOCK)
        block = source.read(begin, end)
        index = len(block)
        while (index := block.rfind(b"\n", 0, index)) >= 0:
            found += 1
            if found == lines:
                return begin + index + 1
        end = begin
    return kept


def _character_start(source: LogSource, start: int, stop: int) -> int:
    """``stop`` moved back off UTF-8 continuation bytes (at most 3), unless that leaves nothing."""
    base = max(start, stop - 3)
    window = source.read(base, stop + 1)
    position = stop
    while position > base and window[position - base] & 0xC0 == 0x80:
        position -= 1
    return position if position > start else stop
