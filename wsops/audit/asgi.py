"""Walk the real ASGI application and describe each WebSocket route.

Starting from ``ASGI_APPLICATION`` we follow ``ProtocolTypeRouter`` to its
``websocket`` entry, then middleware chains (``.inner``, ``.application``,
``.app``) and ``URLRouter`` routes down to ``as_asgi()`` consumers. Each
middleware is classified as an origin check, authentication or throttling,
and separately as reading the session cookie (Channels' ``SessionMiddleware``
and ``AuthMiddleware``, the pieces of ``SessionMiddlewareStack`` and
``AuthMiddlewareStack``, or wsops' own cookie transport), which the cookie
rules need; anything we do not know is walked through generically and listed
as unknown.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from ..conf import get_settings

ORIGIN, AUTH, THROTTLE, REGISTRY, SESSION = "origin", "auth", "throttle", "registry", "session"
WSOPS_AUTH = "wsops.middleware.TokenAuthMiddleware"

# Class -> its roles; () for a known class with none (CookieMiddleware only parses the
# header). Channels' AuthMiddleware reads the user from scope["session"]: session auth.
KNOWN: dict[str, tuple[str, ...]] = {
    "wsops.middleware.OriginGuard": (ORIGIN,),
    WSOPS_AUTH: (AUTH,),
    "wsops.middleware.ConnectThrottle": (THROTTLE,),
    "wsops.middleware.ConnectionRegistry": (REGISTRY,),
    "channels.security.websocket.OriginValidator": (ORIGIN,),
    "channels.auth.AuthMiddleware": (AUTH, SESSION),
    "channels.sessions.SessionMiddleware": (SESSION,),
    "channels.sessions.CookieMiddleware": (),
    "channels.sessions.InstanceSessionWrapper": (SESSION,),
}
INNER_ATTRIBUTES = ("inner", "application", "app")
MAX_DEPTH = 50


@dataclass
class Route:
    pattern: str
    consumer: str | None
    origin_check: list[str] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    throttle: list[str] = field(default_factory=list)
    session: list[str] = field(default_factory=list)  # what reads the session cookie
    unknown: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def qualified_name(obj: Any) -> str:
    klass = obj if isinstance(obj, type) else type(obj)
    return f"{klass.__module__}.{klass.__qualname__}"


def classify(obj: Any) -> tuple[str, ...] | None:
    """The roles of a middleware object (None: unknown), by class and its bases, with
    a name heuristic for home-made token auth and throttles."""
    for klass in type(obj).__mro__:
        name = f"{klass.__module__}.{klass.__qualname__}"
        if name in KNOWN:
            if name == WSOPS_AUTH and "cookie" in get_settings().TOKEN_TRANSPORTS:
                return (AUTH, SESSION)  # its session path is Channels' AuthMiddlewareStack
            return KNOWN[name]
    name = type(obj).__name__.lower()
    if "token" in name and "auth" in name:
        return (AUTH,)
    if "throttl" in name or "ratelimit" in name:
        return (THROTTLE,)
    return None


def load_application() -> Any:
    """Import ``settings.ASGI_APPLICATION`` (ImportError / ValueError when it fails)."""
    path = getattr(settings, "ASGI_APPLICATION", None)
    if not path:
        raise ValueError("ASGI_APPLICATION is not set")
    return import_string(path)


def websocket_entry(application: Any) -> Any | None:
    """The websocket branch of a ProtocolTypeRouter, or the application itself."""
    mapping = getattr(application, "application_mapping", None)
    if isinstance(mapping, dict):
        return mapping.get("websocket")
    return application


def _pattern(route: Any) -> str:
    pattern = getattr(route, "pattern", None)
    text = str(getattr(pattern, "_route", None) or getattr(pattern, "_regex", None) or pattern)
    return text


def walk(application: Any) -> list[Route]:
    """Every WebSocket route reachable from ``application``, with what guards it."""
    entry = websocket_entry(application)
    if entry is None:
        return []
    routes: list[Route] = []
    _walk(entry, Route(pattern="", consumer=None), routes, set(), 0)
    return routes


def _walk(node: Any, route: Route, found: list[Route], seen: set[int], depth: int) -> None:
    if node is None or depth > MAX_DEPTH or id(node) in seen:
        found.append(route)
        return
    seen = seen | {id(node)}
    consumer = getattr(node, "consumer_class", None)
    if consumer is not None:
        route.consumer = qualified_name(consumer)
        found.append(route)
        return
    sub_routes = getattr(node, "routes", None)
    if isinstance(sub_routes, (list, tuple)):
        for sub in sub_routes:
            sub_pattern = _pattern(sub)
            if route.pattern:  # nested router: one anchor, at the start
                sub_pattern = route.pattern.rstrip("$") + sub_pattern.lstrip("^")
            child = Route(**{**route.as_dict(), "pattern": sub_pattern})
            _walk(getattr(sub, "callback", None), child, found, seen, depth + 1)
        if not sub_routes:
            found.append(route)
        return
    steps = getattr(node, "handshake_steps", None)  # SecureWebsocketStack runs its steps inline
    if isinstance(steps, tuple):
        for step in steps:
            _record(route, classify(step), qualified_name(step))
        _walk(getattr(node, "inner", None), route, found, seen, depth + 1)
        return
    roles = classify(node)
    name = qualified_name(node)
    _record(route, roles, name)
    inner = next((getattr(node, attr) for attr in INNER_ATTRIBUTES
                  if callable(getattr(node, attr, None))), None)
    if inner is None and roles is None and not isinstance(node, type):
        # A plain function or closure: nothing more to see inside.
        route.consumer = route.consumer or name
        found.append(route)
        return
    _walk(inner, route, found, seen, depth + 1)


def _record(route: Route, roles: tuple[str, ...] | None, name: str) -> None:
    if roles is None:
        route.unknown.append(name)
        return
    for role in roles:
        if role == ORIGIN:
            route.origin_check.append(name)
        elif role == AUTH:
            route.auth.append(name)
        elif role in (THROTTLE, REGISTRY):
            route.throttle.append(name)
        elif role == SESSION:
            route.session.append(name)


def websocket_prefixes(routes: list[Route]) -> list[str]:
    """Literal URL prefixes of the routes (``^ws/chat/(?P<room>...)`` -> ``/ws/chat/``)."""
    prefixes = set()
    for route in routes:
        literal = re.split(r"[(\[\\.*+?{|$<]", route.pattern.lstrip("^"), maxsplit=1)[0]
        prefixes.add("/" + literal.lstrip("/"))
    return sorted(prefixes) or ["/ws/"]
