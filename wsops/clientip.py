"""The client address that per-IP limits, bans and events use.

The socket peer is the client unless the peer is a trusted proxy
(``WSOPS["TRUSTED_PROXIES"]``: addresses, CIDRs, or ``"unix"`` for a unix-socket
peer, where ``scope["client"]`` is None). Behind trusted proxies we walk
``X-Forwarded-For`` from the right and take the first address that is not a
trusted proxy: entries to its left were written by the client and can be forged.

daphne's ``--proxy-headers`` takes the *left-most* entry, which a client
controls unless the edge proxy overwrites the header (as the nginx config from
``wsdeploy`` does with ``X-Forwarded-For $remote_addr``).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

from .conf import get_settings, on_reload

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=1)
def _trusted() -> tuple[bool, tuple[Network, ...]]:
    proxies = get_settings().TRUSTED_PROXIES
    networks = tuple(ipaddress.ip_network(p, strict=False) for p in proxies if p != "unix")
    return "unix" in proxies, networks


on_reload(_trusted.cache_clear)


def _is_trusted(address: str | None) -> bool:
    trust_unix, networks = _trusted()
    if address is None:
        return trust_unix
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def header(scope: dict[str, Any], name: bytes) -> bytes | None:
    """The last value of a request header (names are lower-case bytes in ASGI)."""
    found = None
    for key, value in scope.get("headers") or ():
        if key == name:
            found = value
    return found


def resolve(peer: str | None, forwarded_for: bytes | None) -> str | None:
    """Pure resolution rule, separated out so it can be property-tested."""
    if not _is_trusted(peer) or not forwarded_for:
        return peer
    try:
        hops = [h.strip() for h in forwarded_for.decode("latin-1").split(",")]
    except Exception:
        return peer
    for hop in reversed(hops):
        if not hop:
            continue
        try:
            candidate = str(ipaddress.ip_address(hop))
        except ValueError:
            return peer  # garbage in the chain: trust nothing the client wrote
        if not _is_trusted(candidate):
            return candidate
    return peer


def client_ip(scope: dict[str, Any]) -> str | None:
    """The client's address for this connection (cached in ``scope["wsops"]``)."""
    state = scope.setdefault("wsops", {})
    if "ip" not in state:
        client = scope.get("client")
        peer = str(client[0]) if client else None
        state["ip"] = resolve(peer, header(scope, b"x-forwarded-for"))
    return state["ip"]
