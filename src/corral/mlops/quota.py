"""How much room a tenant's MLflow artifacts may take on the server's disk.

Uploaded code has its quota (``corral.store.code``); artifacts come through ``/mlflow`` in requests of
at most 16 MiB each, as many as a member or a job's token sends, into the server's data dir, which
every tenant shares. An upload that would take the tenant past its room is a 413 that says how much
it holds. What a tenant holds is counted on disk at each upload (its experiments' folders), so
deleting runs' artifacts makes room at once.
"""

from __future__ import annotations

from pathlib import Path

from corral.mlops.gate import Refused
from corral.mlops.tenancy import Owners
from corral.workdirs import below

ARTIFACT_QUOTA_BYTES = 10 << 30
"""Each tenant's room for MLflow artifacts on the server's disk."""


class ArtifactQuota:
    def __init__(self, root: Path, owners: Owners, limit: int = ARTIFACT_QUOTA_BYTES) -> None:
        """``root``: the server's artifact folder (``<root>/<experiment id>/...``)."""
        self.root = root
        self.owners = owners
        self.limit = limit

    def used(self, tenant: str) -> int:
        """Bytes of the tenant's artifacts on disk."""
        total = 0
        for experiment_id in self.owners.experiments_of(tenant):
            folder = self.root / experiment_id
            for path in below(folder) if folder.is_dir() else ():
                if path.is_file() and not path.is_symlink():
                    total += path.stat().st_size
        return total

    def check(self, tenant: str, adding: int) -> None:
        """Refuse (413) an upload of ``adding`` bytes that the tenant has no room left for."""
        used = self.used(tenant)
        if used + adding > self.limit:
            raise Refused(
                413,
                f"tenant {tenant}'s MLflow artifacts hold {used >> 20} MiB; this upload would pass their "
                f"{self.limit >> 20} MiB: delete runs' artifacts to make room",
            )
