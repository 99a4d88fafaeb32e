"""Pods' output as agents ship it: appended in chunks at byte offsets, read back by range.

An agent sends the bytes from the offset it believes the server has. A chunk that does not start
where the stored output ends is ignored and the answer says where it does end, so an agent that
restarted (and forgot) or retried (and duplicated) resumes at the right place: each byte is stored once.

Each pod's output is kept up to a cap: a chunk that takes it past the cap deletes the oldest chunks (so
at most the cap plus one chunk is kept). Reads query only the chunks that overlap the range asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.logs import DEFAULT_LOG_CAP, stream
from corral.store.schema import LogChunkRow

CHUNKS_PER_QUERY = 8
"""Chunks a range read fetches at a time (each at most ~1 MiB): what it holds in memory at once."""


class LogStore:
    def __init__(self, engine: Engine, cap: int = DEFAULT_LOG_CAP) -> None:
        self.engine = engine
        self.cap = cap

    def append(self, job_id: str, attempt: int, pod: int, offset: int, text: str) -> int:
        """Store ``text`` if it starts at the stored output's end; return the stored length (bytes). A NUL
        (which PostgreSQL's text cannot hold) is stored as ``?``, of the same length."""
        text = text.replace("\x00", "?")
        try:
            with Session(self.engine) as session, session.begin():
                length = self._length(session, job_id, attempt, pod)
                if offset != length or not text:
                    return length
                end = length + len(text.encode())
                session.add(LogChunkRow(job_id=job_id, attempt=attempt, pod=pod, end=end, text=text))
                session.execute(
                    delete(LogChunkRow).where(*_of(job_id, attempt, pod), LogChunkRow.end <= end - self.cap)
                )
                return end
        except IntegrityError:  # the same chunk, sent twice at once: the other request stored it
            with Session(self.engine) as session:
                return self._length(session, job_id, attempt, pod)

    def open(self, job_id: str, pod: int, attempt: int | None = None) -> ShippedLog | None:
        """The pod's output in ``attempt`` (None: the latest attempt that shipped any), or None."""
        with Session(self.engine) as session:
            if attempt is None:
                attempt = session.scalar(
                    select(func.max(LogChunkRow.attempt)).where(
                        LogChunkRow.job_id == job_id, LogChunkRow.pod == pod
                    )
                )
                if attempt is None:
                    return None
            where = _of(job_id, attempt, pod)
            length = session.scalar(select(func.max(LogChunkRow.end)).where(*where))
            if length is None:
                return None
            first = session.execute(
                select(LogChunkRow.end, LogChunkRow.text).where(*where).order_by(LogChunkRow.end).limit(1)
            ).one()
            return ShippedLog(self.engine, job_id, attempt, pod, length, first.end - len(first.text.encode()))

    def read(self, job_id: str, pod: int) -> str | None:
        """The pod's whole kept output in the latest attempt that shipped any, or None."""
        source = self.open(job_id, pod)
        if source is None:
            return None
        return b"".join(stream(source, source.kept_from, source.length)).decode(errors="replace")

    def _length(self, session: Session, job_id: str, attempt: int, pod: int) -> int:
        return (
            session.scalar(
                select(func.coalesce(func.max(LogChunkRow.end), 0)).where(*_of(job_id, attempt, pod))
            )
            or 0
        )


@dataclass(frozen=True)
class ShippedLog:
    """One pod's shipped output in one attempt (a ``LogSource``)."""

    engine: Engine
    job_id: str
    attempt: int
    pod: int
    length: int
    kept_from: int

    def read(self, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)``, fetching only the chunks that hold them, a few at a time."""
        parts: list[bytes] = []
        cursor = start
        with Session(self.engine) as session:
            while cursor < stop:
                rows = session.execute(
                    select(LogChunkRow.end, LogChunkRow.text)
                    .where(*_of(self.job_id, self.attempt, self.pod), LogChunkRow.end > cursor)
                    .order_by(LogChunkRow.end)
                    .limit(CHUNKS_PER_QUERY)
                ).all()
                if not rows:
                    break
                for end, text in rows:
                    data = text.encode()
                    begin = end - len(data)
                    parts.append(data[max(cursor, begin) - begin : min(stop, end) - begin])
                    cursor = end
                    if cursor >= stop:
                        break
        return b"".join(parts)


def _of(job_id: str, attempt: int, pod: int) -> tuple:  # type: ignore[type-arg]
    return (LogChunkRow.job_id == job_id, LogChunkRow.attempt == attempt, LogChunkRow.pod == pod)
