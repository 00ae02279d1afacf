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
import time
import weakref
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from django.conf import settings as django_settings

from . import metrics
from .conf import get_settings, on_reload

logger = logging.getLogger("wsops")


class StoreUnavailable(Exception):
    """Redis did not answer in time (or at all)."""

    answered: list[Any] | None = None  # set by gather(): what each concurrent call returned


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
    if conf.REDIS_SENTINELS:  # the primary's address comes from Sentinel
        return "redis://"
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
#
# Three topologies, one client interface (redis-py's): a standalone Redis named by the
# URL; a Redis Cluster (REDIS_CLUSTER: the URL names any node, the others and the slot
# map are discovered, MOVED/ASK followed); a Sentinel-monitored primary (REDIS_SENTINELS
# + REDIS_SENTINEL_SERVICE, or a django-redis CACHE on Sentinel: every new connection
# asks the Sentinels for the current primary, so a promoted replica is followed without
# a restart; the URL, when given, carries only the password and db).

STANDALONE, CLUSTER, SENTINEL = "standalone", "cluster", "sentinel"

_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
    weakref.WeakKeyDictionary()
)
_sync_client: Any = None


def topology() -> str:
    conf = get_settings()
    if conf.REDIS_CLUSTER:
        return CLUSTER
    return SENTINEL if sentinel_addresses() else STANDALONE


def _sentinel_cache() -> tuple[list[tuple[str, int]], str, str] | None:
    """``WSOPS["CACHE"]`` naming a django-redis cache on Sentinel (``OPTIONS["SENTINELS"]``,
    LOCATION ``redis://<service>/<db>``): its Sentinels, service and URL."""
    alias = get_settings().CACHE
    cache = django_settings.CACHES[alias] if alias else {}
    sentinels = (cache.get("OPTIONS") or {}).get("SENTINELS")
    if not sentinels:
        return None
    location = cache.get("LOCATION")
    if isinstance(location, (list, tuple)):
        location = location[0]
    return ([(str(host), int(port)) for host, port in sentinels],
            urlsplit(location).hostname or "", location)


def is_cluster() -> bool:
    """Whether keys of different hash tags may live on different nodes."""
    return get_settings().REDIS_CLUSTER


def describe() -> str:
    """Where the shared state lives, for log lines and messages (passwords masked)."""
    conf = get_settings()
    if topology() == SENTINEL:
        return (f"Sentinel service {sentinel_service()!r} "
                f"({', '.join(f'{host}:{port}' for host, port in sentinel_addresses())})")
    if conf.REDIS_CLUSTER:
        return f"Redis Cluster via {masked(redis_url())}"
    return masked(redis_url())


def sentinel_addresses() -> list[tuple[str, int]]:
    """The Sentinels to ask: ``REDIS_SENTINELS``, or those of a Sentinel ``CACHE``."""
    if not get_settings().REDIS_SENTINELS:
        cache = _sentinel_cache()
        return cache[0] if cache else []
    return [(host.strip("[]"), int(port)) for host, _, port in
            (address.rpartition(":") for address in get_settings().REDIS_SENTINELS)]


def sentinel_service() -> str:
    conf = get_settings()
    if conf.REDIS_SENTINEL_SERVICE:
        return conf.REDIS_SENTINEL_SERVICE
    cache = _sentinel_cache()
    return cache[1] if cache else ""


def _client_options(timeout: float) -> dict[str, Any]:
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout, "decode_responses": True}


def credentials() -> dict[str, Any]:
    """Password, user name and db of the Sentinel-monitored primary, from REDIS_URL (or
    the Sentinel cache's LOCATION)."""
    from redis.connection import parse_url

    cache = None if get_settings().REDIS_SENTINELS else _sentinel_cache()
    url = cache[2] if cache else get_settings().REDIS_URL
    if not url:
        return {}
    parsed = parse_url(url)
    return {name: parsed[name] for name in ("username", "password", "db") if name in parsed}


def _new_client(blocking: bool, timeout: float) -> Any:
    """A client of the configured topology (``redis.asyncio`` unless ``blocking``)."""
    from redis.backoff import ExponentialBackoff

    if blocking:
        import redis as module
        from redis.cluster import RedisCluster
        from redis.retry import Retry
        from redis.sentinel import Sentinel
    else:
        import redis.asyncio as module
        from redis.asyncio.cluster import RedisCluster
        from redis.asyncio.retry import Retry
        from redis.asyncio.sentinel import Sentinel
    options = _client_options(timeout)
    kind = topology()
    if kind == SENTINEL:
        sentinel = Sentinel(sentinel_addresses(), sentinel_kwargs=_client_options(timeout))
        return sentinel.master_for(sentinel_service(),
                                   **options, **credentials())
    if kind == CLUSTER:
        # Two retries, not ten: during a failover the slot map is re-read between
        # them, and a handshake must get its FAIL_MODE answer promptly.
        retry = Retry(ExponentialBackoff(cap=timeout, base=timeout / 4), 2)
        return RedisCluster.from_url(redis_url(), require_full_coverage=False, retry=retry,
                                     **options)
    return module.from_url(redis_url(), **options)


def async_client() -> Any:
    """A ``redis.asyncio`` client for the running event loop (clients are loop-bound)."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = _new_client(False, get_settings().REDIS_TIMEOUT)
        _async_clients[loop] = client
    return client


def sync_client(timeout: float | None = None) -> Any:
    """A blocking client for views and management commands (one per ``timeout``)."""
    global _sync_client
    if timeout is not None:
        return _new_client(True, timeout)
    if _sync_client is None:
        # Commands and views are not on the hot path: give them a humane timeout.
        _sync_client = _new_client(True, max(1.0, get_settings().REDIS_TIMEOUT))
    return _sync_client


def primaries(client: Any) -> list[Any]:
    """One client per master: the cluster's primaries, or the client itself."""
    if not hasattr(client, "get_primaries"):
        return [client]
    return [client.get_redis_connection(node) for node in client.get_primaries()]


@on_reload
def _drop_clients() -> None:
    global _sync_client
    _async_clients.clear()
    _sync_client = None


# --- scripts -------------------------------------------------------------------------


class Script:
    """A Lua script run with EVALSHA (one round trip); on NOSCRIPT (a node that never saw
    it: a promoted replica, a restarted or new cluster node) it runs once with EVAL, which
    also caches it there. EVAL routes by the keys like EVALSHA, so on a cluster it reaches
    the node that answered NOSCRIPT."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def run(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        from redis.exceptions import NoScriptError

        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)

    def run_sync(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        """``run`` on a blocking client (views, commands)."""
        from redis.exceptions import NoScriptError

        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return client.eval(self.source, len(keys), *keys, *args)


# --- outage tracking -----------------------------------------------------------------


class OutageTracker:
    """Turns Redis errors into StoreUnavailable and logs each outage once.

    On a cluster one master may be down while the others answer, so during its
    failover calls to other slots keep succeeding. There an outage is tracked per
    slot (``where``): it ends when every slot that failed has answered again (or
    has not been asked for ``FORGET`` seconds), so it still costs two log lines.
    Calls that name no slot, and every call off a cluster, share one entry.
    """

    FORGET = 10.0

    def __init__(self) -> None:
        self.failing: dict[Any, float] = {}  # where -> when it last failed (monotonic)

    @property
    def down(self) -> bool:
        return bool(self.failing)

    def failed(self, error: BaseException, where: Any = None) -> StoreUnavailable:
        if not self.failing:
            metrics.redis_up(False)
            logger.warning(
                "wsops: Redis at %s is unreachable (%s); FAIL_MODE=%r applies until it returns.",
                describe(), error.__class__.__name__, get_settings().FAIL_MODE,
            )
        self.failing[where if is_cluster() else None] = time.monotonic()
        return StoreUnavailable(str(error) or error.__class__.__name__)

    def succeeded(self, where: Any = None) -> None:
        if not self.failing:
            return
        self.failing.pop(where if is_cluster() else None, None)
        forgotten = time.monotonic() - self.FORGET
        for stale in [w for w, at in self.failing.items() if at < forgotten]:
            del self.failing[stale]
        if not self.failing:
            metrics.redis_up(True)
            logger.warning("wsops: Redis at %s is reachable again.", describe())


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


_ready_clients: weakref.WeakSet[Any] = weakref.WeakSet()
_ready_locks: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()


async def _ready() -> None:
    """Read a cluster client's slot map once, alone: redis-py's asyncio cluster client
    breaks (AttributeError inside a connect) when its first calls run concurrently, as
    a worker's first burst of handshakes would make them."""
    if not is_cluster():
        return
    client = async_client()
    if client in _ready_clients:
        return
    async with _ready_locks.setdefault(client, asyncio.Lock()):
        if client not in _ready_clients:
            await client.initialize()
            _ready_clients.add(client)


async def call(coro: Any, operation: str = "other", where: Any = None) -> Any:
    """Await a Redis coroutine, mapping failures to StoreUnavailable.

    ``operation`` names it in the ``wsops_redis_seconds`` histogram (failures included);
    ``where``: the cluster slot it touches, when known, for the outage tracking.
    """
    try:
        await _ready()
    except store_errors() as error:
        coro.close()  # never started
        raise outage.failed(error, where)
    try:
        with metrics.redis_timer(operation):
            result = await coro
    except store_errors() as error:
        raise outage.failed(error, where)
    outage.succeeded(where)
    return result


async def gather(calls: list[tuple[Any, Any]], operation: str = "other") -> list[Any]:
    """Await ``(slot, coroutine)`` calls concurrently (to different cluster nodes: one
    round trip of latency). All of them finish; if any failed, ``StoreUnavailable`` is
    raised with ``answered`` holding every result (an exception where a call failed),
    so the caller can undo what the others did."""
    try:
        await _ready()
    except store_errors() as error:
        for _, coro in calls:
            coro.close()
        raise outage.failed(error)
    with metrics.redis_timer(operation):
        results = await asyncio.gather(*(coro for _, coro in calls), return_exceptions=True)
    errors = store_errors()
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, errors):
            raise result
    unavailable = None
    for (slot, _), result in zip(calls, results, strict=True):
        if isinstance(result, BaseException):
            failure = outage.failed(result, slot)
            unavailable = unavailable or failure
        else:
            outage.succeeded(slot)
    if unavailable is not None:
        unavailable.answered = results
        raise unavailable
    return results
