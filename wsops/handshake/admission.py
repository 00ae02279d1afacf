"""Admission: the bans, rates and caps a connection must pass, written once.

Two kinds of checks, each built here and nowhere else:

- the client address's: the IP ban (and CIDR bans covering it), the per-IP
  connect rate (``connect_checks``);
- the identity's, once known: user and token bans, the per-user connect rate,
  the per-user cap, plus the per-IP cap for a new registration
  (``identity_checks``).

Every handshake transport, and the first-frame login, goes through
``identity_checks``; the caller chooses when (``wsops.middleware``), and every
decision goes through ``decide()``, so the outage rule is in one place too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import codes, signals, store
from ..conf import get_settings
from ..limits.engine import BANNED, OVER_CAP, OVER_RATE, Cap, Decision, Limit, get_limiter
from ..limits.keys import ban_key, cap_key, rate_key
from .refusal import Refused, unavailable
from .state import Admission, Handshake


@dataclass(frozen=True, slots=True)
class Checks:
    """What one ``admit`` call checks."""

    bans: tuple[str, ...] = ()
    limits: tuple[Limit, ...] = ()
    caps: tuple[Cap, ...] = ()

    def __add__(self, other: Checks) -> Checks:
        return Checks(self.bans + other.bans, self.limits + other.limits,
                      self.caps + other.caps)

    def __bool__(self) -> bool:
        return bool(self.bans or self.limits or self.caps)

    def key_names(self) -> set[str]:
        return {*self.bans, *(limit.key for limit in self.limits),
                *(cap.key for cap in self.caps)}


def connect_checks(ip_key: str | None) -> Checks:
    """The address's ban and connect rate (none for a peer without an address)."""
    if ip_key is None:
        return Checks()
    rate = get_settings().rate("connect")
    return Checks(bans=(ban_key("ip", ip_key),),
                  limits=(Limit(rate_key("connect", "ip", ip_key), rate),) if rate else ())


def identity_checks(user_id: Any, token_prefix: str | None) -> Checks:
    """User and token bans, the per-user connect rate and the per-user cap."""
    conf = get_settings()
    bans: tuple[str, ...] = ()
    limits: tuple[Limit, ...] = ()
    caps: tuple[Cap, ...] = ()
    if user_id is not None:
        bans = (ban_key("user", user_id),)
        if (rate := conf.rate("connect")) is not None:
            limits = (Limit(rate_key("connect", "user", user_id), rate),)
        if conf.MAX_CONNECTIONS_PER_USER:
            caps = (Cap(cap_key("user", user_id), conf.MAX_CONNECTIONS_PER_USER),)
    if token_prefix is not None:
        bans += (ban_key("token", token_prefix),)
    return Checks(bans, limits, caps)


def ip_cap(ip_key: str | None) -> Checks:
    limit = get_settings().MAX_CONNECTIONS_PER_IP
    if ip_key is None or not limit:
        return Checks()
    return Checks(caps=(Cap(cap_key("ip", ip_key), limit),))


async def decide(checks: Checks, *, member: str = "", fetch: str | None = None,
                 network: str | None = None) -> Decision | None:
    """Ask the limiter; None means "Redis is down and FAIL_MODE is open: admit".

    Raises ``Refused`` when a check refuses, or when Redis is down under fail-closed.
    """
    try:
        decision = await get_limiter().admit(
            bans=checks.bans, limits=checks.limits, caps=checks.caps, member=member,
            ttl=get_settings().CONNECTION_TTL, fetch=fetch, network=network)
    except store.StoreUnavailable:
        if get_settings().FAIL_MODE == "open":
            return None
        raise unavailable() from None
    return decision


def refusal_for(decision: Decision, user_id: Any = None) -> Refused:
    """The documented close code and event of a refusing decision.

    ``user_id``: whose identity was decided before authentication (a token this
    worker has verified before), so the event names the user.
    """
    about: dict[str, Any] = {"key": decision.key}
    if user_id is not None:
        about["user_id"] = user_id
    if decision.outcome == BANNED:
        reason = (decision.ban or {}).get("reason") or "banned"
        return Refused(codes.FORBIDDEN, signals.BANNED, reason, **about)
    if decision.outcome == OVER_RATE:
        return Refused(codes.RATE_LIMITED, signals.THROTTLE, "connect_rate",
                       retry_after=round(decision.retry_after, 3), **about)
    if decision.outcome == OVER_CAP:
        return Refused(codes.RATE_LIMITED, signals.CONNECTION_CAP, "too_many_connections",
                       **about)
    return unavailable()


async def admit(handshake: Handshake, checks: Checks, member: str, user_id: Any,
                **extra: Any) -> Admission:
    """Decide ``checks`` for ``member``; the slots taken, or raise ``Refused``.

    ``extra`` (``fetch``, ``network``) rides along in the same round trip; what was
    fetched is kept on the handshake.
    """
    decision = await decide(checks, member=member, **extra) if checks else None
    if decision is not None and not decision.allowed:
        raise refusal_for(decision, user_id)
    if decision is not None and extra.get("fetch"):
        handshake.cached_token = decision.fetched
    if decision is None:
        return Admission(str(user_id), member, ())
    return Admission(str(user_id), member, checks.caps, checks.limits)


async def release(admission: Admission | None) -> None:
    """Free cap slots; if Redis is down they expire within CONNECTION_TTL."""
    if admission is not None and admission.caps:
        try:
            await get_limiter().release(admission.caps, admission.member)
        except store.StoreUnavailable:
            pass


async def refund(admission: Admission) -> None:
    """Undo an admission that should not have counted: its rate charges and cap slots."""
    if admission.caps or admission.limits:
        try:
            await get_limiter().refund(admission.limits, admission.caps, admission.member)
        except store.StoreUnavailable:
            pass  # the slots expire within CONNECTION_TTL; the charges within their period
