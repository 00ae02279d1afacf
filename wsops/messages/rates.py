"""The shared rates of a message: ``RATES["user_message"]`` and each action's ``rate=``.

Both are decided in one Redis round trip per message (per user across workers).
An anonymous socket has no user to share a bucket with, so its action rates count
per connection, in process. Under ``FAIL_MODE="closed"`` a Redis failure falls
back to the same rates per connection in process: limits that vanished whenever
Redis is slow would be no limits. Under ``"open"`` such messages are admitted.
An outage never closes an open socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import store
from ..conf import get_settings
from ..limits.engine import Limit, LocalRate, get_limiter, hit_all
from ..limits.keys import rate_key
from ..units import Rate
from .actions import ActionSpec, throttled


@dataclass(frozen=True, slots=True)
class _Rated:
    """One rate a message is checked against."""

    bucket: str  # "user_message" or "action.<name>"
    rate: Rate
    reason: str  # of a refusal
    key: str | None = None  # the shared Redis key; None: per connection only (anonymous)


@dataclass(frozen=True, slots=True)
class _Plan:
    """The rates of one action on one connection, worked out on its first message."""

    local: tuple[_Rated, ...]  # always in process
    shared: tuple[_Rated, ...]  # in Redis; in process when Redis fails under fail-closed
    limits: tuple[Limit, ...]  # ``shared`` as the limiter takes them


class MessageRates:
    """One connection's shared and per-action rates (created on its first rated action)."""

    __slots__ = ("local_rates", "plans", "user_id")

    def __init__(self, user_id: Any) -> None:
        self.user_id = user_id  # None: anonymous
        self.plans: dict[str, _Plan] = {}
        self.local_rates: dict[str, LocalRate] = {}

    def plan(self, spec: ActionSpec) -> _Plan:
        """The rates of ``spec`` on this connection (worked out once per action)."""
        plan = self.plans.get(spec.name)
        if plan is None:
            plan = self.plans[spec.name] = self._plan(spec)
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

    def _plan(self, spec: ActionSpec) -> _Plan:
        user_id = self.user_id
        rated = []
        user_rate = get_settings().rate("user_message")
        if user_rate and user_id is not None:
            rated.append(_Rated("user_message", user_rate, "user_message_rate",
                                rate_key("user_message", "user", user_id)))
        if spec.rate is not None:
            bucket = "action." + spec.name
            key = rate_key(bucket, "user", user_id) if user_id is not None else None
            rated.append(_Rated(bucket, spec.rate, "action_rate", key))
        local = tuple(r for r in rated if r.key is None)
        shared = tuple(r for r in rated if r.key is not None)
        return _Plan(local, shared, tuple(Limit(r.key, r.rate) for r in shared))

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
