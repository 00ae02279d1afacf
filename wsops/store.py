"""Access to the shared Redis: clients, key names, scripts and outage tracking.

Everything wsops shares between workers (rate counters, the connection
registry, bans, tickets, the token cache) lives in one Redis, named by
``WSOPS["REDIS_URL"]`` or by ``WSOPS["CACHE"]`` (the alias of a django-redis
cache, whose LOCATION is reused). With neither, wsops runs on in-process state
(the demo's embedded defaults) and nothing is shared between workers.

Keys are readable on purpose, ``<KEY_PREFIX>wsops:<kind>:...``, so operators can
inspect them with ``wsratelimit`` or ``redis-cli --scan``.

Redis calls are bounded by ``REDIS_TIMEOUT`` (default 50 ms). Errors become
``StoreUnavailable``; the first one of an outage logs a warning, and the first
success afterwards logs the recovery, so an outage costs two log lines, not
one per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import weakref
from typing import Any
from urllib.parse import unquote_plus

from django.conf import settings as django_settings

from . import metrics
from .conf import get_settings, on_reload

logger = logging.getLogger("wsops")


class StoreUnavailable(Exception):
    """Redis did not answer in time (or at all)."""


def redis_url() -> str | None:
    """The URL of the shared Redis, or None when wsops runs on in-process state."""
    conf = get_settings()
    if conf.REDIS_URL:
        return conf.REDIS_URL
    if conf.CACHE:
        location = django_settings.CACHES[conf.CACHE].get("LOCATION")
        if isinstance(location, (list, tuple)):
            location = location[0]
        return location or None
    return None


# A query parameter: redis-py percent-decodes names, so "pass%77ord" is a password too.
_PARAMETER = re.compile(r"([?&])([^=&]*)(=?)([^&]*)")


def masked(url: str | None) -> str:
    """The URL with every password replaced by ``***`` (for messages and logs).

    Passwords hide in two places: the userinfo (``redis://user:pw@host``, where an
    unencoded password may itself hold ``@`` or ``/``) and the ``password=``
    query parameter, in any case. A lone userinfo (``redis://secret@host``) is
    masked whole, since redis-cli reads it as the password. User names, hosts,
    ports, paths and other parameters stay readable.
    """
    if not url:
        return ""
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    at = _userinfo_end(scheme, rest)
    if at is not None:
        user, colon, _ = rest[:at].partition(":")
        rest = (f"{user}:***" if colon else "***") + rest[at:]
    return scheme + separator + _PARAMETER.sub(_mask_password_parameter, rest)


def _mask_password_parameter(match: re.Match[str]) -> str:
    """A ``password=`` parameter (the only place a ``unix://`` URL can carry one), its
    name compared as redis-py reads it: percent-decoded, in any case."""
    lead, name, equals, value = match.groups()
    if unquote_plus(name).strip().lower() == "password" and value:
        value = "***"
    return lead + name + equals + value


def _userinfo_end(scheme: str, rest: str) -> int | None:
    """Where the userinfo of ``rest`` (a URL after ``://``) ends: the index of its ``@``.

    An unencoded password may hold ``@``, ``/`` or ``#``, so the userinfo ends at
    the last ``@`` before the query: a Redis URL's path is a database number, and
    a ``unix://`` URL has no host, so its userinfo ends with ``@/`` and a path
    that merely contains ``@`` (``unix:///run/redis@main.sock``) has none.
    """
    before_query = rest.partition("?")[0]
    if scheme.lower() != "unix":
        # The last "@" before the query, or before the first "/" (a password may
        # hold "?" too): whichever is later, so no part of a password shows.
        at = max(before_query.rfind("@"), rest.partition("/")[0].rfind("@"))
    elif before_query.startswith("/"):
        return None
    else:
        at = before_query.rfind("@/")
    return at if at >= 0 else None


def key(*parts: object) -> str:
    """``key("rl", "connect", "ip", "1.2.3.4")`` -> ``"<prefix>wsops:rl:connect:ip:1.2.3.4"``."""
    return get_settings().KEY_PREFIX + "wsops:" + ":".join(str(p) for p in parts)


# --- clients -------------------------------------------------------------------------

_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
    weakref.WeakKeyDictionary()
)
_sync_client: Any = None


def _client_options() -> dict[str, Any]:
    timeout = get_settings().REDIS_TIMEOUT
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout, "decode_responses": True}


def async_client() -> Any:
    """A ``redis.asyncio.Redis`` for the running event loop (clients are loop-bound)."""
    import redis.asyncio

    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = redis.asyncio.from_url(redis_url(), **_client_options())
        _async_clients[loop] = client
    return client


def sync_client(timeout: float | None = None) -> Any:
    """A blocking ``redis.Redis`` for views and management commands."""
    global _sync_client
    import redis

    if timeout is not None:
        return redis.from_url(
            redis_url(), socket_timeout=timeout, socket_connect_timeout=timeout,
            decode_responses=True,
        )
    if _sync_client is None:
        options = _client_options()
        # Commands and views are not on the hot path: give them a humane timeout.
        options.update(socket_timeout=max(1.0, options["socket_timeout"]),
                       socket_connect_timeout=max(1.0, options["socket_connect_timeout"]))
        _sync_client = redis.from_url(redis_url(), **options)
    return _sync_client


@on_reload
def _drop_clients() -> None:
    global _sync_client
    _async_clients.clear()
    _sync_client = None


# --- scripts -------------------------------------------------------------------------


class Script:
    """A Lua script run with EVALSHA (one round trip), loaded again on NOSCRIPT."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def run(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        from redis.exceptions import NoScriptError

        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    def run_sync(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        """``run`` on a blocking client (views, commands)."""
        from redis.exceptions import NoScriptError

        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)


# --- outage tracking -----------------------------------------------------------------


class OutageTracker:
    """Turns Redis errors into StoreUnavailable and logs each outage once."""

    def __init__(self) -> None:
        self.down = False

    def failed(self, error: BaseException) -> StoreUnavailable:
        metrics.redis_up(False)
        if not self.down:
            self.down = True
            logger.warning(
                "wsops: Redis at %s is unreachable (%s); FAIL_MODE=%r applies until it returns.",
                masked(redis_url()), error.__class__.__name__, get_settings().FAIL_MODE,
            )
        return StoreUnavailable(str(error) or error.__class__.__name__)

    def succeeded(self) -> None:
        if self.down:
            metrics.redis_up(True)
            self.down = False
            logger.warning("wsops: Redis at %s is reachable again.", masked(redis_url()))


outage = OutageTracker()


def store_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "Redis is unreachable or too slow"."""
    from redis.exceptions import RedisError

    return (RedisError, OSError, asyncio.TimeoutError)


def call_sync(function: Any, *args: Any) -> Any:
    """``function(*args)`` on the blocking client, mapping failures to StoreUnavailable."""
    try:
        result = function(*args)
    except store_errors() as error:
        raise outage.failed(error)
    outage.succeeded()
    return result


async def call(coro: Any, operation: str = "other") -> Any:
    """Await a Redis coroutine, mapping failures to StoreUnavailable.

    ``operation`` names it in the ``wsops_redis_seconds`` histogram (failures included).
    """
    try:
        with metrics.redis_timer(operation):
            result = await coro
    except store_errors() as error:
        raise outage.failed(error)
    outage.succeeded()
    return result
