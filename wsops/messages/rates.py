"""The shared rates of a message: ``RATES["user_message"]`` and each action's ``rate=``.

Both are decided in one Redis round trip per message (across workers). An
action's rate counts per ``key``: the user (the default), the client IP (its
``IPV6_PREFIX`` network), the token, the connection, or a callable's value
``(scope, data) -> str`` (hashed into the key; ``data`` is the payload as sent,
since rates are charged before validation so invalid floods count too). Actions
naming one ``group`` share its bucket: ``wsops:rl:action.<group>:<kind>:<id>``.

A socket without the identity its key names (an anonymous one for ``user``, a
session one for ``token``, a callable answering None), and every ``connection``
key, counts per connection in process, with no network. Under
``FAIL_MODE="closed"`` a Redis failure falls back to the same rates per
connection in process: limits that vanished whenever Redis is slow would be no
limits. Under ``"open"`` such messages are admitted. An outage never closes an
open socket.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .. import store
from ..conf import get_settings
from ..handshake.state import handshake_of
from ..limits.engine import Limit, LocalRate, get_limiter, hit_all
from ..limits.keys import action_key, rate_key
from ..scope import Scope, signed_in_user
from ..units import Rate
from .actions import ActionSpec, throttled

logger = logging.getLogger("wsops")


@dataclass(frozen=True, slots=True)
class _Rated:
    """One rate a message is checked against."""

    bucket: str  # "user_message" or "action.<group>"
    rate: Rate
    reason: str  # of a refusal
    key: str | None = None  # the shared Redis key; None: per connection only


@dataclass(frozen=True, slots=True)
class _Plan:
    """The rates of one action on one connection, worked out on its first message."""

    local: tuple[_Rated, ...]  # always in process
    shared: tuple[_Rated, ...]  # in Redis; in process when Redis fails under fail-closed
    limits: tuple[Limit, ...]  # ``shared`` as the limiter takes them

    @classmethod
    def of(cls, rated: list[_Rated]) -> _Plan:
        shared = tuple(r for r in rated if r.key is not None)
        return cls(tuple(r for r in rated if r.key is None), shared,
                   tuple(Limit(r.key, r.rate) for r in shared))


class MessageRates:
    """One connection's shared and per-action rates (created on its first rated action)."""

    __slots__ = ("local_rates", "plans", "scope")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.plans: dict[str, _Plan] = {}
        self.local_rates: dict[str, LocalRate] = {}

    def plan(self, spec: ActionSpec, data: Any = None) -> _Plan:
        """The rates of ``spec`` on this connection: worked out once per action, or per
        message for a ``key=`` callable (its key depends on ``data``, the payload)."""
        plan = self.plans.get(spec.name)
        if plan is None:
            plan = self._plan(spec, data)
            if not callable(spec.rate_key) or spec.rate is None:
                self.plans[spec.name] = plan
        return plan

    async def check(self, plan: _Plan) -> None:
        """Charge one message, or raise ``ActionRefused`` (``rate_limited``)."""
        if plan.local:
            self._hit_locally(plan.local)
        if not plan.limits:
            return
        try:
            decision = await get_limiter().admit(limits=plan.limits)
        except store.StoreUnavailable:
            if get_settings().FAIL_MODE == "closed":
                self._hit_locally(plan.shared)
            return
        if not decision.allowed:
            reason = next((r.reason for r in plan.shared if r.key == decision.key),
                          "action_rate")
            raise throttled(reason, decision.retry_after)

    def _plan(self, spec: ActionSpec, data: Any) -> _Plan:
        user = signed_in_user(self.scope)
        rated = []
        user_rate = get_settings().rate("user_message")
        if user_rate and user is not None:
            rated.append(_Rated("user_message", user_rate, "user_message_rate",
                                rate_key("user_message", "user", user.pk)))
        if spec.rate is not None:
            group = spec.group or spec.name
            kind, ident = self._identity(spec, data)
            key = action_key(group, kind, ident) if ident is not None else None
            rated.append(_Rated("action." + group, spec.rate, "action_rate", key))
        return _Plan.of(rated)

    def _identity(self, spec: ActionSpec, data: Any) -> tuple[str, Any]:
        """What the action's rate counts per: ``(kind, id)``; id None: this connection."""
        kind = spec.rate_key
        if callable(kind):
            try:
                value = kind(self.scope, data)
            except Exception:  # the payload is the client's: a key function's bug is logged
                logger.exception("wsops: the rate key of action %r failed", spec.name)
                value = None
            return "key", None if value is None else str(value)
        if kind == "user":
            user = signed_in_user(self.scope)
            return kind, user.pk if user is not None else None
        handshake = handshake_of(self.scope)
        if handshake is None or kind == "connection":
            return kind, None
        if kind == "ip":
            return kind, handshake.ip_key
        return kind, handshake.token.prefix if handshake.token is not None else None

    def _hit_locally(self, rates: tuple[_Rated, ...]) -> None:
        counted = []
        for rated in rates:
            local = self.local_rates.get(rated.bucket)
            if local is None:
                local = self.local_rates[rated.bucket] = LocalRate(rated.rate)
            counted.append((local, rated.reason))
        refused = hit_all(counted)
        if refused is not None:
            raise throttled(refused[1], refused[0])
