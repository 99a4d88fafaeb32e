"""Where corral keeps its files on this machine, shared by the server (which writes them) and the client
(which reads the first admin token, so ``corral up`` then ``corral ls`` works without setup)."""

from __future__ import annotations

import os
from pathlib import Path

TOKEN_FILE = "token"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "corral"


def write_token(data_dir: Path, token: str) -> Path:
    """The first admin's token, readable by its owner only."""
    path = data_dir / TOKEN_FILE
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(token + "\n")
    return path


def read_token(data_dir: Path | None = None) -> str | None:
    """The token in ``data_dir`` (default: the default data directory), if there is one."""
    try:
        return (((data_dir or default_data_dir()) / TOKEN_FILE).read_text().strip()) or None
    except OSError:
        return None
