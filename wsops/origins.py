"""Origin policy against cross-site WebSocket hijacking (CSWSH).

Browsers send cookies with a WebSocket handshake to any site, and the Same
Origin Policy does not apply to WebSockets. The ``Origin`` header is the only
thing that tells a page on ``https://evil.example`` apart from our own page,
so a cookie-authenticated socket must carry an allowed Origin.

Patterns: exact (``https://app.example.com``), with a port
(``https://app.example.com:8443``), subdomain wildcards
(``https://*.example.com``: any subdomain, never ``example.com.evil.net`` or
``evilexample.com``), or ``*`` (anything; ``wssecure check`` flags it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings

from .conf import get_settings, on_reload

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class OriginPattern:
    scheme: str
    host: str  # lower-case; "*.example.com" for a wildcard
    port: int | None  # None: any port (only derived under DEBUG)

    def matches(self, scheme: str, host: str, port: int) -> bool:
        if scheme != self.scheme or (self.port is not None and port != self.port):
            return False
        if self.host.startswith("*."):
            suffix = self.host[1:]  # ".example.com"
            return host.endswith(suffix) and len(host) > len(suffix)
        return host == self.host


@dataclass(frozen=True)
class OriginPolicy:
    patterns: tuple[OriginPattern, ...]
    allow_any: bool = False

    def allows(self, origin: str | None) -> bool:
        """True when ``origin`` (the raw header value) is allowed."""
        if self.allow_any:
            return origin is not None and origin != "null"
        parsed = parse_origin(origin)
        return parsed is not None and any(p.matches(*parsed) for p in self.patterns)


# What a browser sends: RFC 6454's serialisation, scheme://host[:port] and nothing else.
# Matched whole, not through urlsplit, which drops tabs and newlines, accepts empty
# userinfo ("https://@app.example.com") and empty ports: look-alikes of an allowed origin.
_ORIGIN_RE = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://"
    r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9.])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[1-9][0-9]{0,4}))?"
)


def parse_origin(origin: str | None) -> tuple[str, str, int] | None:
    """``"https://App.example.com"`` -> ``("https", "app.example.com", 443)``; None if malformed."""
    if not origin or len(origin) > 2048:
        return None
    match = _ORIGIN_RE.fullmatch(origin)
    if match is None:
        return None
    scheme = match["scheme"].lower()
    port = int(match["port"]) if match["port"] else DEFAULT_PORTS.get(scheme)
    if scheme not in DEFAULT_PORTS or port is None or port > 65535:
        return None
    host = match["host"].lower()
    if host.endswith(".."):
        return None
    return scheme, host.removesuffix("."), port


def compile_pattern(pattern: str) -> OriginPattern:
    """``"https://*.example.com"`` -> OriginPattern; a ``:*`` port (DEBUG only) means any port."""
    any_port = pattern.endswith(":*")
    parts = urlsplit(pattern[:-2] if any_port else pattern.lower())
    port = None if any_port else parts.port or DEFAULT_PORTS[parts.scheme]
    return OriginPattern(parts.scheme, (parts.hostname or "").lower(), port)


def derived_origins() -> list[str]:
    """Origins implied by ALLOWED_HOSTS and CSRF_TRUSTED_ORIGINS (http too under DEBUG)."""
    schemes = ["https", "http"] if settings.DEBUG else ["https"]
    origins: list[str] = []
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = ["localhost", "127.0.0.1", "[::1]"]
    for host in hosts:
        if host == "*":
            origins.append("*")
            continue
        # ".example.com" in ALLOWED_HOSTS means the domain and its subdomains.
        names = ["*" + host, host[1:]] if host.startswith(".") else [host]
        for scheme in schemes:
            for name in names:
                origins.append(f"{scheme}://{name}")
                if settings.DEBUG and not name.startswith("*"):
                    origins.append(f"{scheme}://{name}:*")
    origins.extend(o.lower() for o in getattr(settings, "CSRF_TRUSTED_ORIGINS", []))
    return origins


@lru_cache(maxsize=1)
def current_policy() -> OriginPolicy:
    """The policy from ``WSOPS["ALLOWED_ORIGINS"]``, or derived from the host settings."""
    configured = get_settings().ALLOWED_ORIGINS
    return build_policy(list(configured) if configured is not None else derived_origins())


def build_policy(origins: list[str]) -> OriginPolicy:
    if "*" in origins:
        return OriginPolicy((), allow_any=True)
    return OriginPolicy(tuple(compile_pattern(o) for o in origins))


on_reload(current_policy.cache_clear)
