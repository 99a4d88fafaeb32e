"""Where a token may travel: a bearer token is as good as its user, and plain HTTP carries it readably
to every host on the way. Loopback never leaves the machine; any other ``http://`` address does.

The SDK and CLI warn (``CleartextTokenWarning``) when they send a token over plain HTTP to another
host, and send the token ``corral up`` wrote in the default data directory only to a server on this
machine: that token is the local server's admin, and ``--url https://elsewhere`` must not hand it to
whoever answers there. ``corral server --host`` names a non-loopback address with a warning to put TLS
in front (docs/security.md).
"""

from __future__ import annotations

import ipaddress
import warnings

import httpx

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class CleartextTokenWarning(UserWarning):
    """A token is about to be sent over plain HTTP to a host other than this machine."""


def is_loopback(url_or_host: str) -> bool:
    """Whether a URL's host (or a bare host) is this machine: ``localhost`` or a loopback address."""
    host = httpx.URL(url_or_host).host if "://" in url_or_host else url_or_host
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_cleartext(url: str) -> None:
    """Warn, once per place that calls it, when ``url`` would carry a token unencrypted off this machine."""
    if httpx.URL(url).scheme == "http" and not is_loopback(url):
        warnings.warn(
            CleartextTokenWarning(
                f"sending a corral token over plain HTTP to {httpx.URL(url).host}: anyone on the network "
                "path can read and reuse it; use https:// (a TLS proxy in front of the server)"
            ),
            stacklevel=3,
        )
