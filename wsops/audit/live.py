"""``--live``: connect to the configured Redis servers and report one line each."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Info, Warning

from .. import store
from .rules import _is_local, _redis_hosts

SAFE_POLICIES = {"noeviction"}


def targets() -> list[tuple[str, str]]:
    """``(what, url)`` for wsops' shared state and each channels-redis layer."""
    found = []
    if url := store.redis_url():
        found.append(("WSOPS rate limits", url))
    for alias, layer in getattr(settings, "CHANNEL_LAYERS", {}).items():
        if "channels_redis" in layer.get("BACKEND", ""):
            found.extend((f"CHANNEL_LAYERS[{alias!r}]", host) for host in _redis_hosts(layer))
    return found


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check() -> list[CheckMessage]:
    import redis

    messages: list[CheckMessage] = []
    for what, url in targets():
        shown = store.masked(url)
        client = redis.from_url(url, socket_timeout=2, socket_connect_timeout=2,
                                decode_responses=True)
        try:
            info = client.info()
        except redis.RedisError as error:
            messages.append(Error(f"{what}: Redis at {shown} is unreachable "
                                  f"({type(error).__name__}: {error}).",
                                  hint="Start Redis or fix the URL; with FAIL_MODE='closed' "
                                       "new sockets are refused with 1013 meanwhile.",
                                  id="wsops.E301"))
            continue
        policy = info.get("maxmemory_policy", "noeviction")
        messages.append(Info(f"{what}: Redis {info.get('redis_version')} at {shown}, "
                             f"maxmemory-policy {policy}, {info.get('connected_clients')} "
                             "clients.", id="wsops.I301"))
        if policy not in SAFE_POLICIES:
            messages.append(Warning(
                f"{what}: maxmemory-policy is {policy}: under memory pressure Redis evicts "
                "rate-limit counters, bans and channel messages (limits silently reset).",
                hint="CONFIG SET maxmemory-policy noeviction (and size maxmemory).",
                id="wsops.W302"))
        anonymous = redis.from_url(_without_password(url), socket_timeout=2,
                                   socket_connect_timeout=2)
        try:
            anonymous.ping()
        except redis.RedisError:
            continue  # authentication is required: good
        if _is_local(url):
            messages.append(Info(f"{what}: Redis at {shown} answers without a password "
                                 "(loopback only).", id="wsops.I302"))
        else:
            messages.append(Warning(f"{what}: Redis at {shown} answers without a password.",
                                    hint="Set requirepass (or ACL users) and put the password "
                                         "in the URL.", id="wsops.W301"))
    return messages
