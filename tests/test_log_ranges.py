"""Pods' output is read by range and by its last lines without loading the whole of it, kept up to a cap
(what is older is dropped, and the answer says from where), and followed as a stream until the job ends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import TextLog, make_cluster, make_pool
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select

import corral.logs
from corral.control.reconcile import Inventory
from corral.logs import FileLog, pod_log_files, span, stream, tail_start
from corral.server.app import API, create_app
from corral.store.accounts import AccountStore
from corral.store.database import open_store
from corral.store.jobs import JobStore
from corral.store.logs import LogStore
from corral.store.schema import LogChunkRow

INVENTORY = Inventory(clusters=[make_cluster("lab", [make_pool("dgx", flavor="a100", count=1, gpus=8)])])
LINES = b"".join(b"line %d\n" % i for i in range(10))


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 7 bytes, so every read and tail crosses block boundaries."""
    monkeypatch.setattr(corral.logs, "BLOCK", 7)


@pytest.mark.parametrize(("lines", "expected"), [(0, b""), (1, b"line 9\n"), (3, LINES[-21:]), (50, LINES)])
def test_the_last_lines_are_found_reading_backwards(small_blocks: None, lines: int, expected: bytes) -> None:
    log = TextLog(LINES)
    assert log.data[tail_start(log, lines) :] == expected
    unterminated = TextLog(LINES + b"partial")
    assert unterminated.data[tail_start(unterminated, 1) :] == b"partial"


def test_a_range_is_streamed_in_blocks_and_never_cuts_a_character(small_blocks: None) -> None:
    log = TextLog("héllo wörld\n".encode())
    part = span(log, offset=0, limit=2)  # byte 2 is inside "é"
    assert (part.start, part.stop) == (0, 1)
    assert b"".join(stream(log, part.start, part.stop)) == b"h"
    rest = span(log, offset=part.stop)
    assert b"".join(stream(log, rest.start, rest.stop)).decode() == "éllo wörld\n"
    assert all(len(block) <= 7 for block in stream(log, 0, log.length))
    past = span(log, offset=10**9)
    assert past.start == past.stop == log.length


def test_a_file_log_serves_only_its_last_cap_bytes(tmp_path: Path) -> None:
    path = tmp_path / "job" / "attempt-2" / "pod-0" / "output.log"
    path.parent.mkdir(parents=True)
    path.write_bytes(LINES)
    (tmp_path / "job" / "attempt-1" / "pod-0").mkdir(parents=True)
    source = pod_log_files(tmp_path, cap=14)("job", 0, None)
    assert isinstance(source, FileLog) and source.kept_from == len(LINES) - 14
    part = span(source, offset=0)
    assert part.kept_from == part.start == len(LINES) - 14
    assert b"".join(stream(source, part.start, part.stop)) == b"line 8\nline 9\n"
    assert pod_log_files(tmp_path)("job", 0, 1) is None and pod_log_files(tmp_path)("other", 0, None) is None


@pytest.fixture
def logs(database_url: str) -> Iterator[LogStore]:
    store = LogStore(open_store(database_url), cap=20)
    yield store
    store.engine.dispose()


def test_shipped_chunks_past_the_cap_are_deleted_and_reads_say_from_where(logs: LogStore) -> None:
    offset = 0
    for i in range(10):
        offset = logs.append("j-1", 1, 0, offset, f"chunk {i}\n")  # 8 bytes each
    with logs.engine.connect() as connection:
        kept = connection.scalar(select(func.count()).select_from(LogChunkRow))
    assert kept == 3  # 24 bytes: the cap (20) and the one chunk that crosses it
    source = logs.open("j-1", 0)
    assert source is not None and (source.kept_from, source.length) == (56, 80)
    part = span(source, offset=0, limit=12)
    assert (part.start, part.stop) == (56, 68)
    assert source.read(part.start, part.stop) == b"chunk 7\nchun"
    assert source.read(60, 80) == b"k 7\nchunk 8\nchunk 9\n"
    assert logs.read("j-1", 0) == "chunk 7\nchunk 8\nchunk 9\n"


def test_shipped_offsets_may_pass_32_bits(logs: LogStore) -> None:
    far = 2**32
    with logs.engine.begin() as connection:  # as if 4 GiB had been shipped and dropped
        connection.execute(
            insert(LogChunkRow), {"job_id": "j-2", "attempt": 1, "pod": 0, "end": far, "text": "x"}
        )
    assert logs.append("j-2", 1, 0, far, "more\n") == far + 5
    source = logs.open("j-2", 0)
    assert source is not None and source.read(far, far + 5) == b"more\n"


@pytest.fixture
def api(database_url: str) -> Iterator[tuple[TestClient, JobStore]]:
    store = JobStore(open_store(database_url))
    token = AccountStore(store.engine).bootstrap()
    app = create_app(store, INVENTORY, log_cap=30)
    app.state.control_plane.follow_seconds = 0.0
    yield TestClient(app, headers={"Authorization": f"Bearer {token}"}), store
    store.engine.dispose()


def test_the_logs_route_reads_by_range_and_tail_and_says_what_was_dropped(
    api: tuple[TestClient, JobStore],
) -> None:
    http, store = api
    job = store.submit(_spec()).id
    _start(store, job)  # only the running attempt may ship output
    shipped = 0
    for i in range(6):
        shipped = http.post(
            f"{API}/jobs/{job}/pods/0/logs", json={"attempt": 1, "offset": shipped, "text": f"line {i}\n"}
        ).json()["length"]
    whole = http.get(f"{API}/jobs/{job}/logs")
    # the cap (30) keeps the newest chunks: those after the one that ends before the last 30 bytes
    assert whole.text == "line 1\nline 2\nline 3\nline 4\nline 5\n"
    assert whole.headers["x-log-truncated-before"] == whole.headers["x-log-start"] == "7"
    assert whole.headers["x-log-end"] == whole.headers["x-log-length"] == "42"
    tail = http.get(f"{API}/jobs/{job}/logs", params={"tail": 2})
    assert tail.text == "line 4\nline 5\n" and tail.headers["x-log-start"] == "28"
    part = http.get(f"{API}/jobs/{job}/logs", params={"offset": 21, "limit": 7})
    assert part.text == "line 3\n" and part.headers["x-log-end"] == "28"
    assert http.get(f"{API}/jobs/{job}/logs", params={"offset": 42}).text == ""


def test_following_a_log_streams_new_output_until_the_job_ends(api: tuple[TestClient, JobStore]) -> None:
    http, store = api
    job = store.submit(_spec())
    plane = http.app.state.control_plane  # type: ignore[attr-defined]
    opened = plane.open_log
    polls = []

    def growing(job_id: str, pod: int, attempt: int | None = None):  # type: ignore[no-untyped-def]
        """Each poll the pod writes a line; after the third, the job ends."""
        polls.append(attempt)
        if len(polls) <= 3:
            plane.shipped_logs.append(job_id, 1, 0, 7 * (len(polls) - 1), f"step {len(polls)}\n")
        if len(polls) == 3:
            store.finish(job_id, succeeded=True)
        return opened(job_id, pod, attempt)

    _start(store, job.id)
    plane.open_log = growing
    followed = http.get(f"{API}/jobs/{job.id}/logs", params={"follow": True})
    assert followed.status_code == 200
    assert followed.text == "step 1\nstep 2\nstep 3\n"
    assert polls == [1, 1, 1, 1]  # the last poll found nothing new after the end


def _spec():  # type: ignore[no-untyped-def]
    from corral.spec.job import JobSpec

    return JobSpec(name="t", command="true")


def _start(store: JobStore, job_id: str) -> None:
    from corral.control.reconcile import reconcile
    from corral.scheduling import get_policy

    reconcile(store.engine, INVENTORY, get_policy("default"), now=0.0)
    assert store.get(job_id).status == "running" and store.get(job_id).attempt == 1
