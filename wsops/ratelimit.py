"""Rate limits, connection caps and bans, decided in one Redis round trip.

Algorithm: GCRA (the generic cell rate algorithm, as in redis-cell). Each key
stores one number, the "theoretical arrival time" (TAT) of the next event. An
event is allowed when ``TAT + interval - period <= now``; it then moves the TAT
on by one interval (``period / count``). So a client may burst ``count``
events at once and then continues at exactly the sustained rate.

Why GCRA rather than fixed windows (django-ratelimit's model): a fixed window
lets a client send ``count`` events just before a window edge and ``count``
more just after it, double the rate in an instant. GCRA has no edges; after a
full burst the next event waits one interval. Why not a sliding log: that
keeps one entry per event (memory grows with the rate); GCRA keeps one float
per key and needs no cleanup beyond the key's own expiry.

A shared decision is one EVALSHA of ``ADMIT`` which checks, atomically and in
this order, ban keys, GCRA rate keys and connection-cap sets, and commits
only when everything passes (a refused event is not charged). It can also
return one more key's value (``fetch``): the handshake reads the token cache
in the same round trip as the IP checks, and when that is a cached token,
decide its identity (user and token bans, user connect rate, connection caps)
in that trip too: a token handshake then makes one round trip before accept. The clock is
Redis' own ``TIME``, so workers with skewed clocks still agree.

``LocalLimiter`` implements the same decision in process, for the embedded
demo defaults and for per-connection limits that need no network.

Key layout (``<KEY_PREFIX>`` first):
    wsops:rl:<scope>:<ip|user|token>:<id>   "<TAT ms>|<count>|<period ms>", expires with the TAT
    wsops:conn:<ip|user>:<id>               sorted set: connection id -> expiry (ms)
    wsops:ban:<ip|user|token>:<id>          JSON {"reason", "until"}, expires with the ban
"""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import dataclass
from typing import Any

from . import store
from .conf import get_settings
from .units import Rate

ADMIT = store.Script(
    """
local nbans, nrates, ncaps = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local nfetch = tonumber(ARGV[4])
local network = ARGV[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local k, a = 1, 6
local rate_keys, rate_counts, rate_periods, tats = {}, {}, {}, {}
local cap_keys, cap_limits = {}, {}

local function banned(key)
  return redis.call('GET', key)
end

local function check_rate(key, count, period)
  local raw = redis.call('GET', key)
  local tat = raw and tonumber(string.match(raw, '^[^|]+')) or now
  if tat < now then tat = now end
  local new_tat = tat + period / count
  if new_tat - period > now then return tostring(new_tat - period - now) end
  table.insert(rate_keys, key)
  table.insert(rate_counts, count)
  table.insert(rate_periods, period)
  table.insert(tats, new_tat)
  return nil
end

-- CIDR bans: network is "<lengths zset>|<key base>|<address as hex nibbles>". The
-- zset lists the prefix lengths that have live bans; for each, the address is cut
-- to that many bits and the ban key of that network is read.
local function network_ban(spec)
  local lengths, base, hex = string.match(spec, '^([^|]+)|([^|]+)|(%x+)$')
  if not hex then return nil end
  for _, len in ipairs(redis.call('ZRANGEBYSCORE', lengths, now, '+inf')) do
    local bits = tonumber(len)
    local full, rest = math.floor(bits / 4), bits % 4
    local prefix = string.sub(hex, 1, full)
    if rest > 0 then
      local nibble = tonumber(string.sub(hex, full + 1, full + 1), 16)
      local step = 2 ^ (4 - rest)
      prefix = prefix .. string.format('%x', nibble - nibble % step)
    end
    local key = base .. prefix .. '/' .. len
    local ban = redis.call('GET', key)
    if ban then return key, ban end
  end
  return nil
end

for i = 1, nbans do
  local ban = banned(KEYS[k])
  if ban then return {1, KEYS[k], '0', ban} end
  k = k + 1
end
if network ~= '' then
  local key, ban = network_ban(network)
  if key then return {1, key, '0', ban} end
end
for i = 1, nrates do
  local retry = check_rate(KEYS[k], tonumber(ARGV[a]), tonumber(ARGV[a + 1]))
  if retry then return {2, KEYS[k], retry} end
  k, a = k + 1, a + 2
end
for i = 1, ncaps do
  table.insert(cap_keys, KEYS[k])
  table.insert(cap_limits, tonumber(ARGV[a]))
  k, a = k + 1, a + 1
end
local member, ttl
if ncaps > 0 then
  member, ttl = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
end

-- nfetch 1: return one more key; 2: it is a cached token "<mac>|<until>|<user id>|<prefix>|...",
-- and the identity's bans, connect rate and caps are decided in this same trip.
local fetched = false
local identity = 0
if nfetch > 0 then fetched = redis.call('GET', KEYS[k]) end
if nfetch == 2 and fetched then
  local uid, prefix = string.match(fetched, '^[^|]+|[^|]+|([^|]+)|([^|]+)|')
  if uid then
    identity = 1
    local P, ip = ARGV[a], ARGV[a + 1]
    local ucount, uperiod = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    local ucap, ipcap = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
    member, ttl = ARGV[a + 6], tonumber(ARGV[a + 7])
    for _, key in ipairs({P .. 'ban:user:' .. uid, P .. 'ban:token:' .. prefix}) do
      local ban = banned(key)
      if ban then return {1, key, '0', ban, uid} end
    end
    if ucount > 0 then
      local key = P .. 'rl:connect:user:' .. uid
      local retry = check_rate(key, ucount, uperiod)
      if retry then return {2, key, retry, false, uid} end
    end
    if ucap > 0 then
      table.insert(cap_keys, P .. 'conn:user:' .. uid)
      table.insert(cap_limits, ucap)
    end
    if ipcap > 0 then
      table.insert(cap_keys, P .. 'conn:ip:' .. ip)
      table.insert(cap_limits, ipcap)
    end
  end
end

for i, key in ipairs(cap_keys) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZSCORE', key, member) == false
     and redis.call('ZCARD', key) >= cap_limits[i] then
    return {3, key, '0', false,
            identity == 1 and string.match(fetched, '^[^|]+|[^|]+|([^|]+)|') or false}
  end
end
for i, key in ipairs(rate_keys) do
  local value = tostring(tats[i]) .. '|' .. rate_counts[i] .. '|' .. rate_periods[i]
  redis.call('SET', key, value, 'PX', math.max(1, math.ceil(tats[i] - now)))
end
for _, key in ipairs(cap_keys) do
  redis.call('ZADD', key, now + ttl, member)
  redis.call('PEXPIRE', key, ttl)
end
if nfetch > 0 then return {0, '', '0', fetched, identity} end
return 0
"""
)

REFRESH = store.Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local ttl = tonumber(ARGV[1])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', now + ttl, ARGV[i + 1])
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return #KEYS
"""
)

ALLOWED, BANNED, THROTTLED, CAPPED = "allowed", "banned", "throttled", "cap"
_OUTCOMES = {0: ALLOWED, 1: BANNED, 2: THROTTLED, 3: CAPPED}


@dataclass(frozen=True)
class Limit:
    """A rate on one key: ``Limit(rate_key("connect", "ip", "1.2.3.4"), Rate(60, 60))``."""

    key: str
    rate: Rate


@dataclass(frozen=True)
class Cap:
    """At most ``limit`` live connections registered under ``key``."""

    key: str
    limit: int


@dataclass(frozen=True)
class IdentityAdmission:
    """The identity-level checks to run when the fetched token cache entry exists.

    The cache entry starts with ``<user id>|<token prefix>|``, so the script
    can name the user's and token's keys itself: bans, the per-user connect
    rate, and the user and IP connection caps, registered as ``member``.
    """

    ip: str
    user_rate: Rate | None
    user_cap: int | None
    ip_cap: int | None
    member: str
    ttl: float

    def arguments(self) -> list[Any]:
        rate = self.user_rate
        return [store.key(""), self.ip, rate.count if rate else 0,
                int(rate.period * 1000) if rate else 0, self.user_cap or 0, self.ip_cap or 0,
                self.member, int(self.ttl * 1000)]

    def caps(self, user_id: str) -> tuple[Cap, ...]:
        held = []
        if self.user_cap:
            held.append(Cap(cap_key("user", user_id), self.user_cap))
        if self.ip_cap:
            held.append(Cap(cap_key("ip", self.ip), self.ip_cap))
        return tuple(held)


@dataclass(frozen=True)
class Decision:
    outcome: str
    key: str = ""
    retry_after: float = 0.0  # seconds
    ban: dict[str, Any] | None = None
    fetched: str | None = None  # the value of ``fetch``, read in the same round trip
    identity_admitted: bool = False  # the cached token's identity was admitted too
    user_id: str | None = None  # whose identity a refusal of the cached token was about

    @property
    def allowed(self) -> bool:
        return self.outcome == ALLOWED


ALLOW = Decision(ALLOWED)


def rate_key(scope: str, kind: str, ident: object) -> str:
    return store.key("rl", scope.replace(":", "."), kind, ident)


def cap_key(kind: str, ident: object) -> str:
    return store.key("conn", kind, ident)


def ban_key(kind: str, ident: object) -> str:
    return store.key("ban", kind, ident)


def gcra(tat: float, now: float, rate: Rate) -> tuple[float, float]:
    """One GCRA step in seconds: returns ``(new_tat, retry_after)``; retry_after 0 = allowed."""
    new_tat = max(tat, now) + rate.interval
    allow_at = new_tat - rate.period
    if allow_at > now:
        return tat, allow_at - now
    return new_tat, 0.0


class ConnectionThrottle:
    """A per-connection rate in process: no lock, no network, one float of state."""

    __slots__ = ("rate", "tat")

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self.tat = 0.0

    def hit(self) -> float:
        """Count one event; return 0 when allowed, else the seconds to wait."""
        self.tat, retry_after = gcra(self.tat, time.monotonic(), self.rate)
        return retry_after


class RedisLimiter:
    """Shared decisions in Redis: one EVALSHA each."""

    async def admit(
        self,
        bans: tuple[str, ...] = (),
        limits: tuple[Limit, ...] = (),
        caps: tuple[Cap, ...] = (),
        member: str = "",
        ttl: float = 0,
        fetch: str | None = None,
        identity: IdentityAdmission | None = None,
        network: str | None = None,
    ) -> Decision:
        keys = [*bans, *(limit.key for limit in limits), *(cap.key for cap in caps)]
        args: list[Any] = [len(bans), len(limits), len(caps),
                           (2 if identity else 1) if fetch else 0,
                           network_ban_probe(network) if network else ""]
        for limit in limits:
            args += [limit.rate.count, int(limit.rate.period * 1000)]
        if caps:  # the message path sends no cap arguments at all
            args += [cap.limit for cap in caps]
            args += [member, int(ttl * 1000)]
        if fetch:
            keys.append(fetch)
            if identity:
                args += identity.arguments()
        reply = await store.call(ADMIT.run(store.async_client(), keys, args), "admit")
        if reply == 0:  # allowed, nothing fetched: the common case is a bare integer
            return ALLOW
        outcome = _OUTCOMES[int(reply[0])]
        if outcome == ALLOWED:
            return Decision(ALLOWED, fetched=reply[3], identity_admitted=bool(int(reply[4])))
        ban = _load_ban(reply[3]) if outcome == BANNED else None
        user_id = reply[4] if len(reply) > 4 and reply[4] else None
        return Decision(outcome, reply[1], float(reply[2]) / 1000, ban, user_id=user_id)

    async def refresh(self, caps: list[tuple[str, str]], ttl: float) -> None:
        """Push the expiry of live registry entries ``(cap key, member)`` forward."""
        if not caps:
            return
        keys = [cap for cap, _ in caps]
        args = [int(ttl * 1000), *(member for _, member in caps)]
        await store.call(REFRESH.run(store.async_client(), keys, args), "refresh")

    async def release(self, caps: tuple[Cap, ...], member: str) -> None:
        if not caps:
            return
        client = store.async_client()
        async with client.pipeline(transaction=False) as pipe:
            for cap in caps:
                pipe.zrem(cap.key, member)
            await store.call(pipe.execute(), "release")


class LocalLimiter:
    """The same decisions in process (embedded defaults: one worker, nothing shared)."""

    def __init__(self) -> None:
        self.tats: dict[str, float] = {}
        self.bans: dict[str, tuple[float, dict[str, Any]]] = {}
        self.registry: dict[str, dict[str, float]] = {}

    async def admit(
        self,
        bans: tuple[str, ...] = (),
        limits: tuple[Limit, ...] = (),
        caps: tuple[Cap, ...] = (),
        member: str = "",
        ttl: float = 0,
        fetch: str | None = None,
        identity: IdentityAdmission | None = None,
        network: str | None = None,
    ) -> Decision:
        now = time.monotonic()
        for ban in bans:
            until, record = self.bans.get(ban, (0.0, {}))
            if until > now:
                return Decision(BANNED, ban, ban=record)
        new_tats = []
        for limit in limits:
            new_tat, retry_after = gcra(self.tats.get(limit.key, 0.0), now, limit.rate)
            if retry_after:
                return Decision(THROTTLED, limit.key, retry_after)
            new_tats.append(new_tat)
        for cap in caps:
            live = {m: exp for m, exp in self.registry.get(cap.key, {}).items() if exp > now}
            self.registry[cap.key] = live
            if member not in live and len(live) >= cap.limit:
                return Decision(CAPPED, cap.key)
        for limit, new_tat in zip(limits, new_tats, strict=True):
            self.tats[limit.key] = new_tat
        for cap in caps:
            self.registry[cap.key][member] = now + ttl
        return ALLOW

    async def refresh(self, caps: list[tuple[str, str]], ttl: float) -> None:
        now = time.monotonic()
        for cap, member in caps:
            if member in self.registry.get(cap, {}):
                self.registry[cap][member] = now + ttl

    async def release(self, caps: tuple[Cap, ...], member: str) -> None:
        for cap in caps:
            self.registry.get(cap.key, {}).pop(member, None)


def _load_ban(raw: str) -> dict[str, Any]:
    try:
        record = json.loads(raw)
        return record if isinstance(record, dict) else {"reason": str(record)}
    except ValueError:
        return {"reason": raw}


_local = LocalLimiter()
_redis = RedisLimiter()


def get_limiter() -> RedisLimiter | LocalLimiter:
    """The shared Redis limiter when Redis is configured, else the in-process one."""
    return _redis if store.redis_url() else _local


# --- bans, from commands and views (blocking client) ---------------------------------


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
        pipe.zadd(_ban_lengths_key(network.version), {str(network.prefixlen): until_ms}, gt=True)
        pipe.execute()
    return record


def unban(client: Any, identity: Identity) -> bool:
    network = identity.network
    key = ban_key(identity.kind, identity.id) if network is None else network_ban_key(network)
    return bool(client.delete(key))


def _ban_lengths_key(version: int) -> str:
    return store.key("ban", "lengths", version)


def _hex(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"{int(address):0{address.max_prefixlen // 4}x}"


def network_ban_key(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """``wsops:ban:net:6:20010db8/32``: the network as hex nibbles, as the script builds it."""
    nibbles = -(-network.prefixlen // 4)
    return store.key("ban", "net", network.version,
                     f"{_hex(network.network_address)[:nibbles]}/{network.prefixlen}")


def network_ban_probe(address: str) -> str:
    """What the admission script needs to find the CIDR bans covering ``address``."""
    parsed = ipaddress.ip_address(address)
    base = store.key("ban", "net", parsed.version, "")
    return f"{_ban_lengths_key(parsed.version)}|{base}|{_hex(parsed)}"


# --- the operators' view (``wsratelimit``) -------------------------------------------


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
    from .clientip import address_key, canonical_network, parse_address

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
        scope, kind, ident = rest[3:].split(":", 2)
        return [scope, kind, ident]
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


def snapshot(client: Any, *, scope: str | None = None, identity: Identity | None = None,
             progress: Any = None, limit: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """Live counters, connection counts and bans, read from Redis (``limit`` keys of each)."""
    from .conf import get_settings

    base = store.key("")
    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) / 1000
    wanted_kind = identity.kind if identity else "*"
    wanted_id = identity.id if identity else "*"

    counters = []
    rate_keys = scan(client, f"{base}rl:{scope or '*'}:{wanted_kind}:{wanted_id}", progress,
                     limit) if scope not in ("connections", "bans") else []
    for key, raw in zip(rate_keys, _mget(client, rate_keys), strict=True):
        if raw is None:
            continue
        scope_name, kind, ident = _split_key(key, base)
        tat, count, period_ms = (float(part) for part in raw.split("|"))
        backlog = max(0.0, tat - now_ms)
        interval = period_ms / count
        counters.append({
            "scope": scope_name, "kind": kind, "id": ident,
            "used": min(int(count), int(-(-backlog // interval))), "limit": int(count),
            "period": period_ms / 1000, "reset_in": round(backlog / 1000, 3),
        })

    conf = get_settings()
    caps = {"user": conf.MAX_CONNECTIONS_PER_USER, "ip": conf.MAX_CONNECTIONS_PER_IP}
    connections = []
    if scope in (None, "connections"):
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
    if scope in (None, "bans"):
        pattern = f"{base}ban:{wanted_kind}:{wanted_id}"
        if identity is not None and identity.network is not None:
            pattern = network_ban_key(identity.network)
        lengths = {_ban_lengths_key(4), _ban_lengths_key(6)}
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
            record = _load_ban(raw)
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


def reset(client: Any, identity: Identity, scope: str | None = None) -> int:
    """Delete the rate counters of an identity (one scope, or all); return how many."""
    keys = scan(client, f"{store.key('')}rl:{scope or '*'}:{identity.kind}:{identity.id}")
    return client.delete(*keys) if keys else 0
