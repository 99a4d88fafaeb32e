"""Job-scoped tracking tokens: what a job's pods log to MLflow with, and nothing else.

A token reads ``corral_j<id>_<secret>``, like an API token but for one job attempt: it is good for its
tenant's tracking and registry routes only (``/mlflow``), and only while that attempt runs. Its secret is
an HMAC of the token id under the server's tracking key (``<data dir>/tracking.key``, 0600), so the
server can hand the same token to an agent polling for its pods again without keeping the secret: the
store keeps only the secret's SHA-256 digest, as it does for API tokens, and a leaked database grants
nothing. Every API route other than ``/mlflow`` refuses it (``corral.server.auth``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from corral.store.accounts import TOKEN_PREFIX

JOB_TOKEN_MARK = "j"
"""The first letter of a job token's id; API token ids are hex, so never start with it."""
KEY_FILE = "tracking.key"


def is_job_token(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX + JOB_TOKEN_MARK)


def new_token_id() -> str:
    return JOB_TOKEN_MARK + secrets.token_hex(6)


def tracking_key(data_dir: Path) -> bytes:
    """The server's key for job tokens, made on first use; every process of one server shares it."""
    path = data_dir / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, "xb", opener=_private) as file:
                file.write(secrets.token_bytes(32))
        except FileExistsError:
            pass  # another worker of this server made it at the same moment
    return path.read_bytes()


def _private(name: str, flags: int) -> int:
    return os.open(name, flags, 0o600)


def token_secret(key: bytes, token_id: str) -> str:
    return hmac.new(key, token_id.encode(), hashlib.sha256).hexdigest()


def token_text(key: bytes, token_id: str) -> str:
    return f"{TOKEN_PREFIX}{token_id}_{token_secret(key, token_id)}"


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_job_token(token: str) -> tuple[str, str] | None:
    """The id and secret of a job token; None for anything else."""
    if not is_job_token(token):
        return None
    token_id, _, secret = token[len(TOKEN_PREFIX) :].partition("_")
    return (token_id, secret) if secret else None
