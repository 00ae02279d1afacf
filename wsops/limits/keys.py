"""Every Redis key the limits use, built here and nowhere else.

Readable, so operators can inspect them (``<KEY_PREFIX>`` first)::

    wsops:rl:<bucket>:<ip|user|token>:<id>  "<TAT ms>|<count>|<period ms>", expires with the TAT
    wsops:conn:<ip|user>:<id>               sorted set: connection id -> expiry (ms)
    wsops:ban:<ip|user|token>:<id>          JSON {"reason", "until", ...}, expires with the ban
    wsops:ban:net:<4|6>:<hex nibbles>/<len> a CIDR ban (``wsratelimit block ip:2001:db8::/48``)
    wsops:ban:lengths:<4|6>                 sorted set: prefix lengths with live CIDR bans

A *bucket* is what a rate counts: ``connect``, ``user_message``, ``action.<group>``
(an action's name unless ``@action(group=...)`` shares one). An action's rate is
keyed by ``ip``, ``user``, ``token`` or, for a ``key=`` callable, ``key``: the
callable's value hashed (``action_key``), so no client text lands in a key.
Python passes every key to the scripts as ``KEYS``, except the CIDR ban keys,
which the admission script derives from the lengths in use (``admit.lua``).
"""

from __future__ import annotations

import hashlib
import ipaddress

from .. import store

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def rate_key(bucket: str, kind: str, ident: object) -> str:
    """``rate_key("connect", "ip", "1.2.3.4")`` -> ``wsops:rl:connect:ip:1.2.3.4``."""
    return store.key("rl", bucket.replace(":", "."), kind, ident)


def action_key(group: str, kind: str, ident: object) -> str:
    """``wsops:rl:action.<group>:<ip|user|token>:<id>``; ``kind="key"`` hashes ``ident``."""
    if kind == "key":
        ident = hashlib.sha256(str(ident).encode()).hexdigest()[:32]
    return rate_key("action." + group, kind, ident)


def cap_key(kind: str, ident: object) -> str:
    return store.key("conn", kind, ident)


def ban_key(kind: str, ident: object) -> str:
    return store.key("ban", kind, ident)


def ban_lengths_key(version: int) -> str:
    return store.key("ban", "lengths", version)


def _hex(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"{int(address):0{address.max_prefixlen // 4}x}"


def network_ban_key(network: Network) -> str:
    """``wsops:ban:net:6:20010db8/32``: the network as hex nibbles, as the script builds it."""
    nibbles = -(-network.prefixlen // 4)
    return store.key("ban", "net", network.version,
                     f"{_hex(network.network_address)[:nibbles]}/{network.prefixlen}")


def network_ban_probe(address: str) -> str:
    """What the admission script needs to find the CIDR bans covering ``address``."""
    parsed = ipaddress.ip_address(address)
    base = store.key("ban", "net", parsed.version, "")
    return f"{ban_lengths_key(parsed.version)}|{base}|{_hex(parsed)}"
