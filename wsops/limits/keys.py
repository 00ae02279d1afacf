"""Every Redis key the limits use, built here and nowhere else.

Readable, so operators can inspect them (``<KEY_PREFIX>`` first)::

    wsops:rl:<bucket>:{<ip|user|token>:<id>}  "<TAT ms>|<count>|<period ms>", expires with the TAT
    wsops:conn:{<ip|user>:<id>}               sorted set: connection id -> expiry (ms)
    wsops:ban:{<ip|user|token>:<id>}          JSON {"reason", "until", ...}, expires with the ban
    wsops:ban:{net}:<4|6>:<hex nibbles>/<len> a CIDR ban (``wsratelimit block ip:2001:db8::/48``)
    wsops:ban:{net}:lengths:<4|6>             sorted set: prefix lengths with live CIDR bans

A *bucket* is what a rate counts: ``connect``, ``user_message``, ``action.<group>``
(an action's name unless ``@action(group=...)`` shares one). An action's rate is
keyed by ``ip``, ``user``, ``token`` or, for a ``key=`` callable, ``key``: the
callable's value hashed (``action_key``), so no client text lands in a key.

The braces are Redis Cluster hash tags: a cluster hashes only what is inside them,
so every key of one identity (its bans, rates and cap set) lands in one slot and
one script can decide them atomically, while different identities spread over
the masters. All CIDR bans share the ``{net}`` tag, because the admission script
derives their names from the prefix lengths in use (the one key a script names
itself, always in the slot of the lengths set it was given). On a standalone
Redis the braces are just characters.
"""

from __future__ import annotations

import hashlib
import ipaddress

from .. import store

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
NETWORK_TAG = "{net}"


def tag(kind: str, ident: object) -> str:
    """``{user:42}``: the hash tag of one identity."""
    return f"{{{kind}:{ident}}}"


def untag(text: str) -> tuple[str, str]:
    """``{user:42}`` -> ``("user", "42")`` (the inverse of ``tag``; ids may hold ':')."""
    kind, _, ident = text.removeprefix("{").removesuffix("}").partition(":")
    return kind, ident


def rate_key(bucket: str, kind: str, ident: object) -> str:
    """``rate_key("connect", "ip", "1.2.3.4")`` -> ``wsops:rl:connect:{ip:1.2.3.4}``."""
    return store.key("rl", bucket.replace(":", "."), tag(kind, ident))


def action_key(group: str, kind: str, ident: object) -> str:
    """``wsops:rl:action.<group>:{<ip|user|token|key>:<id>}``; ``kind="key"`` hashes ``ident``."""
    if kind == "key":
        ident = hashlib.sha256(str(ident).encode()).hexdigest()[:32]
    return rate_key("action." + group, kind, ident)


def cap_key(kind: str, ident: object) -> str:
    return store.key("conn", tag(kind, ident))


def ban_key(kind: str, ident: object) -> str:
    return store.key("ban", tag(kind, ident))


def ban_lengths_key(version: int) -> str:
    return store.key("ban", NETWORK_TAG, "lengths", version)


def _hex(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"{int(address):0{address.max_prefixlen // 4}x}"


def network_ban_key(network: Network) -> str:
    """``wsops:ban:{net}:6:20010db8/32``: the network as hex nibbles, as the script builds it."""
    nibbles = -(-network.prefixlen // 4)
    return store.key("ban", NETWORK_TAG, network.version,
                     f"{_hex(network.network_address)[:nibbles]}/{network.prefixlen}")


def network_ban_probe(address: str) -> tuple[str, str]:
    """What the admission script needs to find the CIDR bans covering ``address``: the
    lengths set (passed as a key) and ``<ban key base>|<address as hex nibbles>``."""
    parsed = ipaddress.ip_address(address)
    base = store.key("ban", NETWORK_TAG, parsed.version, "")
    return ban_lengths_key(parsed.version), f"{base}|{_hex(parsed)}"
