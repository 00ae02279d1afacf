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
   then registers the socket until it closes. For a token whose verification
   is cached in Redis, step 1 already decided this in its own trip, so such a
   handshake makes one round trip before it is accepted (and one at close).

A refused handshake is answered with HTTP 403 (``REJECT_WITH="handshake"``)
or accepted and closed with a code from ``wsops.codes``
(``REJECT_WITH="close_code"``). Redis being down under ``FAIL_MODE="closed"``
always closes with 1013 (try again later). Every refusal is one security event.
"""

from __future__ import annotations

import json
from typing import Any

from channels.auth import AuthMiddleware
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.contrib.auth.models import AnonymousUser

from . import codes, metrics, signals, store, tickets, tokens
from .clientip import client_key, header
from .conf import get_settings
from .connections import Entry, live_connections, new_member
from .credentials import (
    DISABLED,
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
    IdentityAdmission,
    Limit,
    ban_key,
    cap_key,
    get_limiter,
    rate_key,
)

Scope = dict[str, Any]


Refusal = tuple[int, str, str, dict[str, Any]]  # close code, event kind, reason, event extras


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


DENIAL_STATUS = {codes.UNAUTHENTICATED: 401, codes.RATE_LIMITED: 429}  # else 403


async def refuse(scope: Scope, receive: Any, send: Any, refusal: Refusal) -> None:
    """Report one security event and turn the handshake down.

    With ``EXPLAIN_REFUSALS`` on (default: under ``DEBUG``) the reason reaches the
    client: as a JSON 401/403/429 body where the server offers ASGI's WebSocket
    denial response, else as the close reason (``wsops.daphne_compat`` makes
    daphne put it in the close frame, or in the 403 status line before accept).
    """
    code, kind, reason, extra = refusal
    signals.report(kind, scope, reason, close_code=code, **extra)
    metrics.refused(scope, kind, reason)
    message = await receive()
    if message.get("type") != "websocket.connect":
        return  # the client went away first
    conf = get_settings()
    explained = {"reason": reason} if conf.explain_refusals else {}
    if code != codes.TRY_AGAIN_LATER and conf.REJECT_WITH == "handshake":
        if explained and "websocket.http.response" in (scope.get("extensions") or {}):
            await deny_with_body(send, code, reason)
        else:  # before accept: the server answers HTTP 403
            await send({"type": "websocket.close", "code": code, **explained})
        return
    offered = SUBPROTOCOL if SUBPROTOCOL in (scope.get("subprotocols") or ()) else None
    await send({"type": "websocket.accept", "subprotocol": offered})
    await send({"type": "websocket.close", "code": code, **explained})


async def deny_with_body(send: Any, code: int, reason: str) -> None:
    """ASGI's WebSocket denial response: an HTTP answer with a JSON body."""
    body = json.dumps({"code": code, "reason": reason}).encode()
    await send({"type": "websocket.http.response.start", "status": DENIAL_STATUS.get(code, 403),
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "websocket.http.response.body", "body": body})


async def decide(**admission: Any) -> Decision | None:
    """Ask the limiter; None means "Redis is down and FAIL_MODE is open: admit"."""
    try:
        return await get_limiter().admit(**admission)
    except store.StoreUnavailable:
        if get_settings().FAIL_MODE == "open":
            return None
        return Decision("unavailable")


def refusal_for(decision: Decision) -> Refusal:
    """The documented close code and event of a refusing decision."""
    about = {"key": decision.key}
    if decision.user_id is not None:  # refused with the token cache, before authentication
        about["user_id"] = decision.user_id
    if decision.outcome == BANNED:
        reason = (decision.ban or {}).get("reason") or "banned"
        return codes.FORBIDDEN, signals.BANNED, reason, about
    if decision.outcome == THROTTLED:
        return (codes.RATE_LIMITED, signals.THROTTLE, "connect_rate",
                {**about, "retry_after": round(decision.retry_after, 3)})
    if decision.outcome == CAPPED:
        return codes.RATE_LIMITED, signals.CONNECTION_CAP, "too_many_connections", about
    return codes.TRY_AGAIN_LATER, signals.UNAVAILABLE, "redis_unavailable", {}


class _Step:
    """A stack step: ``check(scope)`` returns a Refusal or None; alone, it is middleware."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def check(self, scope: Scope) -> Refusal | None:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> Any:
        require_websocket(scope, self)
        refusal = await self.check(scope)
        if refusal is not None:
            return await refuse(scope, receive, send, refusal)
        return await self.inner(scope, receive, send)


class ConnectThrottle(_Step):
    """Refuse banned IPs and IPs connecting faster than ``RATES["connect"]``.

    While it asks Redis anyway, it reads the token cache entry of a presented
    token in the same round trip. Inside ``SecureWebsocketStack`` it also decides
    that token's identity there (user and token bans, user connect rate, caps),
    which ``ConnectionRegistry`` would otherwise do in a second trip.
    """

    admits_identity = False  # set by SecureWebsocketStack, which also runs the registry

    async def check(self, scope: Scope) -> Refusal | None:
        ip = client_key(scope)
        if ip is None:
            return None
        conf = get_settings()
        rate = conf.rate("connect")
        limits = (Limit(rate_key("connect", "ip", ip), rate),) if rate else ()
        credential = find_credential(scope, conf.TOKEN_TRANSPORTS)
        fetch = identity = None
        if credential is not None and credential.kind == TOKEN and store.redis_url():
            fetch = tokens.cache_key_for(credential.secret)
            if self.admits_identity:
                identity = IdentityAdmission(ip, rate, conf.MAX_CONNECTIONS_PER_USER,
                                             conf.MAX_CONNECTIONS_PER_IP, new_member(),
                                             conf.CONNECTION_TTL)
        decision = await decide(bans=(ban_key("ip", ip),), limits=limits, fetch=fetch,
                                identity=identity, network=scope["wsops"]["ip"])
        if decision is not None and not decision.allowed:
            return refusal_for(decision)
        if fetch and decision is not None:
            state = scope["wsops"]
            state["cached_token"] = decision.fetched
            if identity and decision.identity_admitted:
                user_id = tokens.cached_identity(decision.fetched)
                state["admitted"] = (user_id, identity.member, identity.caps(user_id))
        return None


class OriginGuard(_Step):
    """Refuse cross-site WebSocket hijacking.

    A connection that would be authenticated by cookie must carry an allowed
    ``Origin``: browsers always send one, and the cookie is what a hostile page
    would ride on. One presenting a token or ticket, or no cookie at all, may omit
    it (non-browser clients send none; without a credential they are anonymous and
    the consumer's ``connect_permission`` decides), but a present Origin must be
    allowed.
    ``Origin: null`` (sandboxed iframes, file: pages) is always refused.
    """

    def __init__(self, inner: Any, allowed_origins: list[str] | None = None) -> None:
        from .origins import build_policy

        super().__init__(inner)
        self.policy = build_policy(allowed_origins) if allowed_origins is not None else None

    async def check(self, scope: Scope) -> Refusal | None:
        raw = header(scope, b"origin")
        origin = raw.decode("latin-1") if raw is not None else None
        scope.setdefault("wsops", {})["origin"] = origin
        if origin is None and (not header(scope, b"cookie") or
                               find_credential(scope, get_settings().TOKEN_TRANSPORTS)):
            # No Origin: not a browser, so not a page riding the user's cookies. It
            # authenticates by its token or ticket, or stays anonymous and the
            # consumer's connect_permission decides (4401).
            return None
        if not (self.policy or current_policy()).allows(origin):
            reason = "missing_origin" if origin is None else "origin_not_allowed"
            return codes.FORBIDDEN, signals.ORIGIN, reason, {}
        return None


class TokenAuthMiddleware:
    """Authenticate by access token, ticket or session; set ``scope["user"]``.

    Also sets ``scope["wsops"]["auth_method"]`` (``"subprotocol"``, ``"header"``,
    ``"query"``, ``"session"``, ``"message"`` once authenticated by the first
    frame, or None) and ``scope["wsops"]["token"]`` (id, prefix, scopes,
    expires_at) for token connections. The secret is stripped from the scope.
    Session cookies go through Channels' own Cookie/Session/AuthMiddleware.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.session_inner = with_session(inner)

    async def authenticate(self, scope: Scope) -> tuple[Scope, Refusal | None, bool]:
        """``(scope for the inner app, refusal, whether the session path must run)``."""
        conf = get_settings()
        state = scope.setdefault("wsops", {})
        credential = find_credential(scope, conf.TOKEN_TRANSPORTS)
        if credential is None:
            scope = strip_secrets(scope)
            if "cookie" in conf.TOKEN_TRANSPORTS and header(scope, b"cookie"):
                return scope, None, True
            state["auth_method"] = None
            scope["user"] = AnonymousUser()
            return scope, None, False
        try:
            user, token = await authenticate(credential, scope)
        except tokens.TokenInvalid as error:
            return scope, (codes.UNAUTHENTICATED, signals.AUTH, error.reason,
                           {"transport": credential.transport}), False
        except store.StoreUnavailable:
            return scope, (codes.TRY_AGAIN_LATER, signals.UNAVAILABLE, "redis_unavailable",
                           {}), False
        scope = strip_secrets(scope)
        state.pop("credential", None)  # holds the secret: nothing downstream may see it
        scope["user"] = user
        state["user_id"] = user.pk
        state["auth_method"] = credential.transport
        state["token"] = token.as_scope() if token else None
        return scope, None, False

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> Any:
        require_websocket(scope, self)
        if SUBPROTOCOL in (scope.get("subprotocols") or ()):
            send = answering_subprotocol(send)
        scope, refusal, session = await self.authenticate(scope)
        if refusal is not None:
            return await refuse(scope, receive, send, refusal)
        if session:
            return await self.session_inner(scope, receive, send)
        return await self.inner(scope, receive, send)


def with_session(inner: Any) -> Any:
    """Channels' session authentication in front of ``inner``."""
    return CookieMiddleware(SessionMiddleware(AuthMiddleware(_MarkSession(inner))))


async def authenticate(credential: Credential, scope: Scope) -> tuple[Any, Any]:
    """Resolve a credential to ``(user, VerifiedToken | None)`` or raise TokenInvalid."""
    if credential.kind in (MALFORMED, DISABLED):
        raise tokens.TokenInvalid(credential.refusal)
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

    async def admit(self, scope: Scope) -> tuple[Refusal | None, str, tuple[Cap, ...]]:
        """``(refusal, connection id, cap slots held)``."""
        conf = get_settings()
        state = scope.setdefault("wsops", {})
        admitted = state.pop("admitted", None)
        if admitted is not None:  # decided with the token cache read, before auth
            user_id, member, held = admitted
            if str(state.get("user_id")) == user_id:
                state["connection_id"] = member
                return None, member, held
            await release(held, member)  # not the identity that was admitted
        bans, limits, caps = identity_limits(scope)
        ip = client_key(scope)
        if ip is not None and conf.MAX_CONNECTIONS_PER_IP:
            caps.append(Cap(cap_key("ip", ip), conf.MAX_CONNECTIONS_PER_IP))
        member = new_member()
        decision = None
        if bans or limits or caps:
            decision = await decide(bans=tuple(bans), limits=tuple(limits), caps=tuple(caps),
                                    member=member, ttl=conf.CONNECTION_TTL)
            if decision is not None and not decision.allowed:
                return refusal_for(decision), member, ()
        state["connection_id"] = member
        return None, member, tuple(caps) if decision is not None else ()

    async def serve(self, scope: Scope, receive: Any, send: Any) -> Any:
        """Admit, then run the inner application with the socket registered."""
        refusal, member, held = await self.admit(scope)
        if refusal is not None:
            return await refuse(scope, receive, send, refusal)
        registry = live_connections()
        entry = Entry(scope, send, held)
        await registry.add(member, entry)
        try:
            return await metrics.observed(self.inner, scope, receive, send)
        finally:
            registry.remove(member)
            await release(entry.caps, member)  # admit_identity may have added slots

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> Any:
        require_websocket(scope, self)
        return await self.serve(scope, receive, send)


def identity_limits(scope: Scope) -> tuple[list[str], list[Limit], list[Cap]]:
    """The bans, rates and caps of the connection's identity (user and token)."""
    conf = get_settings()
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
    if token := scope.get("wsops", {}).get("token"):
        bans.append(ban_key("token", token["prefix"]))
    return bans, limits, caps


async def admit_identity(scope: Scope) -> Refusal | None:
    """Identity admission for a socket that authenticated after its handshake.

    A first-frame login (``TOKEN_TRANSPORTS`` with ``"message"``) learns who the
    client is only once the socket is open and registered. It must still pass
    exactly what a handshake credential passes: user and token bans, the per-user
    connect rate and the per-user cap. The cap slots it takes join the socket's
    registry entry, so they are refreshed while it lives and released when it closes.
    Returns None when admitted, else the refusal to report and close with.

    Outside ``SecureWebsocketStack`` (no registry entry), the slots it takes are
    never released: they stop counting after ``CONNECTION_TTL``.
    """
    bans, limits, caps = identity_limits(scope)
    if not (bans or limits or caps):
        return None
    state = scope.setdefault("wsops", {})
    member = state.get("connection_id") or new_member()
    decision = await decide(bans=tuple(bans), limits=tuple(limits), caps=tuple(caps),
                            member=member, ttl=get_settings().CONNECTION_TTL)
    if decision is not None and not decision.allowed:
        return refusal_for(decision)
    entry = live_connections().entries.get(member)
    if entry is not None:
        entry.scope["user"] = scope.get("user")  # the lifetime re-checks watch this user
        if decision is not None:
            entry.caps = (*entry.caps, *caps)
    return None


async def release(held: tuple[Cap, ...], member: str) -> None:
    """Free registry slots; if Redis is down they expire within CONNECTION_TTL."""
    if held:
        try:
            await get_limiter().release(held, member)
        except store.StoreUnavailable:
            pass


class SecureWebsocketStack:
    """Bans, throttles, origin guard, authentication and connection caps around ``inner``.

    Runs the steps of ``ConnectThrottle``, ``OriginGuard``, ``TokenAuthMiddleware``
    and ``ConnectionRegistry`` in that order, in one coroutine: nesting four
    middleware would keep four suspended frames alive for every open socket.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.registry = ConnectionRegistry(inner)
        self.throttle = ConnectThrottle(None)
        self.throttle.admits_identity = True
        self.origin = OriginGuard(None)
        self.auth = TokenAuthMiddleware(self.registry)
        # What guards the route, for `wssecure check`'s walker.
        self.wsops_steps = (self.throttle, self.origin, self.auth, self.registry)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> Any:
        require_websocket(scope, self)
        refusal = await self.throttle.check(scope)
        if refusal is None:
            refusal = await self.origin.check(scope)
        if refusal is None:
            if SUBPROTOCOL in (scope.get("subprotocols") or ()):
                send = answering_subprotocol(send)
            scope, refusal, session = await self.auth.authenticate(scope)
        if refusal is not None:
            if admitted := scope["wsops"].pop("admitted", None):
                await release(admitted[2], admitted[1])  # slots taken before the refusal
            return await refuse(scope, receive, send, refusal)
        if session:
            return await self.auth.session_inner(scope, receive, send)
        return await self.registry.serve(scope, receive, send)
