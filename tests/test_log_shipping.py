"""Agents ship pods' output in chunks at byte offsets; each byte is stored once, even when an agent
restarts and starts again from 0, or sends the same chunk twice."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from corral.store.database import open_store
from corral.store.logs import LogStore


@pytest.fixture
def logs(database_url: str) -> Iterator[LogStore]:
    store = LogStore(open_store(database_url))
    yield store
    store.engine.dispose()


def test_chunks_append_at_their_offset_and_mismatches_say_where_to_resume(logs: LogStore) -> None:
    assert logs.read("j-1", 0) is None
    assert logs.append("j-1", 1, 0, 0, "héllo\n") == 7
    assert logs.append("j-1", 1, 0, 0, "héllo\n") == 7  # a retry: ignored
    assert logs.append("j-1", 1, 0, 3, "lo\n") == 7  # a forgetful agent: told to resume at 7
    assert logs.append("j-1", 1, 0, 7, "world\n") == 13
    assert logs.read("j-1", 0) == "héllo\nworld\n"
    assert logs.append("j-1", 2, 0, 0, "attempt 2\n") == 10  # a resumed job starts a new log
    assert logs.read("j-1", 0) == "attempt 2\n" and logs.read("j-1", 1) is None
