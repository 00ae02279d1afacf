"""``MessageGuard``: what every frame passes before it is parsed, and when abuse closes.

Cheapest first: the size cap (``MAX_MESSAGE_BYTES``, close 1009 before any
parsing) and the per-connection rate (``RATES["message"]``, in process, no
network). After a refusal it decides whether the client has earned a close:
4429 after ``THROTTLE_CLOSE_AFTER`` rate-limited messages in a row, 4400 after
``INVALID_MESSAGE_LIMIT`` invalid messages within ``INVALID_MESSAGE_WINDOW``.
"""

from __future__ import annotations

from .. import codes, signals
from ..conf import get_settings
from ..limits.engine import LocalRate
from ..units import Rate
from .actions import ActionRefused


class MessageGuard:
    """One connection's size cap, local message rate and abuse accounting."""

    __slots__ = ("invalid", "message_rate", "throttled_in_row")

    def __init__(self) -> None:
        conf = get_settings()
        rate = conf.rate("message")
        self.message_rate = LocalRate(rate) if rate else None
        self.invalid = LocalRate(Rate(conf.INVALID_MESSAGE_LIMIT, conf.INVALID_MESSAGE_WINDOW))
        self.throttled_in_row = 0

    @staticmethod
    def oversized(text: str | None, data: bytes = b"") -> int | None:
        """The frame's size in bytes when it is over the cap, else None."""
        limit = get_settings().MAX_MESSAGE_BYTES
        if text is None:
            return len(data) if len(data) > limit else None
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
            return len(text.encode())
        return None

    def over_message_rate(self) -> float:
        """Count one frame against the per-connection rate: 0 if allowed, else seconds."""
        return self.message_rate.hit() if self.message_rate is not None else 0.0

    def passed(self) -> None:
        """A message got past the rates: the run of throttled messages is over."""
        self.throttled_in_row = 0

    def close_after(self, refusal: ActionRefused) -> tuple[str, str, int] | None:
        """``(event kind, reason, close code)`` when this refusal earns a close, else None."""
        if refusal.code == codes.THROTTLED:
            self.throttled_in_row += 1
            if self.throttled_in_row >= get_settings().THROTTLE_CLOSE_AFTER:
                return signals.THROTTLE, "flood", codes.RATE_LIMITED
        elif refusal.kind == signals.INVALID_INPUT and self.invalid.hit():
            return signals.INVALID_INPUT, "too_many_invalid_messages", codes.INVALID_MESSAGES
        return None
