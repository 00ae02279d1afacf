"""The client address that per-IP limits, bans and events use.

One canonical form everywhere (the socket peer, ``X-Forwarded-For`` entries,
``TRUSTED_PROXIES``, bans, Redis keys, events): ``ipaddress``'s text, with an
IPv4-mapped IPv6 address (``::ffff:10.0.0.2``, what daphne reports when bound
to ``::``) turned into its IPv4 address, and any zone (``%eth0``), brackets or
port removed. Without that, a ban on ``127.0.0.1`` would not match a client
seen as ``::ffff:127.0.0.1``.

Per-IP limits key an IPv6 client by its network, ``WSOPS["IPV6_PREFIX"]``
(default 64), not by its address: anyone with an ordinary /64 has 2**64
addresses to rotate through, so a per-address key limits nothing.
``per_ip_key()`` is that key (``2001:db8:1:2::/64``); IPv4 keys are addresses.

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
from .scope import header

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_ADDRESS_LENGTH = 64  # longer than any address form with zone and port


def parse_address(text: str) -> Address | None:
    """An address in any common notation, canonical (IPv4-mapped -> IPv4), or None.

    Accepts ``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``, ``[2001:db8::1]:443``,
    ``fe80::1%eth0`` and ``::ffff:1.2.3.4``; anything else is None.
    """
    text = text.strip()
    if not text or len(text) > MAX_ADDRESS_LENGTH:
        return None
    if text.startswith("["):
        text, bracket, _ = text[1:].partition("]")
        if not bracket:
            return None
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    text = text.partition("%")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def canonical_network(network: Network) -> Network:
    """An IPv4-mapped IPv6 network (``::ffff:10.0.0.0/104``) as the IPv4 network it maps."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96 and \
            network.network_address.ipv4_mapped is not None:
        return ipaddress.IPv4Network(
            (network.network_address.ipv4_mapped, network.prefixlen - 96))
    return network


def address_key(address: Address) -> str:
    """The per-IP key of an address: itself for IPv4, its ``IPV6_PREFIX`` network for IPv6."""
    if address.version == 4:
        return str(address)
    prefix = get_settings().IPV6_PREFIX
    if prefix == 128:
        return str(address)
    return str(ipaddress.IPv6Network((address, prefix), strict=False))


@lru_cache(maxsize=1)
def _trusted() -> tuple[bool, tuple[Network, ...]]:
    proxies = get_settings().TRUSTED_PROXIES
    networks = tuple(canonical_network(ipaddress.ip_network(p, strict=False))
                     for p in proxies if p != "unix")
    return "unix" in proxies, networks


on_reload(_trusted.cache_clear)


def _is_trusted(address: Address | None) -> bool:
    trust_unix, networks = _trusted()
    if address is None:
        return trust_unix
    return any(address in network for network in networks)


def resolve(peer: str | None, forwarded_for: bytes | None) -> str | None:
    """Pure resolution rule, separated out so it can be property-tested.

    Returns the canonical client address, or None (a unix-socket peer that is
    not trusted, or a peer that is not an address).
    """
    peer_address = parse_address(peer) if peer else None
    if peer is not None and peer_address is None:
        return None
    if not _is_trusted(peer_address) or not forwarded_for:
        return str(peer_address) if peer_address else None
    try:
        hops = forwarded_for.decode("latin-1").split(",")
    except Exception:
        hops = []
    for hop in reversed(hops):
        if not hop.strip():
            continue
        candidate = parse_address(hop)
        if candidate is None:
            break  # garbage in the chain: trust nothing the client wrote
        if not _is_trusted(candidate):
            return str(candidate)
    return str(peer_address) if peer_address else None


def client_address(scope: dict[str, Any]) -> str | None:
    """The client's canonical address for a connection (``Handshake.parse`` keeps it)."""
    client = scope.get("client")
    peer = str(client[0]) if client else None
    return resolve(peer, header(scope, b"x-forwarded-for"))


def per_ip_key(address: str | None) -> str | None:
    """The id per-IP limits, caps and bans use for an address (IPv6: its network)."""
    return address_key(ipaddress.ip_address(address)) if address else None
