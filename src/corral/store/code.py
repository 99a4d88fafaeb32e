"""Uploaded working folders (``corral.workdirs``), as files in the server's data dir.

One archive per tenant and digest, ``<data dir>/code/<tenant>/<sha256>.tar.gz``: a tenant's jobs may
name only what that tenant uploaded, and asking whether a digest is there tells nothing about other
tenants' code. The same tree uploaded twice is stored once (its digest is its name).

Each tenant keeps at most ``limit_bytes`` of archives, so no member can fill the server's disk: an upload
that would pass it first removes the tenant's least recently used archives that no pending or running job
names (a job's submission counts as a use); only when those are not enough is it refused.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from corral.errors import CorralError
from corral.workdirs import digest_of

MAX_TENANT_CODE_BYTES = 1 << 30
"""What one tenant's uploaded archives may take on the server's disk, by default: 1 GiB."""


class CodeMismatch(CorralError):
    """The uploaded bytes are not what their digest says."""


class CodeQuotaExceeded(CorralError):
    """The tenant's archives that jobs still need leave no room for this one."""


class CodeStore:
    def __init__(self, root: Path, limit_bytes: int = MAX_TENANT_CODE_BYTES) -> None:
        self.root = root
        self.limit_bytes = limit_bytes

    def path(self, tenant: str, digest: str) -> Path:
        """Where ``tenant``'s archive of ``digest`` is (or would be)."""
        return self.root / tenant / (digest.removeprefix("sha256:") + ".tar.gz")

    def has(self, tenant: str, digest: str) -> bool:
        return self.path(tenant, digest).is_file()

    def use(self, tenant: str, digest: str) -> None:
        """Mark ``digest`` as just used (a job named it): the last archive to be removed for room."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.path(tenant, digest))

    def keep(self, tenant: str, digest: str, data: bytes, needed: Callable[[], set[str]]) -> bool:
        """``put`` within the tenant's limit: room is made first (``make_room``, sparing the digests
        ``needed`` returns, asked only when room must be made); False when it was there already."""
        if not self.has(tenant, digest):
            self.make_room(tenant, len(data), needed())
        return self.put(tenant, digest, data)

    def make_room(self, tenant: str, size: int, needed: set[str]) -> list[str]:
        """Remove ``tenant``'s least recently used archives, none of ``needed`` (digests that pending or
        running jobs name), until ``size`` more bytes fit its limit; the digests removed.
        ``CodeQuotaExceeded`` when even all of the others would not make room."""
        folder = self.root / tenant
        archives = sorted(folder.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
        used = sum(path.stat().st_size for path in archives)
        removable = [path for path in archives if "sha256:" + path.name.removesuffix(".tar.gz") not in needed]
        if used - sum(path.stat().st_size for path in removable) + size > self.limit_bytes:
            raise CodeQuotaExceeded(
                f"tenant {tenant} may keep {self.limit_bytes >> 20} MiB of uploaded code and its pending or "
                f"running jobs need {(used - sum(p.stat().st_size for p in removable)) >> 20} MiB of it: "
                f"{size >> 10} KiB more does not fit until some of them end"
            )
        removed = []
        for path in removable:
            if used + size <= self.limit_bytes:
                break
            used -= path.stat().st_size
            path.unlink(missing_ok=True)
            removed.append("sha256:" + path.name.removesuffix(".tar.gz"))
        return removed

    def put(self, tenant: str, digest: str, data: bytes) -> bool:
        """Keep ``data`` as ``tenant``'s ``digest``; False when it was there already. ``CodeMismatch``
        when the bytes hash to another digest. Written to a temporary file and renamed, so a reader
        never sees half an archive."""
        actual = digest_of(data)
        if actual != digest:
            raise CodeMismatch(f"the body's digest is {actual}, not {digest}: the upload was cut or changed")
        target = self.path(tenant, digest)
        if target.is_file():
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, suffix=".part")
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(temporary, target)
        return True
