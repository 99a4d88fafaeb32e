"""Agents ship pods' output in chunks at byte offsets; each byte is stored once, even when an agent
restarts and starts again from 0, or sends the same chunk twice."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from corral.backends.agent import shippable
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


def test_output_with_nul_bytes_and_bytes_outside_utf8_ships_byte_for_byte(logs: LogStore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A pod that prints binary (a NUL, a byte no UTF-8 holds) gets it shipped, on PostgreSQL too (its
    text holds no NUL), as one character per byte: the stored length is the file's, so the agent's next
    chunk starts where its file does. A NUL used to be a 422 for every chunk, and the agent, failing
    on it, never reported that pod's exit nor synced the node's other pods."""
    raw = b"step 1\x00\xff\xfe done\n"
    text = shippable(raw)
    assert len(text.encode()) == len(raw) and text.startswith("step 1") and text.endswith(" done\n")
    assert logs.append("j-1", 1, 0, 0, text) == len(raw)
    assert logs.append("j-1", 1, 0, len(raw), "next\n") == len(raw) + 5
    assert logs.append("j-1", 1, 0, len(raw) + 5, "a\x00b\n") == len(raw) + 9  # from any agent
    assert "\x00" not in (logs.read("j-1", 0) or "x\x00")
