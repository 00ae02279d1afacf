"""``--live``: connect to the configured Redis servers and report one line each.

URLs appear in the findings only through ``store.masked``: a password may sit
in the userinfo, in a ``password=`` parameter (the only place a ``unix://`` URL
has) or beside the URL in a channels-redis host dict.
"""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, Info, Warning

from .. import store
from .rules import RedisHost, _is_local, _redis_hosts, redis_channel_layers

SAFE_POLICIES = {"noeviction"}
TIMEOUTS = {"socket_timeout": 2, "socket_connect_timeout": 2}


def targets() -> list[tuple[str, RedisHost]]:
    """``(what, host)`` for wsops' shared state and each channels-redis layer."""
    found = []
    if url := store.redis_url():
        found.append(("WSOPS rate limits", RedisHost(url, {})))
    for alias, layer in redis_channel_layers():
        found.extend((f"CHANNEL_LAYERS[{alias!r}]", host) for host in _redis_hosts(layer))
    return found


def _anonymous(client: Any) -> Any:
    """A client for the same server without credentials, wherever they were given:
    redis-py has already parsed them out of the URL and its options."""
    import redis

    pool = client.connection_pool
    kwargs = {key: value for key, value in pool.connection_kwargs.items()
              if key not in ("username", "password", "credential_provider")}
    return redis.Redis(connection_pool=redis.ConnectionPool(
        connection_class=pool.connection_class, **kwargs))


def check() -> list[CheckMessage]:
    import redis

    messages: list[CheckMessage] = []
    for what, host in targets():
        shown = store.masked(host.url)
        try:
            client = redis.from_url(host.url, **{**host.options, **TIMEOUTS},
                                    decode_responses=True)
        except ValueError:  # its text may quote pieces of the URL, password included
            messages.append(Error(f"{what}: {shown} is not a Redis URL.",
                                  hint="Use redis://, rediss:// or unix:// URLs.",
                                  id="wsops.E301"))
            continue
        try:
            info = client.info()
        except (redis.RedisError, TypeError) as error:  # TypeError: an unknown ?option=
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
        try:
            _anonymous(client).ping()
        except redis.RedisError:
            continue  # authentication is required: good
        if _is_local(host.url):
            messages.append(Info(f"{what}: Redis at {shown} answers without a password "
                                 "(loopback only).", id="wsops.I302"))
        else:
            messages.append(Warning(f"{what}: Redis at {shown} answers without a password.",
                                    hint="Set requirepass (or ACL users) and put the password "
                                         "in the URL.", id="wsops.W301"))
    return messages
