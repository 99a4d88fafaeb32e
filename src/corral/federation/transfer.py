"""Copying a job's artifacts to a cluster's object store over the S3 API (boto3, any S3-compatible
server: AWS, MinIO, Ceph...).

The artifact rule is checked before a byte moves, and every refusal is logged on ``corral.audit`` with the
job, the artifact, its kind and the cluster: a refused copy is an attempt to move data somewhere it must
not go, which whoever audits the installation needs to see even when the caller shrugs it off.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.core.cluster import ObjectStoreSpec
from corral.errors import CorralError
from corral.federation.artifacts import ArtifactCopy, ArtifactRefused, check_copy
from corral.workdirs import below

audit = logging.getLogger("corral.audit")


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


def push(copy: ArtifactCopy, source: Path, tenant: str, store: ObjectStoreSpec, actor: str) -> Pushed:
    """Copy ``source`` (a file, or a directory with everything under it) to ``store`` under
    ``<tenant>/<job id>/<artifact>``, if the rule allows; ``actor`` names who asked, for the audit log."""
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
    client, failures = _connect(store, copy.cluster)
    try:
        for path, key in files:
            client.upload_file(str(path), store.bucket, key)
    except failures as error:
        raise ObjectStoreError(
            f"copying {copy.artifact!r} to cluster {copy.cluster!r}'s object store failed: {error}"
        ) from None
    finally:
        client.close()
    return Pushed(
        url=f"s3://{store.bucket}/{prefix}",
        keys=tuple(key for _, key in files),
        size=sum(path.stat().st_size for path, _ in files),
    )


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
