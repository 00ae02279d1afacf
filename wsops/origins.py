"""Origin policy against cross-site WebSocket hijacking (CSWSH).

Browsers send cookies with a WebSocket handshake to any site, and the Same
Origin Policy does not apply to WebSockets. The ``Origin`` header is the only
thing that tells a page on ``https://evil.example`` apart from our own page,
so a cookie-authenticated socket must carry an allowed Origin.

Patterns: exact (``https://app.example.com``), with a port
(``https://app.example.com:8443``), subdomain wildcards
(``https://*.example.com``: any subdomain, never ``example.com.evil.net`` or
``evilexample.com``), or ``*`` (anything; ``wssecure check`` flags it).

``OriginGuard(app, [...])`` also takes the forms of Channels' ``OriginValidator``,
with Channels' meaning: a bare host (``app.example.com``: that host over http or
https, any port), a leading dot (``.example.com``, also ``https://.example.com``:
the domain and all its subdomains). Anything else is refused when the guard is
built, with what is allowed.
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
    scheme: str | None  # None: http or https (Channels' bare-host form)
    host: str  # lower-case; "*.example.com" for a wildcard
    port: int | None  # None: any port (derived under DEBUG, or Channels' bare-host form)
    and_domain: bool = False  # "*.example.com" also matches "example.com" (".example.com")

    def matches(self, scheme: str, host: str, port: int) -> bool:
        if (self.scheme is not None and scheme != self.scheme) or \
                (self.port is not None and port != self.port):
            return False
        if self.host.startswith("*."):
            suffix = self.host[1:]  # ".example.com"
            return (host.endswith(suffix) and len(host) > len(suffix)) or \
                (self.and_domain and host == suffix[1:])
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
    host = match["host"].lower().strip("[]")  # IPv6 literals compare without brackets
    if host.endswith(".."):
        return None
    return scheme, host.removesuffix("."), port


# A pattern's host: a name (optionally "*." or "." in front), or an IP literal.
_HOST_RE = re.compile(r"(?:\*\.|\.)?[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|[0-9a-f:.]*:[0-9a-f:.]*")
PATTERN_HELP = ('origins like "https://app.example.com", "https://app.example.com:8443", '
                '"https://*.example.com" or "*"')
CHANNELS_PATTERN_HELP = (PATTERN_HELP.removesuffix(' or "*"') + ', "*", or the forms of '
                         'Channels\' OriginValidator: "app.example.com", ".example.com"')


def compile_pattern(pattern: str, *, channels_forms: bool = False) -> OriginPattern:
    """``"https://*.example.com"`` -> OriginPattern; raise ValueError with what is allowed.

    A ``:*`` port (derived under DEBUG) means any port. ``channels_forms`` also accepts
    Channels' bare host and leading-dot patterns (``OriginGuard``'s argument).
    """
    allowed = CHANNELS_PATTERN_HELP if channels_forms else PATTERN_HELP
    refused = ValueError(f"expected {allowed}, got {pattern!r}")
    if not isinstance(pattern, str) or not 0 < len(pattern) <= 300:
        raise refused
    text = pattern.strip().lower()
    any_port = text.endswith(":*")
    text = text.removesuffix(":*")
    if channels_forms and "://" not in text:
        text = "//" + text  # Channels' bare host: http or https, any port
    parts = urlsplit(text)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        raise refused from None
    scheme = parts.scheme or None
    if (scheme not in DEFAULT_PORTS and scheme is not None) or not _HOST_RE.fullmatch(host) \
            or "@" in parts.netloc or parts.path not in ("", "/") or parts.query \
            or parts.fragment or (scheme is None and not channels_forms) \
            or (host.startswith(".") and not channels_forms):
        raise refused
    and_domain = host.startswith(".")  # Channels: the domain and all its subdomains
    if scheme is None or any_port:
        port = None
    elif port is None:
        port = DEFAULT_PORTS[scheme]
    return OriginPattern(scheme, "*" + host if and_domain else host, port, and_domain)


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


def build_policy(origins: list[str] | tuple[str, ...], *, channels_forms: bool = False,
                 ) -> OriginPolicy:
    """The policy of a list of patterns; ValueError naming the first bad one."""
    if isinstance(origins, str) or not isinstance(origins, (list, tuple)):
        raise ValueError(f"expected a list of origin patterns, got {origins!r}")
    if "*" in origins:
        return OriginPolicy((), allow_any=True)
    return OriginPolicy(tuple(compile_pattern(o, channels_forms=channels_forms)
                              for o in origins))


on_reload(current_policy.cache_clear)
