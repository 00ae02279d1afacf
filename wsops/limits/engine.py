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
from dataclasses import dataclass, field
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


@dataclass(slots=True)
class _Part:
    """The checks of one decision that live in one slot: one ADMIT call."""

    bans: list[str] = field(default_factory=list)
    limits: list[Limit] = field(default_factory=list)
    caps: list[Cap] = field(default_factory=list)
    network: str | None = None
    fetch: str | None = None
    slot: int | None = None


def by_slot(items: Any, key_of: Any = lambda item: item) -> list[tuple[int | None, list[Any]]]:
    """``(slot, items)``: ``items`` grouped by the cluster slot of their key, in order of
    first appearance; one group (slot None) on a standalone or Sentinel-monitored Redis,
    where one node holds every key."""
    items = list(items)
    if not store.is_cluster():
        return [(None, items)] if items else []
    from redis.crc import key_slot

    groups: dict[int, list[Any]] = {}
    for item in items:
        groups.setdefault(key_slot(key_of(item).encode()), []).append(item)
    return list(groups.items())


def _parts(bans: tuple[str, ...], limits: tuple[Limit, ...], caps: tuple[Cap, ...],
           fetch: str | None, network: str | None) -> list[_Part]:
    """The decision split into one part per slot (a single part off a cluster)."""
    entries: list[tuple[str, str, Any]] = [
        *(("bans", key, key) for key in bans),
        *((("network", network_ban_probe(network)[0], network),) if network else ()),
        *(("limits", limit.key, limit) for limit in limits),
        *(("caps", cap.key, cap) for cap in caps),
        *((("fetch", fetch, fetch),) if fetch else ()),
    ]
    parts = []
    for slot, group in by_slot(entries, lambda entry: entry[1]):
        part = _Part(slot=slot)
        for kind, _, value in group:
            if kind in ("network", "fetch"):
                setattr(part, kind, value)
            else:
                getattr(part, kind).append(value)
        parts.append(part)
    return parts or [_Part()]


class RedisLimiter:
    """Shared decisions in Redis: one EVALSHA each, or on a cluster one per slot touched.

    On a cluster a decision's keys span several slots (the address's, the user's, the
    token's, the CIDR bans'), so it is one ADMIT call per slot, sent concurrently: the
    handshake still waits one round trip. Each call commits its own part when its own
    checks pass. When another part refuses (or does not answer), the parts that
    committed are refunded before the refusal is returned (REFUND: the rate charges
    moved back one interval, the cap slots removed), so a refused event is charged
    nothing, as on a single node. The refusal returned is the one a single script
    would have given first: bans, then rates, then caps, in the order passed.
    """

    async def admit(self, bans: tuple[str, ...] = (), limits: tuple[Limit, ...] = (),
                    caps: tuple[Cap, ...] = (), member: str = "", ttl: float = 0,
                    fetch: str | None = None, network: str | None = None) -> Decision:
        if not store.is_cluster():  # one node: the single round trip, nothing to undo
            whole = _Part(list(bans), list(limits), list(caps), network, fetch)
            return await store.call(self._decide(whole, member, ttl), "admit")
        parts = _parts(bans, limits, caps, fetch, network)
        if len(parts) == 1:
            return await store.call(self._decide(parts[0], member, ttl), "admit",
                                    parts[0].slot)
        try:
            decisions = await store.gather([(p.slot, self._decide(p, member, ttl))
                                            for p in parts], "admit")
        except store.StoreUnavailable as error:
            await self._refund(parts, error.answered or [None] * len(parts), member)
            raise
        refused = [decision for decision in decisions if not decision.allowed]
        if not refused:
            fetched = next((d.fetched for p, d in zip(parts, decisions, strict=True)
                            if p.fetch), None)
            return Decision(ALLOWED, fetched=fetched)
        await self._refund(parts, decisions, member)
        order = [*bans, *limits, *caps]
        return min(refused, key=lambda d: (d.outcome != BANNED, d.outcome != OVER_RATE,
                                           _position(order, d.key)))

    async def _decide(self, part: _Part, member: str, ttl: float) -> Decision:
        keys = [*part.bans, *(limit.key for limit in part.limits),
                *(cap.key for cap in part.caps)]
        probe = ""
        if part.network:
            lengths, probe = network_ban_probe(part.network)
            keys.append(lengths)
        args: list[Any] = [len(part.bans), len(part.limits), len(part.caps),
                           1 if part.fetch else 0, probe]
        for limit in part.limits:
            args += [limit.rate.count, int(limit.rate.period * 1000)]
        if part.caps:  # the message path sends no cap arguments at all
            args += [cap.limit for cap in part.caps]
            args += [member, int(ttl * 1000)]
        if part.fetch:
            keys.append(part.fetch)
        reply = await ADMIT.run(store.async_client(), keys, args)
        if reply == 0:  # allowed, nothing fetched: the common case is a bare integer
            return ALLOW
        outcome = _OUTCOMES[int(reply[0])]
        if outcome == ALLOWED:
            return Decision(ALLOWED, fetched=reply[3])
        ban = load_ban(reply[3]) if outcome == BANNED else None
        return Decision(outcome, reply[1], float(reply[2]) / 1000, ban)

    async def _refund(self, parts: list[_Part], answers: list[Any], member: str) -> None:
        """Undo the parts that were admitted (best effort: a cap slot left behind by a
        node that stopped answering expires within CONNECTION_TTL)."""
        calls = [(part.slot, _undo(part.limits, part.caps, member))
                 for part, answer in zip(parts, answers, strict=True)
                 if isinstance(answer, Decision) and answer.allowed
                 and (part.limits or part.caps)]
        if calls:
            try:
                await store.gather(calls, "refund")
            except store.StoreUnavailable:
                pass

    async def refresh(self, slots: list[tuple[str, str]], ttl: float) -> None:
        calls = [(slot, REFRESH.run(store.async_client(), [cap for cap, _ in group],
                                    [int(ttl * 1000), *(member for _, member in group)]))
                 for slot, group in by_slot(slots, lambda entry: entry[0])]
        if calls:
            await store.gather(calls, "refresh")

    async def release(self, caps: tuple[Cap, ...], member: str) -> None:
        await self.refund((), caps, member, "release")

    async def refund(self, limits: tuple[Limit, ...], caps: tuple[Cap, ...],
                     member: str, operation: str = "refund") -> None:
        """Undo one admitted event's rate charges and cap slots: one call per slot."""
        calls = [(slot, _undo([i for i in group if isinstance(i, Limit)],
                              [i for i in group if isinstance(i, Cap)], member))
                 for slot, group in by_slot([*limits, *caps], lambda item: item.key)]
        if calls:
            await store.gather(calls, operation)


def _undo(limits: list[Limit], caps: list[Cap], member: str) -> Any:
    """One REFUND call (one slot): rate charges moved back, ``member`` out of the cap sets."""
    args: list[Any] = [len(limits)]
    for limit in limits:
        args += [limit.rate.count, int(limit.rate.period * 1000)]
    return REFUND.run(store.async_client(), [*(limit.key for limit in limits),
                                             *(cap.key for cap in caps)], [*args, member])


def _position(order: list[Any], key: str) -> int:
    keys = [item if isinstance(item, str) else item.key for item in order]
    return keys.index(key) if key in keys else len(keys)  # a CIDR ban: not passed in


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
