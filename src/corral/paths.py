"""Where corral keeps its files on this machine, shared by the server (which writes them) and the client
(which reads the first admin token, so ``corral up`` then ``corral ls`` works without setup).

Pods run as another user and must reach their own folders under ``<data dir>/runs`` but read nothing
else there (docs/security.md): the data dir may be passed through (0711), never listed, and its files
(database, token) are its owner's alone. Root's default data dir is ``/var/lib/corral``, since ``/root``
cannot be passed through by a pod user."""

from __future__ import annotations

import os
from pathlib import Path

TOKEN_FILE = "token"


ROOT_DATA_DIR = Path("/var/lib/corral")


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME")
    if base is None and os.geteuid() == 0:
        return ROOT_DATA_DIR
    return Path(base or Path.home() / ".local" / "share") / "corral"


def secure_data_dir(data_dir: Path) -> None:
    """Make ``data_dir`` (and its files so far) unreadable to pods: the folder 0711, so pods reach their own
    folders inside ``runs``; every file directly in it (database, token) 0600. Files made later are private
    through the process's umask, which the commands set (``private_umask``)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o711)
    for path in data_dir.iterdir():
        if path.is_file() and not path.is_symlink():
            path.chmod(0o600)


def private_umask() -> None:
    """Files and folders this process makes are its owner's alone unless it says otherwise (pods' folders
    are made with their own modes)."""
    os.umask(0o077)


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


def closed_parents(folder: Path) -> list[Path]:
    """The folders above ``folder`` that other users may not pass through (no ``o+x``), outermost first.
    Pods run as another user and start in folders under the data dir: below a closed folder (a clone
    in ``/root``) a pod reaches its own files only by relative path, and ``python3 train.py`` (which
    opens the script by its absolute path) fails."""
    return [parent for parent in reversed(folder.resolve().parents) if not parent.stat().st_mode & 0o001]
