"""Pods' output as agents ship it: appended in chunks at byte offsets, read back per pod.

An agent sends the bytes from the offset it believes the server has. A chunk that does not start
where the stored output ends is ignored and the answer says where it does end, so an agent that
restarted (and forgot) or retried (and duplicated) resumes at the right place: each byte is stored once.
"""

from __future__ import annotations

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.store.schema import LogChunkRow


class LogStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def append(self, job_id: str, attempt: int, pod: int, offset: int, text: str) -> int:
        """Store ``text`` if it starts at the stored output's end; return the stored length (bytes)."""
        try:
            with Session(self.engine) as session, session.begin():
                length = self._length(session, job_id, attempt, pod)
                if offset != length or not text:
                    return length
                end = length + len(text.encode())
                session.add(LogChunkRow(job_id=job_id, attempt=attempt, pod=pod, end=end, text=text))
                return end
        except IntegrityError:  # the same chunk, sent twice at once: the other request stored it
            with Session(self.engine) as session:
                return self._length(session, job_id, attempt, pod)

    def read(self, job_id: str, pod: int) -> str | None:
        """The pod's output in the latest attempt that shipped any, or None."""
        with Session(self.engine) as session:
            attempt = session.scalar(
                select(func.max(LogChunkRow.attempt)).where(
                    LogChunkRow.job_id == job_id, LogChunkRow.pod == pod
                )
            )
            if attempt is None:
                return None
            chunks = session.scalars(
                select(LogChunkRow.text)
                .where(LogChunkRow.job_id == job_id, LogChunkRow.pod == pod, LogChunkRow.attempt == attempt)
                .order_by(LogChunkRow.end)
            )
            return "".join(chunks)

    def _length(self, session: Session, job_id: str, attempt: int, pod: int) -> int:
        return (
            session.scalar(
                select(func.coalesce(func.max(LogChunkRow.end), 0)).where(
                    LogChunkRow.job_id == job_id, LogChunkRow.attempt == attempt, LogChunkRow.pod == pod
                )
            )
            or 0
        )
