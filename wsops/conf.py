"""The ``WSOPS`` settings dict: defaults, validation and one cached accessor.

Every key is optional. ``get_settings()`` validates the dict once (and again
whenever tests change settings) and returns a frozen ``WsopsSettings``. A wrong
type, an unknown key or a malformed rate raises ``ImproperlyConfigured`` that
names the key, the bad value and what is allowed, at startup (``AppConfig.ready``)
rather than on the first connection.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from .units import DURATION_HELP, FINITE_DURATION_HELP, RATE_HELP, Rate, parse_duration, parse_rate

TRANSPORTS = ("subprotocol", "header", "query", "query_token", "cookie", "message")
# user_message is off by default: it costs a Redis round trip per message, and the
# per-connection rate times MAX_CONNECTIONS_PER_USER already bounds what one user sends.
DEFAULT_RATES = {"connect": "60/m", "message": "30/s", "user_message": None}


@dataclass(frozen=True)
class WsopsSettings:
    """Validated, normalised settings. Durations are seconds, rates are ``Rate``."""

    ALLOWED_ORIGINS: tuple[str, ...] | None = None
    REDIS_URL: str | None = None
    CACHE: str | None = None
    KEY_PREFIX: str = ""
    RATES: dict[str, Rate | None] = field(default_factory=dict)
    MAX_CONNECTIONS_PER_USER: int | None = 20
    MAX_CONNECTIONS_PER_IP: int | None = 100
    MAX_MESSAGE_BYTES: int = 64 * 1024
    TOKEN_TTL: int | None = 90 * 86400
    TICKET_TTL: int = 30
    TOKEN_TRANSPORTS: tuple[str, ...] = ("subprotocol", "header", "query", "cookie")
    FAIL_MODE: str = "closed"
    REJECT_WITH: str = "handshake"
    REDIS_TIMEOUT: float = 0.05
    TRUSTED_PROXIES: tuple[str, ...] = ()
    AUTH_TIMEOUT: int = 5
    INVALID_MESSAGE_LIMIT: int = 10
    INVALID_MESSAGE_WINDOW: int = 60
    THROTTLE_CLOSE_AFTER: int = 10
    PERMISSION_CACHE_SECONDS: int = 30
    TOKEN_CACHE_SECONDS: int = 30
    CONNECTION_TTL: int = 30
    SESSION_SCOPES: tuple[str, ...] | None = None
    TICKET_RATE: str = "10/m"
    IPV6_PREFIX: int = 64
    EXPLAIN_REFUSALS: bool | None = None  # None: follow settings.DEBUG
    METRICS: bool = True  # record Prometheus metrics (when prometheus_client is installed)
    METRICS_ALLOWED: tuple[str, ...] = ("127.0.0.1/32", "::1/128")  # who may scrape

    @property
    def explain_refusals(self) -> bool:
        """Whether refusal reasons reach the client (default: under DEBUG only)."""
        if self.EXPLAIN_REFUSALS is None:
            return bool(django_settings.DEBUG)
        return self.EXPLAIN_REFUSALS

    def rate(self, scope: str) -> Rate | None:
        """The configured rate of a scope, or None when that scope is unlimited."""
        return self.RATES.get(scope)


# --- validators: each returns the normalised value or raises ValueError(what is allowed)


def _optional(inner: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else inner(value)


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("a positive integer")
    return value


def _positive_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError("a positive number of seconds")
    return float(value)


def _ipv6_prefix(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 128:
        raise ValueError("a prefix length from 1 to 128 (64: one customer's /64)")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("True or False")
    return value


def _optional_bool(value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ValueError("True, False or None (None follows DEBUG)")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a string")
    return value


def _choice(*choices: str) -> Callable[[Any], str]:
    def validate(value: Any) -> str:
        if value not in choices:
            raise ValueError(" or ".join(repr(c) for c in choices))
        return value

    return validate


def _string_list(item: Callable[[str], str]) -> Callable[[Any], tuple[str, ...]]:
    def validate(value: Any) -> tuple[str, ...]:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ValueError("a list of strings")
        return tuple(item(_string(v)) for v in value)

    return validate


def _duration(value: Any) -> int | None:
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError(DURATION_HELP)


def _finite_duration(value: Any) -> int:
    try:
        return parse_duration(value, allow_never=False)
    except ValueError:
        raise ValueError(FINITE_DURATION_HELP)


def _origin_pattern(value: str) -> str:
    from .origins import compile_pattern  # origins imports conf: import here

    if value != "*":
        compile_pattern(value)  # ValueError: what is allowed
    return value.rstrip("/").lower()


def _redis_url(value: Any) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        raise ValueError('a URL starting with "redis://", "rediss://" or "unix://"')
    return value


def _cache_alias(value: Any) -> str:
    if not isinstance(value, str) or value not in django_settings.CACHES:
        known = ", ".join(repr(a) for a in django_settings.CACHES)
        raise ValueError(f"the alias of a cache in CACHES ({known})")
    return value


def _transport(value: str) -> str:
    if value not in TRANSPORTS:
        raise ValueError("a list drawn from " + ", ".join(repr(t) for t in TRANSPORTS))
    return value


def _network(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError('IP addresses or CIDR networks such as "10.0.0.0/8"')
    return value


def _proxy(value: str) -> str:
    if value == "unix":
        return value
    try:
        return _network(value)
    except ValueError as error:
        raise ValueError(f'{error}, or "unix"')


def _rate_string(value: Any) -> str:
    try:
        parse_rate(value)
    except ValueError:
        raise ValueError(RATE_HELP)
    return value


def _rates(value: Any) -> dict[str, Rate | None]:
    if not isinstance(value, dict):
        raise ValueError("a dict of scope name -> rate string or None")
    merged: dict[str, Any] = {**DEFAULT_RATES, **value}
    parsed: dict[str, Rate | None] = {}
    for scope, rate in merged.items():
        if not isinstance(scope, str):
            raise ValueError("a dict whose keys are scope names (strings)")
        try:
            parsed[scope] = None if rate is None else parse_rate(rate)
        except ValueError:
            raise _RateError(scope, rate)
    return parsed


class _RateError(ValueError):
    def __init__(self, scope: str, rate: Any) -> None:
        super().__init__(f"RATES[{scope!r}] = {rate!r}: expected {RATE_HELP} or None")


_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "ALLOWED_ORIGINS": _optional(_string_list(_origin_pattern)),
    "REDIS_URL": _optional(_redis_url),
    "CACHE": _optional(_cache_alias),
    "KEY_PREFIX": _string,
    "RATES": _rates,
    "MAX_CONNECTIONS_PER_USER": _optional(_positive_int),
    "MAX_CONNECTIONS_PER_IP": _optional(_positive_int),
    "MAX_MESSAGE_BYTES": _positive_int,
    "TOKEN_TTL": _duration,
    "TICKET_TTL": _finite_duration,
    "TOKEN_TRANSPORTS": _string_list(_transport),
    "FAIL_MODE": _choice("closed", "open"),
    "REJECT_WITH": _choice("handshake", "close_code"),
    "REDIS_TIMEOUT": _positive_number,
    "TRUSTED_PROXIES": _string_list(_proxy),
    "AUTH_TIMEOUT": _finite_duration,
    "INVALID_MESSAGE_LIMIT": _positive_int,
    "INVALID_MESSAGE_WINDOW": _finite_duration,
    "THROTTLE_CLOSE_AFTER": _positive_int,
    "PERMISSION_CACHE_SECONDS": _finite_duration,
    "TOKEN_CACHE_SECONDS": _finite_duration,
    "CONNECTION_TTL": _finite_duration,
    "SESSION_SCOPES": _optional(_string_list(str.strip)),
    "TICKET_RATE": _rate_string,
    "IPV6_PREFIX": _ipv6_prefix,
    "EXPLAIN_REFUSALS": _optional_bool,
    "METRICS": _bool,
    "METRICS_ALLOWED": _string_list(_network),
}
assert set(_VALIDATORS) == {f.name for f in fields(WsopsSettings)}


def validate(raw: Any) -> WsopsSettings:
    """Turn the user's ``WSOPS`` dict into ``WsopsSettings`` or raise ImproperlyConfigured."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ImproperlyConfigured(f"WSOPS must be a dict, not {type(raw).__name__}.")
    values: dict[str, Any] = {"RATES": _rates({})}
    for key, value in raw.items():
        if key not in _VALIDATORS:
            close = difflib.get_close_matches(str(key), _VALIDATORS, n=1)
            suggestion = f" Did you mean {close[0]!r}?" if close else ""
            raise ImproperlyConfigured(
                f"WSOPS has an unknown key {key!r}.{suggestion} "
                f"Allowed keys: {', '.join(sorted(_VALIDATORS))}."
            )
        try:
            values[key] = _VALIDATORS[key](value)
        except _RateError as error:
            raise ImproperlyConfigured(f"WSOPS[{key!r}] is invalid: {error}.")
        except ValueError as error:
            from .store import masked  # store imports conf: import here

            shown = masked(value) if key == "REDIS_URL" and isinstance(value, str) else value
            raise ImproperlyConfigured(
                f"WSOPS[{key!r}] = {shown!r} is invalid: expected {error}."
            )
    return WsopsSettings(**values)


@lru_cache(maxsize=1)
def get_settings() -> WsopsSettings:
    """The validated ``WSOPS`` settings of this process (cached)."""
    return validate(getattr(django_settings, "WSOPS", None))


@receiver(setting_changed)
def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting in ("WSOPS", "CACHES", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "DEBUG"):
        get_settings.cache_clear()
        for hook in _reload_hooks:
            hook()


_reload_hooks: list[Callable[[], None]] = []


def on_reload(hook: Callable[[], None]) -> Callable[[], None]:
    """Register a function that drops caches derived from settings."""
    _reload_hooks.append(hook)
    return hook
