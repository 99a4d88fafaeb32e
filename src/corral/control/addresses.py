"""Which addresses an agent may advertise for its node: where the server's gateway will send callers'
requests to the node's service replicas, with the server's own network position.

An agent speaks for its node, so an address on its node is its to give. An address that is nobody's
node (``0.0.0.0``, multicast) or the cloud's link-local metadata service (``169.254.169.254``, where a
VM's credentials are) is never a replica's, and loopback is the server's own machine: there it reaches
ports only local processes should (MLflow's backend, PostgreSQL, the API itself). Loopback is taken
only from an agent that connects from loopback, which runs on the server's machine and reaches those
ports anyway. Numeric forms a resolver reads as an IPv4 address (``127.1``, ``2130706433``,
``::ffff:127.0.0.1``) are judged as that address.
"""

from __future__ import annotations

import ipaddress
import socket

from corral.errors import CorralError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(CorralError):
    """The advertised address points the gateway somewhere no agent's replicas are; says why."""


def check_advertised(advertised: str, seen_from: str | None) -> str:
    """``advertised`` if an agent connecting from ``seen_from`` may name it as its node's address, else
    ``AddressRefused``. A host name is taken as given, but ``localhost`` counts as loopback."""
    address = _numeric(advertised)
    if address is None:
        name = advertised.lower().rstrip(".")
        if name != "localhost" and not name.endswith(".localhost"):
            return advertised
        address = ipaddress.IPv4Address("127.0.0.1")
    if address.is_loopback:
        seen = _numeric(seen_from) if seen_from is not None else None
        if seen is None or not seen.is_loopback:
            raise AddressRefused(
                f"address {advertised!r} is the server's own loopback; only an agent on the server's "
                f"machine (connecting from loopback, not {seen_from}) may advertise it"
            )
    elif address.is_unspecified or address.is_multicast or address.is_link_local or address.is_reserved:
        raise AddressRefused(
            f"address {advertised!r} is no node's (unspecified, multicast, link-local or reserved): "
            "advertise the address the server reaches this node at"
        )
    return advertised


def _numeric(text: str) -> IPAddress | None:
    """The IP address ``text`` names, as a resolver would read it, or None for a host name."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))  # 127.1, 0x7f.1, 2130706433
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
