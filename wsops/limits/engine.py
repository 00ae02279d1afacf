"""The limits engine: rates, connection caps and bans, each decision one Redis trip.

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

A shared decision is one EVALSHA of ``admit.lua``, which checks, atomically and
in this order, ban keys (and CIDR bans of ``network``), GCRA rate keys and
connection-cap sets, and commits only when everything passes (a refused event
is not charged). It can also return one more key's value (``fetch``): a
handshake reads the token cache in the same trip as its IP checks. The clock
is Redis' own ``TIME``, so workers with skewed clocks still agree.

Two limiters honour the same ``admit(...)`` arguments: ``RedisLimiter``
(shared across workers) and ``LocalLimiter`` (in process: the embedded demo
defaults; it has nothing to fetch, so ``fetched`` is always None). ``LocalRate``
is one per-connection rate in process, with no lock and no network.
"""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

from .. import store
from ..units import Rate
from .keys import network_ban_probe

ADMIT = store.Script(resources.files(__package__).joinpath("admit.lua").read_text())
REFRESH = store.Script(resources.files(__package__).joinpath("refresh.lua").read_text())
REFUND = store.Script(resources.files(__package__).joinpath("refund.lua").read_text())

# Decision outcomes.
ALLOWED, BANNED, OVER_RATE, OVER_CAP, UNAVAILABLE = (
    "allowed", "banned", "over_rate", "over_cap", "unavailable")
_OUTCOMES = {0: ALLOWED, 1: BANNED, 2: OVER_RATE, 3: OVER_CAP}


@dataclass(frozen=True, slots=True)
class Limit:
    """A rate on one key: ``Limit(rate_key("connect", "ip", "1.2.3.4"), Rate(60, 60))``."""

    key: str
    rate: Rate


@dataclass(frozen=True, slots=True)
class Cap:
    """At most ``limit`` live connections registered under ``key``."""

    key: str
    limit: int


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: str
    key: str = ""  # the key that refused
    retry_after: float = 0.0  # seconds
    ban: dict[str, Any] | None = None
    fetched: str | None = None  # the value of ``fetch``, read in the same round trip

    @property
    def allowed(self) -> bool:
        return self.outcome == ALLOWED


ALLOW = Decision(ALLOWED)


class Limiter(Protocol):
    """What both limiters offer; ``get_limiter()`` picks one."""

    async def admit(self, bans: tuple[str, ...] = (), limits: tuple[Limit, ...] = (),
                    caps: tuple[Cap, ...] = (), member: str = "", ttl: float = 0,
                    fetch: str | None = None, network: str | None = None) -> Decision:
        """Bans, then the CIDR bans covering the address ``network``, then rates, then caps
        (registering ``member`` for ``ttl`` seconds); charge nothing unless all pass."""

    async def refresh(self, slots: list[tuple[str, str]], ttl: float) -> None:
        """Push the expiry of live registry entries ``(cap key, member)`` forward."""

    async def release(self, caps: tuple[Cap, ...], member: str) -> None:
        """Free ``member``'s slots in ``caps``."""

    async def refund(self, limits: tuple[Limit, ...], caps: tuple[Cap, ...],
                     member: str) -> None:
        """Undo one admitted event: each rate charge moved back one interval, ``member``
        out of ``caps``."""


def gcra(tat: float, now: float, rate: Rate) -> tuple[float, float]:
    """One GCRA step in seconds: returns ``(new_tat, retry_after)``; retry_after 0 = allowed."""
    new_tat = max(tat, now) + rate.interval
    allow_at = new_tat - rate.period
    if allow_at > now:
        return tat, allow_at - now
    return new_tat, 0.0


class LocalRate:
    """One rate counted in process (per connection): one float of state."""

    __slots__ = ("rate", "tat")

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self.tat = float("-inf")  # never 0.0: monotonic time starts near 0 at boot

    def hit(self) -> float:
        """Count one event; return 0 when allowed, else the seconds to wait."""
        self.tat, retry_after = gcra(self.tat, time.monotonic(), self.rate)
        return retry_after


def hit_all(rates: list[tuple[LocalRate, str]]) -> tuple[float, str] | None:
    """Count one event against several local rates: all of them or none, so a refused
    event is not charged (as in the shared script). Returns ``(retry_after, label)`` of
    the first rate that refuses, else None."""
    now = time.monotonic()
    moves = []
    for local, label in rates:
        new_tat, retry_after = gcra(local.tat, now, local.rate)
        if retry_after:
            return retry_after, label
        moves.append((local, new_tat))
    for local, new_tat in moves:
        local.tat = new_tat
    return None


class RedisLimiter:
    """Shared decisions in Redis: one EVALSHA each."""

    async def admit(self, bans: tuple[str, ...] = (), limits: tuple[Limit, ...] = (),
                    caps: tuple[Cap, ...] = (), member: str = "", ttl: float = 0,
                    fetch: str | None = None, network: str | None = None) -> Decision:
        keys = [*bans, *(limit.key for limit in limits), *(cap.key for cap in caps)]
        args: list[Any] = [len(bans), len(limits), len(caps), 1 if fetch else 0,
                           network_ban_probe(network) if network else ""]
        for limit in limits:
            args += [limit.rate.count, int(limit.rate.period * 1000)]
        if caps:  # the message path sends no cap arguments at all
            args += [cap.limit for cap in caps]
            args += [member, int(ttl * 1000)]
        if fetch:
            keys.append(fetch)
        reply = await store.call(ADMIT.run(store.async_client(), keys, args), "admit")
        if reply == 0:  # allowed, nothing fetched: the common case is a bare integer
            return ALLOW
        outcome = _OUTCOMES[int(reply[0])]
        if outcome == ALLOWED:
            return Decision(ALLOWED, fetched=reply[3])
        ban = load_ban(reply[3]) if outcome == BANNED else None
        return Decision(outcome, reply[1], float(reply[2]) / 1000, ban)

    async def refresh(self, slots: list[tuple[str, str]], ttl: float) -> None:
        if not slots:
            return
        keys = [cap for cap, _ in slots]
        args = [int(ttl * 1000), *(member for _, member in slots)]
        await store.call(REFRESH.run(store.async_client(), keys, args), "refresh")

    async def release(self, caps: tuple[Cap, ...], member: str) -> None:
        if not caps:
            return
        client = store.async_client()
        async with client.pipeline(transaction=False) as pipe:
            for cap in caps:
                pipe.zrem(cap.key, member)
            await store.call(pipe.execute(), "release")

    async def refund(self, limits: tuple[Limit, ...], caps: tuple[Cap, ...],
                     member: str) -> None:
        args: list[Any] = [len(limits)]
        for limit in limits:
            args += [limit.rate.count, int(limit.rate.period * 1000)]
        keys = [*(limit.key for limit in limits), *(cap.key for cap in caps)]
        await store.call(REFUND.run(store.async_client(), keys, [*args, member]))


class LocalLimiter:
    """The same decisions in process (embedded defaults: one worker, nothing shared)."""

    def __init__(self) -> None:
        self.tats: dict[str, float] = {}
        self.bans: dict[str, tuple[float, dict[str, Any]]] = {}  # key -> (until, record)
        self.network_bans: dict[Any, tuple[float, dict[str, Any]]] = {}  # network -> ...
        self.registry: dict[str, dict[str, float]] = {}

    async def admit(self, bans: tuple[str, ...] = (), limits: tuple[Limit, ...] = (),
                    caps: tuple[Cap, ...] = (), member: str = "", ttl: float = 0,
                    fetch: str | None = None, network: str | None = None) -> Decision:
        now = time.monotonic()
        for key in bans:
            until, record = self.bans.get(key, (float("-inf"), {}))
            if until > now:
                return Decision(BANNED, key, ban=record)
        if network is not None and self.network_bans:
            address = ipaddress.ip_address(network)
            for cidr, (until, record) in self.network_bans.items():
                if until > now and address.version == cidr.version and address in cidr:
                    return Decision(BANNED, str(cidr), ban=record)
        new_tats = []
        for limit in limits:
            new_tat, retry_after = gcra(self.tats.get(limit.key, float("-inf")), now, limit.rate)
            if retry_after:
                return Decision(OVER_RATE, limit.key, retry_after)
            new_tats.append(new_tat)
        for cap in caps:
            live = {m: exp for m, exp in self.registry.get(cap.key, {}).items() if exp > now}
            self.registry[cap.key] = live
            if member not in live and len(live) >= cap.limit:
                return Decision(OVER_CAP, cap.key)
        for limit, new_tat in zip(limits, new_tats, strict=True):
            self.tats[limit.key] = new_tat
        for cap in caps:
            self.registry[cap.key][member] = now + ttl
        return ALLOW

    async def refresh(self, slots: list[tuple[str, str]], ttl: float) -> None:
        now = time.monotonic()
        for cap, member in slots:
            if member in self.registry.get(cap, {}):
                self.registry[cap][member] = now + ttl

    async def release(self, caps: tuple[Cap, ...], member: str) -> None:
        for cap in caps:
            self.registry.get(cap.key, {}).pop(member, None)

    async def refund(self, limits: tuple[Limit, ...], caps: tuple[Cap, ...],
                     member: str) -> None:
        for limit in limits:
            if limit.key in self.tats:
                self.tats[limit.key] -= limit.rate.interval
        await self.release(caps, member)


def load_ban(raw: str) -> dict[str, Any]:
    """A ban record as stored (JSON), or one made of raw text that is not JSON."""
    try:
        record = json.loads(raw)
        return record if isinstance(record, dict) else {"reason": str(record)}
    except ValueError:
        return {"reason": raw}


_local = LocalLimiter()
_redis = RedisLimiter()


def get_limiter() -> Limiter:
    """The shared Redis limiter when Redis is configured, else the in-process one."""
    return _redis if store.redis_url() else _local


def reset_local_limiter() -> None:
    """Forget every in-process decision (tests)."""
    _local.__init__()
