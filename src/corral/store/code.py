"""Uploaded working folders (``corral.workdirs``), as files in the server's data dir.

One archive per tenant and digest, ``<data dir>/code/<tenant>/<sha256>.tar.gz``: a tenant's jobs may
name only what that tenant uploaded, and asking whether a digest is there tells nothing about other
tenants' code. The same tree uploaded twice is stored once (its digest is its name).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from corral.errors import CorralError
from corral.workdirs import digest_of


class CodeMismatch(CorralError):
    """The uploaded bytes are not what their digest says."""


class CodeStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, tenant: str, digest: str) -> Path:
        """Where ``tenant``'s archive of ``digest`` is (or would be)."""
        return self.root / tenant / (digest.removeprefix("sha256:") + ".tar.gz")

    def has(self, tenant: str, digest: str) -> bool:
        return self.path(tenant, digest).is_file()

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
