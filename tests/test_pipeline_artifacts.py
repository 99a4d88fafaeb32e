"""Packing a pod's declared outputs: deterministic, paths kept, and nothing read that the pod could use
to make the (possibly root) node read elsewhere or block: links, FIFOs."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from corral.pipelines.artifacts import OutputUnavailable, pack_output, store_outputs
from corral.workdirs import below, unpack


def test_an_output_keeps_its_paths_and_the_same_bytes_give_the_same_digest(tmp_path: Path) -> None:
    for work in (tmp_path / "a", tmp_path / "b"):
        (work / "data" / "raw").mkdir(parents=True)
        (work / "data" / "train.csv").write_text("x,y\n1,2\n")
        (work / "data" / "raw" / "note").write_text("n")
        (work / "data" / "link").symlink_to("train.csv")  # inside the output: kept as a link
    first, second = pack_output(tmp_path / "a", "data"), pack_output(tmp_path / "b", "data")
    assert first.digest == second.digest and first.files == 2
    archive = tmp_path / "out.tar.gz"
    archive.write_bytes(first.data)
    unpack(archive, tmp_path / "c")
    assert (tmp_path / "c" / "data" / "train.csv").read_text() == "x,y\n1,2\n"
    assert os.readlink(tmp_path / "c" / "data" / "link") == "train.csv"
    with tarfile.open(archive) as opened:
        assert opened.getnames() == ["data", "data/link", "data/raw", "data/raw/note", "data/train.csv"]


def test_a_link_on_the_way_to_an_output_is_refused_not_followed(tmp_path: Path) -> None:
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "token").write_text("admin")
    work = tmp_path / "work"
    work.mkdir()
    (work / "out").symlink_to(tmp_path / "secret")
    (work / "model.pkl").symlink_to(tmp_path / "secret" / "token")
    for path in ("out/token", "model.pkl"):
        with pytest.raises(OutputUnavailable, match="is a symbolic link"):
            pack_output(work, path)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "model.pkl")
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "dir" / "pipe")
    for path in ("model.pkl", "dir"):
        with pytest.raises(OutputUnavailable, match="is not a regular file"):
            pack_output(tmp_path, path)


def test_store_outputs_keeps_what_it_can_and_says_why_not_for_the_rest(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(b"weights")
    kept: dict[str, str] = {}
    problems = store_outputs(
        tmp_path, {"model": "model.pkl", "report": "report.json"}, lambda n, p: kept.update({n: p.digest})
    )
    assert list(kept) == ["model"]
    assert problems == {"report": "report.json was not written"}


def test_an_output_holding_more_bytes_than_it_may_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A pod's sparse file takes no disk and packs small, but reading a terabyte of zeros would take the
    reconcile loop, which packs outputs, hours: the files' sizes are checked before they are read."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "small.txt").write_text("fine")
    with open(tmp_path / "out" / "sparse.bin", "wb") as sparse:
        sparse.truncate(1 << 30)  # a gibibyte that takes no disk
    with pytest.raises(OutputUnavailable, match="out holds more than 256 MiB of files"):
        pack_output(tmp_path, "out")


def test_an_output_nested_deeper_than_python_recurses_is_packed(tmp_path: Path) -> None:
    """``os.walk`` and ``Path.rglob`` recurse (before Python 3.12): a pod's folders nested 1100 deep made
    packing its output a ``RecursionError`` in the reconcile loop, and so did the next pod's start."""
    deepest = tmp_path / "out"
    for _ in range(1101):  # past the recursion limit; not mkdir(parents=True): it recurses too
        deepest.mkdir()
        deepest = deepest / "d"
    (deepest.parent / "leaf.txt").write_text("bottom")
    try:
        packed = pack_output(tmp_path, "out")
        with tarfile.open(fileobj=io.BytesIO(packed.data), mode="r:gz") as archive:
            leaf = archive.extractfile(
                archive.getmember((deepest.parent / "leaf.txt").relative_to(tmp_path).as_posix())
            )
            assert leaf is not None and leaf.read() == b"bottom"
        assert packed.files == 1
    finally:  # deepest first: pytest's own clean-up (shutil.rmtree) recurses
        for path in sorted(below(tmp_path / "out"), key=lambda p: len(p.parts), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
