"""The operators' view of the limits: bans, live counters, resets (``wsratelimit``, admin).

Everything here runs on the blocking client from commands and views, never on
a socket's path. Reads use SCAN (never KEYS) so they stay safe on a Redis with
millions of keys; the key layout is in ``wsops.limits.keys``.
"""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import dataclass
from typing import Any

from .. import store
from ..clientip import address_key, canonical_network, parse_address
from ..conf import get_settings
from .engine import load_ban
from .keys import ban_key, ban_lengths_key, network_ban_key


def ban(client: Any, identity: Identity, seconds: int, reason: str = "") -> dict[str, Any]:
    """Refuse new connections of ``identity`` on every worker for ``seconds``.

    The reason is shown to operators and, with ``EXPLAIN_REFUSALS``, to the client:
    it is kept to one printable line of at most 200 characters.
    """
    reason = "".join(c if c.isprintable() else " " for c in reason).strip()[:200]
    record = {"reason": reason, "until": int(time.time() + seconds), "created": int(time.time())}
    network = identity.network
    if network is None:
        client.set(ban_key(identity.kind, identity.id), json.dumps(record), ex=int(seconds))
        return record
    record["cidr"] = str(network)
    redis_seconds, micros = client.time()
    until_ms = (int(redis_seconds) + seconds) * 1000 + int(micros) // 1000
    with client.pipeline(transaction=True) as pipe:
        pipe.set(network_ban_key(network), json.dumps(record), ex=int(seconds))
        # The prefix lengths in use, each scored with the end of its longest ban.
        pipe.zadd(ban_lengths_key(network.version), {str(network.prefixlen): until_ms}, gt=True)
        pipe.execute()
    return record


def unban(client: Any, identity: Identity) -> bool:
    network = identity.network
    key = ban_key(identity.kind, identity.id) if network is None else network_ban_key(network)
    return bool(client.delete(key))












@dataclass(frozen=True)
class Identity:
    """``ip:1.2.3.4``, ``ip:2001:db8::/48``, ``user:42`` or ``token:wst_ab12cd34``."""

    kind: str
    id: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        """The CIDR of an IP identity wider than one per-IP key, else None."""
        if self.kind != "ip" or "/" not in self.id:
            return None
        network = ipaddress.ip_network(self.id)
        per_ip = 32 if network.version == 4 else get_settings().IPV6_PREFIX
        return network if network.prefixlen < per_ip else None


def parse_identity(text: str) -> Identity:
    """Parse ``kind:id``; raise ValueError with what is expected.

    IP identities take the canonical per-IP key (``address_key``): an IPv6 address
    names its ``IPV6_PREFIX`` network, since that is what limits and bans key by.
    A CIDR wider than that stays a network (``ip:2001:db8::/48``); a narrower one
    names the per-IP key it lies in.
    """
    kind, _, ident = text.partition(":")
    if kind not in ("ip", "user", "token") or not ident:
        raise ValueError(
            f"expected ip:ADDRESS, ip:CIDR, user:ID|USERNAME or token:PREFIX, got {text!r}")
    if kind == "ip":
        if "/" in ident:
            try:
                network = canonical_network(ipaddress.ip_network(ident.strip(), strict=False))
            except ValueError:
                raise ValueError(f"{ident!r} is not an IP address or CIDR network")
            identity = Identity("ip", str(network))
            if identity.network is not None:
                return identity
            ident = str(network.network_address)
        address = parse_address(ident)
        if address is None:
            raise ValueError(f"{ident!r} is not an IP address or CIDR network")
        ident = address_key(address)
    return Identity(kind, ident)


def ip_matches(address: str | None, ident: str) -> bool:
    """Whether a connection's canonical address falls under an IP identity's id."""
    if address is None:
        return False
    if "/" not in ident:
        return address == ident
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(ident)
    except ValueError:
        return False


def _split_key(key: str, base: str) -> list[str]:
    """``<prefix>wsops:rl:connect:ip:::1`` -> ``["connect", "ip", "::1"]`` (ids may hold ':')."""
    rest = key[len(base):]
    if rest.startswith("rl:"):
        bucket, kind, ident = rest[3:].split(":", 2)
        return [bucket, kind, ident]
    return rest.split(":", 2)[1:]


def scan(client: Any, pattern: str, progress: Any = None, limit: int | None = None
         ) -> list[str]:
    """Keys matching ``pattern`` with SCAN (never KEYS); ``progress(scanned)`` on long scans.

    ``limit``: stop once that many keys are found (the admin pages' bound).
    """
    keys, cursor, scanned, started = [], 0, 0, time.monotonic()
    while True:
        cursor, batch = client.scan(cursor=cursor, match=pattern, count=5000)
        keys.extend(batch)
        scanned += 5000
        if progress is not None and time.monotonic() - started > 1:
            progress(scanned)
        if limit is not None and len(keys) >= limit:
            return keys[:limit]
        if cursor == 0:
            return keys


def snapshot(client: Any, *, bucket: str | None = None, identity: Identity | None = None,
             progress: Any = None, limit: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """Live counters, connection counts and bans, read from Redis (``bucket``: one rate
    bucket such as ``connect``, or ``connections`` / ``bans`` for those tables alone;
    ``limit``: read at most that many keys of each kind)."""
    base = store.key("")
    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) / 1000
    wanted_kind = identity.kind if identity else "*"
    wanted_id = identity.id if identity else "*"

    counters = []
    rate_keys = scan(client, f"{base}rl:{bucket or '*'}:{wanted_kind}:{wanted_id}", progress,
                     limit) if bucket not in ("connections", "bans") else []
    for key, raw in zip(rate_keys, _mget(client, rate_keys), strict=True):
        if raw is None:
            continue
        bucket_name, kind, ident = _split_key(key, base)
        tat, count, period_ms = (float(part) for part in raw.split("|"))
        backlog = max(0.0, tat - now_ms)
        interval = period_ms / count
        counters.append({
            "scope": bucket_name, "kind": kind, "id": ident,
            "used": min(int(count), int(-(-backlog // interval))), "limit": int(count),
            "period": period_ms / 1000, "reset_in": round(backlog / 1000, 3),
        })

    conf = get_settings()
    caps = {"user": conf.MAX_CONNECTIONS_PER_USER, "ip": conf.MAX_CONNECTIONS_PER_IP}
    connections = []
    if bucket in (None, "connections"):
        cap_keys = scan(client, f"{base}conn:{wanted_kind}:{wanted_id}", progress, limit)
        with client.pipeline(transaction=False) as pipe:
            for key in cap_keys:
                pipe.zcount(key, now_ms, "+inf")
            live_counts = pipe.execute()
        for key, live in zip(cap_keys, live_counts, strict=True):
            kind, ident = _split_key(key, base)
            if live:
                connections.append({"kind": kind, "id": ident, "live": live,
                                    "cap": caps.get(kind)})

    bans = []
    if bucket in (None, "bans"):
        pattern = f"{base}ban:{wanted_kind}:{wanted_id}"
        if identity is not None and identity.network is not None:
            pattern = network_ban_key(identity.network)
        lengths = {ban_lengths_key(4), ban_lengths_key(6)}
        ban_keys = [k for k in scan(client, pattern, progress, limit) if k not in lengths]
        with client.pipeline(transaction=False) as pipe:
            for key in ban_keys:
                pipe.get(key)
                pipe.pttl(key)
            replies = pipe.execute()
        for index, key in enumerate(ban_keys):
            raw, ttl = replies[2 * index], replies[2 * index + 1]
            if raw is None:
                continue
            record = load_ban(raw)
            kind, ident = _split_key(key, base)
            if kind == "net":  # a CIDR ban: the record names its network
                kind, ident = "ip", str(record.get("cidr", ident))
            bans.append({"kind": kind, "id": ident, "reason": record.get("reason", ""),
                         "expires_in": round(max(ttl, 0) / 1000)})
    return {"counters": counters, "connections": connections, "bans": bans}


def _mget(client: Any, keys: list[str]) -> list[str | None]:
    values: list[str | None] = []
    for start in range(0, len(keys), 1000):
        values.extend(client.mget(keys[start:start + 1000]))
    return values


def reset(client: Any, identity: Identity, bucket: str | None = None) -> int:
    """Delete the rate counters of an identity (one bucket, or all); return how many."""
    keys = scan(client, f"{store.key('')}rl:{bucket or '*'}:{identity.kind}:{identity.id}")
    return client.delete(*keys) if keys else 0
