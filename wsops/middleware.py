"""ASGI middleware that secures a Channels websocket router.

Wrap the websocket router, not the whole ProtocolTypeRouter::

    application = ProtocolTypeRouter({
        "http": get_asgi_application(),
        "websocket": SecureWebsocketStack(URLRouter(websocket_urlpatterns)),
    })

``SecureWebsocketStack`` composes, outermost first, and in this order because
each step is cheaper than the next and protects it:

1. ``ConnectThrottle``: IP bans and the per-IP connect rate (one Redis trip).
   First, so floods and banned addresses never reach origin checks, session
   lookups or the database.
2. ``OriginGuard``: the cross-site WebSocket hijacking check. Before
   authentication, so a hostile page never even triggers a session lookup.
3. ``TokenAuthMiddleware``: access token, ticket or Django session ->
   ``scope["user"]``; a bad credential is refused, never made anonymous.
4. ``ConnectionRegistry``: what needs the identity: user and token bans, the
   per-user connect rate and the concurrent-connection caps (one Redis trip),
   then registers the socket until it closes.

A refused handshake is answered with HTTP 403 (``REJECT_WITH="handshake"``)
or accepted and closed with a code from ``wsops.codes``
(``REJECT_WITH="close_code"``). Redis being down under ``FAIL_MODE="closed"``
always closes with 1013 (try again later). Every refusal is one security event.
"""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddleware
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.contrib.auth.models import AnonymousUser

from . import codes, signals, store, tickets, tokens
from .clientip import client_ip, header
from .conf import get_settings
from .connections import Entry, live_connections, new_member
from .credentials import (
    MALFORMED,
    SUBPROTOCOL,
    TICKET,
    TOKEN,
    Credential,
    find_credential,
    strip_secrets,
)
from .origins import current_policy
from .ratelimit import (
    BANNED,
    CAPPED,
    THROTTLED,
    Cap,
    Decision,
    Limit,
    ban_key,
    cap_key,
    get_limiter,
    rate_key,
)

Scope = dict[str, Any]


def require_websocket(scope: Scope, component: object) -> None:
    if scope.get("type") != "websocket":
        name = type(component).__name__
        raise ValueError(
            f"{name} only handles websocket connections, not {scope.get('type')!r}: wrap the "
            f'websocket router (ProtocolTypeRouter({{"websocket": SecureWebsocketStack(...)}})), '
            "not the whole application."
        )


def answering_subprotocol(send: Any) -> Any:
    """Make the accept name the ``wsops`` subprotocol; browsers drop the socket otherwise."""

    async def send_with_subprotocol(message: dict[str, Any]) -> None:
        if message.get("type") == "websocket.accept" and not message.get("subprotocol"):
            message = {**message, "subprotocol": SUBPROTOCOL}
        await send(message)

    return send_with_subprotocol


async def refuse(scope: Scope, receive: Any, send: Any, code: int, kind: str, reason: str,
                 **extra: Any) -> None:
    """Report one security event and turn the handshake down."""
    signals.report(kind, scope, reason, close_code=code, **extra)
    message = await receive()
    if message.get("type") != "websocket.connect":
        return  # the client went away first
    if code != codes.TRY_AGAIN_LATER and get_settings().REJECT_WITH == "handshake":
        await send({"type": "websocket.close"})  # before accept: daphne answers HTTP 403
        return
    offered = SUBPROTOCOL if SUBPROTOCOL in (scope.get("subprotocols") or ()) else None
    await send({"type": "websocket.accept", "subprotocol": offered})
    await send({"type": "websocket.close", "code": code})


async def decide(**admission: Any) -> Decision | None:
    """Ask the limiter; None means "Redis is down and FAIL_MODE is open: admit"."""
    try:
        return await get_limiter().admit(**admission)
    except store.StoreUnavailable:
        if get_settings().FAIL_MODE == "open":
            return None
        return Decision("unavailable")


async def refuse_for(decision: Decision, scope: Scope, receive: Any, send: Any) -> None:
    """Turn a refusing decision into the documented close code and event."""
    if decision.outcome == BANNED:
        reason = (decision.ban or {}).get("reason") or "banned"
        return await refuse(scope, receive, send, codes.FORBIDDEN, signals.BANNED, reason,
                            key=decision.key)
    if decision.outcome == THROTTLED:
        return await refuse(scope, receive, send, codes.RATE_LIMITED, signals.THROTTLE,
                            "connect_rate", key=decision.key,
                            retry_after=round(decision.retry_after, 3))
    if decision.outcome == CAPPED:
        return await refuse(scope, receive, send, codes.RATE_LIMITED, signals.CONNECTION_CAP,
                            "too_many_connections", key=decision.key)
    return await refuse(scope, receive, send, codes.TRY_AGAIN_LATER, signals.UNAVAILABLE,
                        "redis_unavailable")


class ConnectThrottle:
    """Refuse banned IPs and IPs connecting faster than ``RATES["connect"]``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> Any:
        require_websocket(scope, self)
        ip = client_ip(scope)
        if ip is not None:
            conf = get_settings()
            rate = conf.rate("connect")
            limits = (Limit(rate_key("connect", "ip", ip), rate),) if rate else ()
            # Asking Redis anyway: read the token cache entry in the same round trip.
            credential = find_credential(scope, conf.TOKEN_TRANSPORTS)
            fetch = None
            if credential is not None and credential.kind == TOKEN and store.redis_url():
                fetch = tokens.cache_key_for(credential.secret)
            decision = await decide(bans=(ban_key("ip", ip),), limits=limits, fetch=fetch)
            if decision is not None and not decision.allowed:
                return await refuse_for(decision, scope, receive, send)
            if fetch and decision is not None:
                scope["wsops"]["cached_token"] = decision.fetched
        return await self.inner(scope, receive, send)


class OriginGuard:
    """Refuse cross-site WebSocket hijacking.

    A connection that would be authenticated by cookie must carry an allowed
    ``Origin``. One presenting a token or ticket may omit it (non-browser
    clients send none), but a present Origin must still be allowed.
    ``Origin: null`` (sandboxed iframes, file: pages) is always refused.
    """

    def __init__(self, inner: Any, allowed_origins: list[str] | None = None) -> None:
        from .origins import build_policy

        self.inner = inner
        self.policy = build_policy(allowed_origins) if allowed_origins is not None else None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> Any:
        require_websocket(scope, self)
        raw = header(scope, b"origin")
        origin = raw.decode("latin-1") if raw is not None else None
        state = scope.setdefault("wsops", {})
        state["origin"] = origin
        credential = find_credential(scope, get_settings().TOKEN_TRANSPORTS)
        if origin is None and credential is not None:
            return await self.inner(scope, receive, send)
        policy = self.policy or current_policy()
        if not policy.allows(origin):
            reason = "missing_origin" if origin is None else "origin_not_allowed"
            return await refuse(scope, receive, send, codes.FORBIDDEN, signals.ORIGIN, reason)
        return await self.inner(scope, receive, send)


class TokenAuthMiddleware:
    """Authenticate by access token, ticket or session; set ``scope["user"]``.

    Also sets ``scope["wsops"]["auth_method"]`` (``"subprotocol"``, ``"header"``,
    ``"query"``, ``"session"``, ``"message"`` once authenticated by the first
    frame, or None) and ``scope["wsops"]["token"]`` (id, prefix, scopes,
    expires_at) for token connections. The secret is stripped from the scope.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.session_inner = CookieMiddleware(
            SessionMiddleware(AuthMiddleware(_MarkSession(inner)))
        )

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> Any:
        require_websocket(scope, self)
        conf = get_settings()
        state = scope.setdefault("wsops", {})
        if SUBPROTOCOL in (scope.get("subprotocols") or ()):
            send = answering_subprotocol(send)
        credential = find_credential(scope, conf.TOKEN_TRANSPORTS)
        if credential is None:
            if "cookie" in conf.TOKEN_TRANSPORTS and header(scope, b"cookie"):
                return await self.session_inner(scope, receive, send)
            state["auth_method"] = None
            return await self.inner(dict(scope, user=AnonymousUser()), receive, send)
        try:
            user, token = await authenticate(credential, scope)
        except tokens.TokenInvalid as error:
            return await refuse(scope, receive, send, codes.UNAUTHENTICATED, signals.AUTH,
                                error.reason, transport=credential.transport)
        except store.StoreUnavailable:
            return await refuse(scope, receive, send, codes.TRY_AGAIN_LATER, signals.UNAVAILABLE,
                                "redis_unavailable")
        scope = strip_secrets(scope)
        state.pop("credential", None)  # holds the secret: nothing downstream may see it
        scope["user"] = user
        state["user_id"] = user.pk
        state["auth_method"] = credential.transport
        state["token"] = token.as_scope() if token else None
        return await self.inner(scope, receive, send)


async def authenticate(credential: Credential, scope: Scope) -> tuple[Any, Any]:
    """Resolve a credential to ``(user, VerifiedToken | None)`` or raise TokenInvalid."""
    if credential.kind == MALFORMED:
        raise tokens.TokenInvalid("malformed_credential")
    if credential.kind == TICKET:
        record = await tickets.consume(credential.secret)
        if record is None:
            raise tokens.TokenInvalid("unknown_or_used_ticket")
        bound_origin = record.get("origin")
        if bound_origin and bound_origin != scope.get("wsops", {}).get("origin"):
            raise tokens.TokenInvalid("ticket_origin_mismatch")
        user = await tokens.load_user(record.get("user_id"))
        if user is None:
            raise tokens.TokenInvalid("inactive_user")
        return user, None
    cached = scope.get("wsops", {}).pop("cached_token", tokens.NOT_FETCHED)
    token = await tokens.verify(credential.secret, cached=cached)
    return token.user, token


class _MarkSession:
    """Innermost step of the session path: record whether the cookie authenticated."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> Any:
        user = scope.get("user")
        authenticated = user is not None and user.is_authenticated
        scope["wsops"]["auth_method"] = "session" if authenticated else None
        if authenticated:
            scope["wsops"]["user_id"] = user.pk
        return await self.inner(scope, receive, send)


class ConnectionRegistry:
    """Identity-level admission, then the socket's entry in this worker's registry.

    Refuses banned users and tokens, users connecting faster than
    ``RATES["connect"]`` and connections over ``MAX_CONNECTIONS_PER_USER`` /
    ``MAX_CONNECTIONS_PER_IP`` (one Redis round trip), then registers the socket
    with ``wsops.connections`` (cap slots, token lifetime, remote close) until
    it closes.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> Any:
        require_websocket(scope, self)
        conf = get_settings()
        state = scope.setdefault("wsops", {})
        bans: list[str] = []
        limits: list[Limit] = []
        caps: list[Cap] = []
        user = scope.get("user")
        if user is not None and user.is_authenticated:
            bans.append(ban_key("user", user.pk))
            if (rate := conf.rate("connect")) is not None:
                limits.append(Limit(rate_key("connect", "user", user.pk), rate))
            if conf.MAX_CONNECTIONS_PER_USER:
                caps.append(Cap(cap_key("user", user.pk), conf.MAX_CONNECTIONS_PER_USER))
        if token := state.get("token"):
            bans.append(ban_key("token", token["prefix"]))
        ip = client_ip(scope)
        if ip is not None and conf.MAX_CONNECTIONS_PER_IP:
            caps.append(Cap(cap_key("ip", ip), conf.MAX_CONNECTIONS_PER_IP))
        member = new_member()
        decision = None
        if bans or limits or caps:
            decision = await decide(bans=tuple(bans), limits=tuple(limits), caps=tuple(caps),
                                    member=member, ttl=conf.CONNECTION_TTL)
            if decision is not None and not decision.allowed:
                return await refuse_for(decision, scope, receive, send)
        held = tuple(caps) if decision is not None else ()
        state["connection_id"] = member
        registry = live_connections()
        await registry.add(member, Entry(scope, send, held))
        try:
            return await self.inner(scope, receive, send)
        finally:
            registry.remove(member)
            if held:
                try:
                    await get_limiter().release(held, member)
                except store.StoreUnavailable:
                    pass  # the entry expires within CONNECTION_TTL


def SecureWebsocketStack(inner: Any) -> ConnectThrottle:
    """Origin guard, bans, throttles, authentication and connection caps around ``inner``."""
    return ConnectThrottle(OriginGuard(TokenAuthMiddleware(ConnectionRegistry(inner))))
