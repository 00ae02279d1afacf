"""Parsing of the two kinds of strings users write: rates and durations.

Rates use django-ratelimit's grammar (``"30/m"``, ``"5/10s"``, ``"1000/h"``)
so one syntax covers the HTTP side (``@ratelimit``) and the WebSocket side.
We reuse its regular expression and period table, but match the whole string:
django-ratelimit's own ``_split_rate`` accepts ``"30/mx"`` and crashes on
``"ten/m"``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import timedelta

from django_ratelimit.core import _PERIODS, rate_re

RATE_HELP = 'a rate like "30/m", "5/10s" or "1000/h" (count/[multiplier]s|m|h|d)'


def duration_help(*, allow_never: bool = False, allow_zero: bool = False) -> str:
    """What a duration setting or option accepts, for help texts and error messages.

    Every place accepts a different set (``--grace 0`` ends the old token at
    once, ``--ttl never`` makes a token that never expires, ``--for`` takes
    neither), so each error names exactly the forms that place takes.
    """
    forms = '"45s", "15m", "12h", "30d", "2w" or a number of seconds'
    text = f"a duration like {forms}" + (", 0 included" if allow_zero else " (more than 0)")
    return text + (', or "never"' if allow_never else "")


FINITE_DURATION_HELP = duration_help()
DURATION_HELP = duration_help(allow_never=True)

_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$", re.IGNORECASE)
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Rate:
    """``count`` events per ``period`` seconds."""

    count: int
    period: float

    @property
    def interval(self) -> float:
        """Seconds between two events at the sustained rate."""
        return self.period / self.count

    def __str__(self) -> str:
        return f"{self.count}/{int(self.period)}s"


def parse_rate(value: str | Rate) -> Rate:
    """Parse ``"30/m"`` into ``Rate(30, 60)``; raise ValueError on anything else."""
    if isinstance(value, Rate):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected {RATE_HELP}, got {type(value).__name__}")
    match = rate_re.fullmatch(value.strip())
    if not match:
        raise ValueError(f"expected {RATE_HELP}, got {value!r}")
    count, multiplier, period = match.groups()
    seconds = _PERIODS[(period or "s").lower()] * (int(multiplier) if multiplier else 1)
    if int(count) <= 0 or seconds <= 0:
        raise ValueError(f"expected {RATE_HELP} with a positive count and period, got {value!r}")
    return Rate(int(count), float(seconds))


def parse_duration(
    value: str | float | timedelta | None, *, allow_never: bool = True, allow_zero: bool = False
) -> int | None:
    """Parse a duration into whole seconds; ``None``/``"never"`` mean no expiry.

    Raises ValueError naming what is accepted here (``duration_help``).
    """
    seconds: float | None = None
    if value is None or (isinstance(value, str) and value.strip().lower() == "never"):
        if allow_never:
            return None
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and (match := _DURATION_RE.match(value)):
        seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
    shortest = 0 if allow_zero else 1  # whole seconds: 0.5 would round to "at once"
    if seconds is None or not math.isfinite(seconds) or int(seconds) < shortest:
        expected = duration_help(allow_never=allow_never, allow_zero=allow_zero)
        raise ValueError(f"expected {expected}, got {value!r}")
    return int(seconds)


def format_duration(seconds: float | None) -> str:
    """Render seconds the way users write them: ``90061`` -> ``"1d1h1m"``."""
    if seconds is None:
        return "never"
    seconds = int(seconds)
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)
