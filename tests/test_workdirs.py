"""Packing a working folder for upload: the same tree is the same archive (a re-submit uploads nothing),
ignore files are honoured, a folder too large is a clear error, and unpacking cannot leave its folder."""

from __future__ import annotations

import io
import random
import tarfile
from pathlib import Path

import pytest

from corral.errors import CorralError
from corral.workdirs import WorkdirTooLarge, pack, unpack


def _project(folder: Path) -> Path:
    (folder / "src").mkdir(parents=True)
    (folder / "train.py").write_text("print('train')\n")
    (folder / "src" / "model.py").write_text("LAYERS = 2\n")
    (folder / "run.sh").write_text("#!/bin/sh\n")
    (folder / "run.sh").chmod(0o755)
    (folder / "data").mkdir()
    (folder / "data" / "shard-0.bin").write_bytes(b"\0" * 1000)
    (folder / "wandb.log").write_text("noise\n")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / ".gitignore").write_text("*.log\n")
    (folder / ".corralignore").write_text("data/\n")
    return folder


def _names(archive: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as opened:
        return opened.getnames()


def test_the_same_tree_packs_to_the_same_digest_wherever_and_whenever_it_lies(tmp_path: Path) -> None:
    first = pack(_project(tmp_path / "a"))
    second_folder = _project(tmp_path / "b")
    (second_folder / "train.py").touch()  # another mtime: the archive holds none
    assert pack(second_folder).digest == first.digest and first.digest.startswith("sha256:")
    (second_folder / "train.py").write_text("print('changed')\n")
    assert pack(second_folder).digest != first.digest


def test_gitignore_corralignore_and_git_are_left_out(tmp_path: Path) -> None:
    packed = pack(_project(tmp_path))
    assert _names(packed.data) == [".corralignore", ".gitignore", "run.sh", "src", "src/model.py", "train.py"]
    assert packed.files == 5


def test_unpacked_code_keeps_its_content_and_executable_bit(tmp_path: Path) -> None:
    archive = tmp_path / "code.tar.gz"
    archive.write_bytes(pack(_project(tmp_path / "project")).data)
    unpack(archive, tmp_path / "pod")
    assert (tmp_path / "pod" / "src" / "model.py").read_text() == "LAYERS = 2\n"
    assert (tmp_path / "pod" / "run.sh").stat().st_mode & 0o111
    assert not (tmp_path / "pod" / "data").exists()


def test_a_folder_over_the_limit_says_what_to_leave_out(tmp_path: Path) -> None:
    project = _project(tmp_path)
    (project / "checkpoint.pt").write_bytes(random.Random(0).randbytes(1 << 20))  # gzip cannot shrink it
    with pytest.raises(WorkdirTooLarge, match=r"packs to more than 0 MiB.*\.corralignore"):
        pack(project, limit=64 * 1024)


def test_an_archive_cannot_write_outside_the_pods_folder(tmp_path: Path) -> None:
    """Archives come from users, and a node may unpack as root: '..' and absolute names are refused."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("../escaped")
        info.size = 2
        archive.addfile(info, io.BytesIO(b"hi"))
    path = tmp_path / "evil.tar.gz"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(tarfile.TarError):
        unpack(path, tmp_path / "pod")
    assert not (tmp_path / "escaped").exists()


def test_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CorralError, match="no such folder on this machine"):
        pack(tmp_path / "nope")
