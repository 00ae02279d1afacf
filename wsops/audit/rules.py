"""Audit rules for settings and the ASGI chain, in the style of Django's security checks.

Each rule is a small function returning a list of ``CheckMessage`` with a
stable id. ``SETTINGS_RULES`` run for every ``manage.py check``; ``ASGI_RULES``
and ``DEPLOY_RULES`` with ``check --deploy``; ``wssecure check`` always runs
the first two and adds ``DEPLOY_RULES`` with ``--deploy``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Info, Warning

from ..conf import get_settings
from . import advisories, asgi

DAPHNE_DEFAULT_MAX_MESSAGE = 1024 * 1024
SAFE_CAPACITY, SAFE_EXPIRY = 1000, 120

Rule = Callable[[], list[CheckMessage]]


def _routes() -> list[asgi.Route] | CheckMessage:
    try:
        return asgi.walk(asgi.load_application())
    except Exception as error:  # any import-time failure of the user's project
        return Error(
            f"ASGI_APPLICATION {getattr(settings, 'ASGI_APPLICATION', None)!r} cannot be "
            f"loaded: {type(error).__name__}: {error}",
            hint="Point ASGI_APPLICATION at your ProtocolTypeRouter, e.g. "
                 "'project.asgi.application'.",
            id="wsops.E008",
        )


def _uses_cookie_auth() -> bool:
    return "cookie" in get_settings().TOKEN_TRANSPORTS


def _session_cookie_readers() -> list[str]:
    """What authenticates sockets by the session cookie, for the cookie rules.

    Found by walking the ASGI application: Channels' own stacks
    (``AuthMiddlewareStack``, ``SessionMiddlewareStack``, their pieces) and wsops'
    cookie transport. When the application cannot be loaded (E008 says why), the
    ``TOKEN_TRANSPORTS`` setting is all there is to go on.
    """
    routes = _routes()
    if isinstance(routes, CheckMessage):
        return ["WSOPS['TOKEN_TRANSPORTS'] 'cookie'"] if _uses_cookie_auth() else []
    return [f"route {route.pattern or '(root)'!r} "
            f"({', '.join(name.rsplit('.', 1)[-1] for name in route.session)})"
            for route in routes if route.session]


def _summary(items: list[str], shown: int = 2) -> str:
    more = len(items) - shown
    return ", ".join(items[:shown]) + (f" and {more} more" if more > 0 else "")


def _origins_derived() -> bool:
    return get_settings().ALLOWED_ORIGINS is None


def _is_local(url: str) -> bool:
    parts = urlsplit(url if "://" in url else f"redis://{url}")
    if parts.scheme == "unix":
        return True
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RedisHost(NamedTuple):
    """A channels-redis host: its URL and the connection options given beside it."""

    url: str
    options: dict[str, Any]


def _redis_hosts(layer: dict[str, Any]) -> list[RedisHost]:
    """The hosts of a channels-redis layer; Sentinel entries (no address) are skipped."""
    hosts = []
    for host in (layer.get("CONFIG") or {}).get("hosts", []):
        if isinstance(host, dict):
            if host.get("address"):
                options = {k: v for k, v in host.items() if k != "address"}
                hosts.append(RedisHost(host["address"], options))
        elif isinstance(host, (list, tuple)):
            hosts.append(RedisHost(f"redis://{host[0]}:{host[1]}", {}))
        else:
            hosts.append(RedisHost(str(host), {}))
    return hosts


def _has_password(host: RedisHost) -> bool:
    """Whether the client will authenticate: a password in the URL's userinfo, in its
    ``password=`` parameter, or beside it. redis-py's own parser decides, as it will
    when connecting."""
    from redis.connection import parse_url

    try:
        return bool(host.options.get("password") or parse_url(host.url).get("password"))
    except ValueError:  # not a Redis URL: it cannot connect at all
        return False


# --- rules that hold in every environment ---------------------------------------------


def check_asgi_routes() -> list[CheckMessage]:
    routes = _routes()
    if isinstance(routes, CheckMessage):
        return [routes]
    messages: list[CheckMessage] = []
    for route in routes:
        where = f"WebSocket route {route.pattern or '(root)'!r} ({route.consumer or 'unknown'})"
        if not route.origin_check:
            messages.append(Error(
                f"{where} has no origin check: any web page can open it with the visitor's "
                "cookies (cross-site WebSocket hijacking).",
                hint="Wrap the websocket router in wsops.middleware.SecureWebsocketStack "
                     "(or OriginGuard / Channels' AllowedHostsOriginValidator).",
                id="wsops.E001"))
        if not route.auth:
            messages.append(Info(
                f"{where} has no authentication middleware; every socket is anonymous.",
                hint="Use SecureWebsocketStack (token, ticket and session auth) if the "
                     "consumer needs to know the user.",
                id="wsops.I002"))
        if not route.throttle:
            messages.append(Warning(
                f"{where} has no connect throttle or connection cap.",
                hint="SecureWebsocketStack adds ConnectThrottle and ConnectionRegistry.",
                id="wsops.W015"))
    return messages


def check_origin_wildcard() -> list[CheckMessage]:
    if "*" in (get_settings().ALLOWED_ORIGINS or ()):
        return [Error("WSOPS['ALLOWED_ORIGINS'] contains '*': every site may open sockets "
                      "with your users' cookies.",
                      hint="List your own origins, e.g. ['https://app.example.com'].",
                      id="wsops.E003")]
    return []


def check_rates() -> list[CheckMessage]:
    conf = get_settings()
    missing = [scope for scope in ("connect", "message") if conf.rate(scope) is None]
    if missing:
        return [Warning(f"WSOPS['RATES'] has no {' or '.join(missing)} rate: one client can "
                        "open sockets or send messages as fast as the server accepts them.",
                        hint='Set e.g. RATES = {"connect": "30/m", "message": "20/s"}.',
                        id="wsops.W008")]
    return []


def check_message_size() -> list[CheckMessage]:
    size = get_settings().MAX_MESSAGE_BYTES
    if size > DAPHNE_DEFAULT_MAX_MESSAGE:
        return [Warning(f"WSOPS['MAX_MESSAGE_BYTES'] = {size} is above daphne's default "
                        f"message limit ({DAPHNE_DEFAULT_MAX_MESSAGE}): daphne refuses such "
                        "messages first, and a large cap lets one client make the worker "
                        "buffer megabytes.",
                        hint="Keep it at 64 KiB or what your messages need, and pass the same "
                             "value to daphne --websocket-max-message-size (wsdeploy daphne "
                             "does).",
                        id="wsops.W009")]
    return []


def check_query_tokens() -> list[CheckMessage]:
    if "query_token" in get_settings().TOKEN_TRANSPORTS:
        return [Warning("WSOPS['TOKEN_TRANSPORTS'] allows long-lived tokens in the query "
                        "string: URLs end up in access logs, proxies and browser history.",
                        hint="Remove 'query_token'; browsers should use single-use tickets "
                             "(?ticket= or the subprotocol).",
                        id="wsops.W010")]
    return []


def check_token_ttl() -> list[CheckMessage]:
    if get_settings().TOKEN_TTL is None:
        return [Warning("WSOPS['TOKEN_TTL'] is 'never': a leaked token works forever unless "
                        "someone notices and revokes it.",
                        hint='Give tokens a lifetime (e.g. "90d") and rotate them with '
                             "`wstokens rotate`.",
                        id="wsops.W011")]
    return []


def check_fail_mode() -> list[CheckMessage]:
    if get_settings().FAIL_MODE == "open":
        return [Info("WSOPS['FAIL_MODE'] is 'open': while Redis is unreachable new sockets "
                     "are admitted without rate limits, caps or bans.",
                     hint="Intended for availability-first services; 'closed' refuses them "
                          "with 1013 instead.",
                     id="wsops.I001")]
    return []


def channel_layers() -> list[tuple[str, dict[str, Any]]]:
    """``(alias, layer settings)`` for each entry of ``CHANNEL_LAYERS``."""
    return list(getattr(settings, "CHANNEL_LAYERS", {}).items())


def redis_channel_layers() -> list[tuple[str, dict[str, Any]]]:
    """The channels-redis layers among them."""
    return [(alias, layer) for alias, layer in channel_layers()
            if "channels_redis" in layer.get("BACKEND", "")]


def check_channel_layer_socket_timeout() -> list[CheckMessage]:
    """redis-py 8 made socket_timeout default to 5 s; channels-redis blocks 5 s in BZPOPMIN."""
    try:
        import redis
    except ImportError:
        return []
    if int(redis.__version__.split(".")[0]) < 8:
        return []
    messages: list[CheckMessage] = []
    for alias, layer in redis_channel_layers():
        blocking = 5  # channels_redis.core.RedisChannelLayer.brpop_timeout
        hosts = (layer.get("CONFIG") or {}).get("hosts") or [None]
        for host in hosts:
            timeout = host.get("socket_timeout", 5) if isinstance(host, dict) else 5
            if timeout is not None and timeout <= blocking:
                messages.append(Error(
                    f"CHANNEL_LAYERS[{alias!r}] uses redis-py {redis.__version__}, whose "
                    f"socket_timeout ({timeout}s) is not longer than channels-redis' {blocking}s "
                    "blocking receive: consumers crash with TimeoutError every few seconds "
                    "(channels_redis#422).",
                    hint='Give each host as a dict: {"address": "redis://...", '
                         '"socket_timeout": 10}.',
                    id="wsops.E009"))
                break
    return messages


def check_channel_layer_bounds() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for alias, layer in redis_channel_layers():
        config = layer.get("CONFIG") or {}
        capacity, expiry = config.get("capacity", 100), config.get("expiry", 60)
        if capacity > SAFE_CAPACITY or expiry > SAFE_EXPIRY:
            messages.append(Warning(
                f"CHANNEL_LAYERS[{alias!r}] keeps up to {capacity} messages for {expiry}s per "
                "channel: one slow or stalled client makes Redis hold all of them.",
                hint=f"Set CONFIG capacity <= {SAFE_CAPACITY} and expiry <= {SAFE_EXPIRY} "
                     "(wsops' own events need only a few).",
                id="wsops.W007"))
    return messages


def check_vulnerable_packages() -> list[CheckMessage]:
    return advisories.check()


# --- deployment rules (manage.py check --deploy) ----------------------------------------


def check_debug() -> list[CheckMessage]:
    if settings.DEBUG:
        return [Warning("DEBUG is True: origins are derived with http:// and any port, and "
                        "errors reveal your code.",
                        hint="Set DEBUG = False in production.", id="wsops.W001")]
    return []


def check_allowed_hosts_star() -> list[CheckMessage]:
    if _origins_derived() and "*" in settings.ALLOWED_HOSTS:
        return [Error("ALLOWED_HOSTS contains '*' and WSOPS['ALLOWED_ORIGINS'] is derived from "
                      "it: the origin check allows every site (no CSWSH protection).",
                      hint="List your host names in ALLOWED_HOSTS, or set "
                           "WSOPS['ALLOWED_ORIGINS'] explicitly.",
                      id="wsops.E002")]
    return []


def check_http_origins() -> list[CheckMessage]:
    plain = [o for o in get_settings().ALLOWED_ORIGINS or () if o.startswith("http://")]
    if plain:
        return [Warning(f"WSOPS['ALLOWED_ORIGINS'] allows plain-http origins {plain}: a "
                        "network attacker can inject a page on them.",
                        hint="Allow only https:// origins in production.", id="wsops.W002")]
    return []


def check_cookie_flags() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    if readers := _session_cookie_readers():
        where = _summary(readers)
        if not getattr(settings, "SESSION_COOKIE_SECURE", False):
            messages.append(Warning(
                f"Sockets authenticate with the session cookie ({where}) but "
                "SESSION_COOKIE_SECURE is False: the cookie also travels over plain http.",
                hint="Set SESSION_COOKIE_SECURE = True.", id="wsops.W003"))
        if getattr(settings, "SESSION_COOKIE_SAMESITE", "Lax") in (None, "None", False):
            messages.append(Error(
                f"SESSION_COOKIE_SAMESITE is None while sockets authenticate with the session "
                f"cookie ({where}): every cross-site request carries it.",
                hint="Use 'Lax' (Django's default) or 'Strict'.", id="wsops.E004"))
    if _uses_cookie_auth() and not getattr(settings, "CSRF_COOKIE_SECURE", False):
        messages.append(Warning(
            "CSRF_COOKIE_SECURE is False: the CSRF cookie guarding POST ticket/ also travels "
            "over plain http.", hint="Set CSRF_COOKIE_SECURE = True.", id="wsops.W004"))
    return messages


def check_in_memory_layer() -> list[CheckMessage]:
    if settings.DEBUG:
        return []
    for alias, layer in channel_layers():
        if layer.get("BACKEND", "").endswith("InMemoryChannelLayer"):
            return [Error(f"CHANNEL_LAYERS[{alias!r}] is the InMemoryChannelLayer: groups, "
                          "broadcasts and remote disconnects do not cross workers.",
                          hint="Use channels_redis.core.RedisChannelLayer in production.",
                          id="wsops.E005")]
    return []


def check_redis_layer_security() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for alias, layer in redis_channel_layers():
        for host in _redis_hosts(layer):
            if _is_local(host.url):
                continue
            parts = urlsplit(host.url)
            if not _has_password(host):
                messages.append(Warning(
                    f"CHANNEL_LAYERS[{alias!r}] connects to {parts.hostname} without a "
                    "password: anyone on that network can read and inject channel messages.",
                    hint="Set requirepass (or ACL users) and put the password in the URL.",
                    id="wsops.W005"))
            if parts.scheme != "rediss":
                messages.append(Warning(
                    f"CHANNEL_LAYERS[{alias!r}] connects to {parts.hostname} without TLS.",
                    hint="Use a rediss:// URL when Redis is not on this host.",
                    id="wsops.W006"))
    return messages


def check_shared_rate_storage() -> list[CheckMessage]:
    if settings.DEBUG:
        return []
    conf = get_settings()
    if conf.CACHE:
        backend = settings.CACHES[conf.CACHE]["BACKEND"]
        if backend.endswith(("LocMemCache", "DummyCache")):
            return [Error(f"WSOPS['CACHE'] = {conf.CACHE!r} is a {backend.rsplit('.', 1)[-1]}: "
                          "rate limits, caps and bans would live in each worker.",
                          hint="Point WSOPS['CACHE'] at a django-redis cache, or set "
                               "WSOPS['REDIS_URL'].",
                          id="wsops.E006")]
        return []
    if not conf.REDIS_URL and not conf.REDIS_SENTINELS:
        return [Error("WSOPS has neither REDIS_URL nor CACHE: rate limits, connection caps, "
                      "bans and ticket single-use are per process, so N workers allow N times "
                      "the limits and revocation is not shared.",
                      hint="Set WSOPS['REDIS_URL'] = 'redis://...'.", id="wsops.E006")]
    return []


def check_proxy_settings() -> list[CheckMessage]:
    proxies = get_settings().TRUSTED_PROXIES
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header and not proxies:
        return [Warning("SECURE_PROXY_SSL_HEADER says there is a proxy, but "
                        "WSOPS['TRUSTED_PROXIES'] is empty: unless daphne runs with "
                        "--proxy-headers, per-IP limits and bans see only the proxy's address.",
                        hint="List your proxies (or 'unix' for a unix-socket peer) in "
                             "TRUSTED_PROXIES, or run daphne with --proxy-headers behind an "
                             "nginx that overwrites X-Forwarded-For.",
                        id="wsops.W012")]
    if proxies and not proxy_header:
        return [Warning("WSOPS['TRUSTED_PROXIES'] is set but SECURE_PROXY_SSL_HEADER is not: "
                        "behind a TLS-terminating proxy Django cannot tell https requests.",
                        hint="SECURE_PROXY_SSL_HEADER = ('HTTP_X_FORWARDED_PROTO', 'https').",
                        id="wsops.W013")]
    return []


def check_redis_topology() -> list[CheckMessage]:
    """Sentinel needs a majority of its Sentinels to fail over: fewer than 3 cannot
    lose one (conf.py already refused the combinations that cannot work)."""
    sentinels = get_settings().REDIS_SENTINELS
    if sentinels and len(sentinels) < 3:
        return [Warning(f"WSOPS['REDIS_SENTINELS'] lists {len(sentinels)} Sentinel(s): when "
                        "one is lost, the rest are no majority and no failover happens.",
                        hint="Run and list at least 3 Sentinels, on separate hosts.",
                        id="wsops.W016")]
    return []


SETTINGS_RULES: list[Rule] = [
    check_origin_wildcard, check_rates, check_message_size, check_query_tokens,
    check_token_ttl, check_fail_mode, check_channel_layer_bounds,
    check_channel_layer_socket_timeout, check_redis_topology,
]
# Imports the project's ASGI application: run by `wssecure check` and `check --deploy`,
# not by every management command.
ASGI_RULES: list[Rule] = [check_asgi_routes]
# Reads the installed packages' metadata against the shipped advisory table: run by
# `check --deploy` (and by `wssecure check`, which can read another table).
PACKAGE_RULES: list[Rule] = [check_vulnerable_packages]
DEPLOY_RULES: list[Rule] = [
    check_debug, check_allowed_hosts_star, check_http_origins, check_cookie_flags,
    check_in_memory_layer, check_redis_layer_security, check_shared_rate_storage,
    check_proxy_settings,
]


def run(rules: list[Rule]) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for rule in rules:
        messages.extend(rule())
    return messages
