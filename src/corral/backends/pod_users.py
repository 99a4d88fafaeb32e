"""Who a pod runs as: never the server's (or agent's) own user, so a member's job cannot read its tokens,
its database or other tenants' files.

Like Slurm running a job as the user who submitted it, a node set up per tenant has a Unix user
``corral-<tenant>`` for each tenant, and that tenant's pods run as it; elsewhere pods run as one pod user
(``--pod-user``, default ``corral-pod``, made by ``corral up``/``server``/``agent`` when they run as root),
else ``nobody``. Only root can switch users: a server that is not root runs pods as itself, with the
scrubbed environment only, and says so when it starts (see docs/security.md).
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEFAULT_POD_USER = "corral-pod"
TENANT_USER_PREFIX = "corral-"
FALLBACK_POD_USER = "nobody"


@dataclass(frozen=True)
class PodIdentity:
    """A Unix user a pod's command runs as, with its primary group and no other groups."""

    name: str
    uid: int
    gid: int


class NoPodUser(Exception):
    """No unprivileged user exists to run a pod as."""


def can_switch_users() -> bool:
    return os.geteuid() == 0


class PodUsers:
    """Picks each tenant's pod user on this machine: ``corral-<tenant>``, else the pod user, else nobody;
    None when this process cannot switch users (it is not root)."""

    def __init__(self, pod_user: str = DEFAULT_POD_USER) -> None:
        self.pod_user = pod_user

    def __call__(self, tenant: str) -> PodIdentity | None:
        if not can_switch_users():
            return None
        for name in (TENANT_USER_PREFIX + tenant, self.pod_user, FALLBACK_POD_USER):
            try:
                entry = pwd.getpwnam(name)
            except (KeyError, ValueError):
                continue
            if entry.pw_uid != 0 and entry.pw_gid != 0:  # a user named like a tenant must still not be root
                return PodIdentity(entry.pw_name, entry.pw_uid, entry.pw_gid)
        raise NoPodUser(
            f"no user to run pods as: none of {TENANT_USER_PREFIX}{tenant}, {self.pod_user}, nobody"
        )


def prepare_pod_user(pod_user: str = DEFAULT_POD_USER) -> str:
    """At start of a server or agent: make the default pod user if it is missing (as root, with
    ``useradd --system``), and warn when pods cannot run as another user. Returns a line to announce."""
    if not can_switch_users():
        me = pwd.getpwuid(os.geteuid()).pw_name
        log.warning(
            "not running as root: pods run as %s, this process's own user, and can read whatever it can "
            "(its data dir, tokens, database); run as root to have pods run as %s (docs/security.md)",
            me,
            pod_user,
        )
        return f"WARNING: not root, so pods run as {me} (scrubbed environment only; see docs/security.md)"
    if not _exists(pod_user) and pod_user == DEFAULT_POD_USER:
        useradd = shutil.which("useradd")
        if useradd is not None:
            command = [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent"]
            command += ["--shell", "/usr/sbin/nologin", pod_user]
            subprocess.run(command, capture_output=True, check=False)  # another process may have made it
    if _exists(pod_user):
        return f"pods run as {TENANT_USER_PREFIX}<tenant> where that user exists, else as {pod_user}"
    log.warning("pod user %s does not exist; pods run as %s", pod_user, FALLBACK_POD_USER)
    return f"pods run as {TENANT_USER_PREFIX}<tenant> where that user exists, else as {FALLBACK_POD_USER}"


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
