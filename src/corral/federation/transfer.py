"""Copying a job's artifacts to a cluster's object store over the S3 API (boto3, any S3-compatible
server: AWS, MinIO, Ceph...).

The artifact rule is checked before a byte moves, and every refusal is logged on ``corral.audit`` with the
job, the artifact, its kind and the cluster: a refused copy is an attempt to move data somewhere it must
not go, which whoever audits the installation needs to see even when the caller shrugs it off.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from corral.core.cluster import ObjectStoreSpec
from corral.errors import CorralError
from corral.federation.artifacts import ArtifactCopy, ArtifactRefused, check_copy
from corral.workdirs import below

audit = logging.getLogger("corral.audit")
PROC_FDS = Path("/proc/self/fd")
"""Where Linux says which file a descriptor is (elsewhere the path is resolved, without that guard)."""


class ArtifactOutside(CorralError):
    """A file of the artifact is a link (or a swapped-in link) that leads out of the job's folders, or
    is not a regular file: copying it would hand the caller whatever the server may read."""


class ObjectStoreError(CorralError):
    """The object store could not take the copy: no credentials, unreachable, no such bucket, refused."""


@dataclass(frozen=True)
class Pushed:
    url: str
    """``s3://bucket/<tenant>/<job id>/<artifact>``: the object, or the prefix of a directory's objects."""
    keys: tuple[str, ...]
    size: int
    """Bytes copied."""


def object_key(tenant: str, job: str, name: str) -> str:
    """Keys group artifacts by tenant, then job, so a bucket policy can grant a team its own prefix."""
    return f"{tenant}/{job}/{name}"


def push(
    copy: ArtifactCopy,
    source: Path,
    tenant: str,
    store: ObjectStoreSpec,
    actor: str,
    within: Sequence[Path] = (),
) -> Pushed:
    """Copy ``source`` (a file, or a directory with everything under it) to ``store`` under
    ``<tenant>/<job id>/<artifact>``, if the rule allows; ``actor`` names who asked, for the audit log.

    Only regular files that lie inside ``within`` (default: ``source`` itself, or the folder holding a
    file) are read: the pod that wrote the artifact owns its folder and may have put a symbolic link in
    it (to the server's token), and the server reads as root. A file is checked where it was opened, so
    a link swapped in after the listing is caught too; a link to elsewhere inside is followed (model
    snapshots link to their blobs). Anything else is ``ArtifactOutside``: every file is checked before
    the first is copied, so a refusal copies nothing (unless a link is swapped in during the copy)."""
    try:
        check_copy(copy)
    except ArtifactRefused as refusal:
        audit.warning(
            "refused artifact copy for %s: job %s, artifact %r (kind %s), cluster %s: %s",
            actor,
            copy.job,
            copy.artifact,
            copy.kind,
            copy.cluster,
            refusal,
        )
        raise
    prefix = object_key(tenant, copy.job, copy.artifact)
    files = [(source, prefix)] if source.is_file() else _tree(source, prefix)
    resolved = source.resolve()
    allowed = [folder.resolve() for folder in within] or [resolved if resolved.is_dir() else resolved.parent]
    size = 0
    for path, _ in files:  # every file checked before a byte moves: a refusal copies nothing
        with _open_inside(path, allowed) as content:
            size += os.fstat(content.fileno()).st_size
    client, failures = _connect(store, copy.cluster)
    try:
        for path, key in files:
            with _open_inside(path, allowed) as content:  # again: a link may have been swapped in
                client.upload_fileobj(content, store.bucket, key)
    except failures as error:
        raise ObjectStoreError(
            f"copying {copy.artifact!r} to cluster {copy.cluster!r}'s object store failed: {error}"
        ) from None
    finally:
        client.close()
    return Pushed(url=f"s3://{store.bucket}/{prefix}", keys=tuple(key for _, key in files), size=size)


def _open_inside(path: Path, allowed: Sequence[Path]) -> BinaryIO:
    """``path`` opened for reading, if what was opened is a regular file inside one of ``allowed``
    (read back from the open descriptor, so no link swapped in meanwhile can redirect it); else
    ``ArtifactOutside``. Opened without blocking, so a FIFO cannot hang the request."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as error:
        raise ArtifactOutside(f"{path.name}: cannot be read ({error.strerror})") from None
    content = os.fdopen(descriptor, "rb")
    opened = Path(os.readlink(f"/proc/self/fd/{descriptor}")) if PROC_FDS.is_dir() else path.resolve()
    if not stat.S_ISREG(os.fstat(descriptor).st_mode) or not any(opened.is_relative_to(a) for a in allowed):
        content.close()
        raise ArtifactOutside(
            f"{path.name} leads to {opened}, outside the job's folders: an artifact holds only files the "
            "job wrote there (a link out of them is not followed)"
        )
    return content


def _tree(folder: Path, prefix: str) -> list[tuple[Path, str]]:
    return [
        (path, f"{prefix}/{path.relative_to(folder).as_posix()}")
        for path in sorted(below(folder))
        if path.is_file()
    ]


def _connect(store: ObjectStoreSpec, cluster: str) -> tuple[Any, tuple[type[Exception], ...]]:
    """A boto3 S3 client with the credentials the spec's variables hold in this process's environment,
    and the errors an upload may raise (boto3 is optional, so they are imported only here)."""
    try:
        import boto3
        from boto3.exceptions import Boto3Error
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise ObjectStoreError(
            "copying artifacts needs boto3 on the server: pip install 'corral[s3]'"
        ) from None
    key_id = os.environ.get(store.access_key_variable)
    secret = os.environ.get(store.secret_key_variable)
    if not key_id or not secret:
        raise ObjectStoreError(
            f"cluster {cluster!r}'s object store needs credentials: set {store.access_key_variable} and "
            f"{store.secret_key_variable} in the server's environment"
        )
    client = boto3.client(
        "s3",
        endpoint_url=store.endpoint,
        region_name=store.region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(connect_timeout=5, retries={"max_attempts": 2}),
    )
    return client, (BotoCoreError, ClientError, Boto3Error, OSError)
