"""ASGI middleware that secures a Channels websocket router.

Wrap the websocket router, not the whole ProtocolTypeRouter::

    application = ProtocolTypeRouter({
        "http": get_asgi_application(),
        "websocket": SecureWebsocketStack(URLRouter(websocket_urlpatterns)),
    })

``SecureWebsocketStack`` runs these handshake steps, in this order because
each is cheaper than the next and protects it:

1. ``ConnectThrottle``: IP bans and the per-IP connect rate (one Redis trip).
   First, so floods and banned addresses never reach origin checks, session
   lookups or the database.
2. ``OriginGuard``: the cross-site WebSocket hijacking check. Before
   authentication, so a hostile page never even triggers a session lookup.
3. ``TokenAuthMiddleware``: access token, ticket or Django session ->
   ``scope["user"]``; a bad credential is refused, never made anonymous.
4. ``ConnectionRegistry``: what needs the identity: user and token bans, the
   per-user connect rate and the concurrent-connection caps (one Redis trip),
   then registers the socket in this worker's registry until it closes.

Inside the stack, a token this worker has verified before has its identity
(whose owner it is never changes) decided in step 1's trip, together with the
token-cache read, so such a handshake makes one round trip before accept.

Each class is also usable alone (``OriginGuard(URLRouter(...))``): it is the
same step, run by the same runner (``wsops.handshake.runner``). A refusal is
one ``Refused`` exception, answered in one place (``wsops.handshake.refusal``):
HTTP 403 before accept by default, or a close code from ``wsops.codes``.
Every refusal is one security event.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured

from . import auth, store, tokens
from .codes import FORBIDDEN
from .connections import new_member
from .handshake.admission import (
    Checks,
    admit,
    connect_checks,
    decide,
    identity_checks,
    ip_cap,
    refund,
    refusal_for,
    release,
)
from .handshake.refusal import Refused
from .handshake.runner import Step, run
from .handshake.state import Admission, Handshake
from .handshake.transports import TOKEN
from .origins import build_policy, current_policy
from .scope import Application, Receive, Scope, Send
from .signals import ORIGIN

__all__ = ["ConnectThrottle", "ConnectionRegistry", "OriginGuard", "SecureWebsocketStack",
           "TokenAuthMiddleware"]


class ConnectThrottle(Step):
    """Refuse banned IPs and IPs connecting faster than ``RATES["connect"]``.

    While it asks Redis anyway, it reads the token cache entry of a presented
    token in the same round trip. With ``with_identity`` (as ``SecureWebsocketStack``
    builds it, since its registry step follows) it also decides, in that trip, the
    identity of a token this worker has verified before: user and token bans, the
    user's connect rate, and the connection caps.
    """

    def __init__(self, inner: Application | None = None, *, with_identity: bool = False) -> None:
        super().__init__(inner)
        self.with_identity = with_identity

    async def check(self, handshake: Handshake, scope: Scope) -> None:
        checks = connect_checks(handshake.ip_key)
        if not checks:
            return
        fetch = owner = None
        credential = handshake.credential
        if credential is not None and credential.kind == TOKEN and store.redis_url():
            secret_hash = tokens.hash_secret(credential.secret)
            fetch = tokens.cache_key(secret_hash)
            if self.with_identity:
                owner = tokens.known_owner(secret_hash)
        if owner is not None and await self._decide_known_owner(handshake, checks, owner,
                                                                secret_hash, fetch):
            return
        decision = await decide(checks, fetch=fetch, network=handshake.ip)
        if decision is not None and not decision.allowed:
            raise refusal_for(decision)
        if decision is not None and fetch:
            handshake.cached_token = decision.fetched

    async def _decide_known_owner(self, handshake: Handshake, checks: Checks, owner: str,
                                  secret_hash: str, fetch: str) -> bool:
        """The IP checks with the identity of the owner this worker saw the token verified
        for. False when that guess cannot be trusted: then the caller decides the IP checks
        alone, and ConnectionRegistry decides whoever the token turns out to be.

        The guess holds when the token-cache entry read in the same trip names the same
        owner. No entry (revoked, expired, evicted) or another owner: what the guess
        charged is refunded. A refusal of the identity part is not trusted either (a
        re-owned token must not carry its old owner's ban).
        """
        identity = identity_checks(owner, handshake.credential.prefix) + \
            ip_cap(handshake.ip_key)
        try:
            admission = await admit(handshake, checks + identity, new_member(), owner,
                                    fetch=fetch, network=handshake.ip)
        except Refused as refused:
            if refused.extra.get("key") not in identity.key_names():
                raise  # the address's own ban or rate
            tokens.forget_owner(secret_hash)
            return False
        guessed = Admission(owner, admission.member, identity.caps, identity.limits)
        if not (admission.caps or admission.limits):
            return True  # Redis down and FAIL_MODE open: nothing decided, nothing charged
        if tokens.cached_owner(handshake.cached_token) == owner:
            handshake.admission = guessed
            return True
        await refund(guessed)
        tokens.forget_owner(secret_hash)
        return True


class OriginGuard(Step):
    """Refuse cross-site WebSocket hijacking.

    A connection that would be authenticated by cookie must carry an allowed
    ``Origin``: browsers always send one, and the cookie is what a hostile page
    would ride on. One presenting a token or ticket, or no cookie at all, may omit
    it (non-browser clients send none; without a credential they are anonymous and
    the consumer's ``connect_permission`` decides), but a present Origin must be
    allowed. ``Origin: null`` (sandboxed iframes, file: pages) is always refused.

    ``allowed_origins`` overrides ``WSOPS["ALLOWED_ORIGINS"]`` for this route; it also takes
    the patterns of Channels' ``OriginValidator`` (``"app.example.com"``, ``".example.com"``,
    ``"*"``) with Channels' meaning, and anything else raises ``ImproperlyConfigured`` here,
    not at the first connection.
    """

    def __init__(self, inner: Application | None = None,
                 allowed_origins: list[str] | tuple[str, ...] | None = None) -> None:
        super().__init__(inner)
        self.policy = None
        if allowed_origins is not None:
            try:
                self.policy = build_policy(allowed_origins, channels_forms=True)
            except ValueError as error:
                raise ImproperlyConfigured(f"OriginGuard(allowed_origins=...): {error}") from None

    async def check(self, handshake: Handshake, scope: Scope) -> None:
        origin = handshake.origin
        if origin is None and (not handshake.has_cookie or handshake.presents_credential):
            return  # not a browser riding the user's cookies
        if not (self.policy or current_policy()).allows(origin):
            raise Refused(FORBIDDEN, ORIGIN,
                          "missing_origin" if origin is None else "origin_not_allowed")


class TokenAuthMiddleware(Step):
    """Authenticate by access token, ticket or session; set ``scope["user"]``.

    Fills the ``Handshake`` (``scope["wsops"]``): ``auth_method`` (``"subprotocol"``,
    ``"header"``, ``"query"``, ``"session"``, ``"message"`` once authenticated by
    the first frame, or None), ``user_id`` and, for token sockets, ``token`` (id,
    prefix, scopes, expires_at). Secrets never reach the application's scope.
    See ``wsops.auth``.
    """

    async def check(self, handshake: Handshake, scope: Scope) -> None:
        await auth.authenticate(handshake, scope)


class ConnectionRegistry(Step):
    """Identity-level admission, then the socket's entry in this worker's registry.

    Refuses banned users and tokens, users connecting faster than
    ``RATES["connect"]`` and connections over ``MAX_CONNECTIONS_PER_USER`` /
    ``MAX_CONNECTIONS_PER_IP`` (one Redis round trip), then registers the socket
    with ``wsops.connections`` (cap slots, token lifetime, remote close) until
    it closes.
    """

    async def check(self, handshake: Handshake, scope: Scope) -> None:
        admission = handshake.admission
        if admission is not None:  # decided in the IP checks' trip, before authentication
            if admission.user_id == str(handshake.user_id):
                handshake.connection_id = admission.member
                return
            await release(admission)  # not the identity that was admitted
        token = handshake.token
        checks: Checks = ip_cap(handshake.ip_key)
        if handshake.authenticated:
            checks = identity_checks(handshake.user_id, token.prefix if token else None) + checks
        handshake.admission = await admit(handshake, checks, new_member(), handshake.user_id)
        handshake.connection_id = handshake.admission.member


class SecureWebsocketStack:
    """Bans, throttles, origin guard, authentication and connection caps around ``inner``.

    The four steps run in one coroutine, by the same runner each middleware uses
    alone: nesting four middleware would keep four suspended frames alive for
    every open socket. ``wssecure check`` reads ``handshake_steps`` to see what
    guards a route.
    """

    runs_handshake_steps = True

    def __init__(self, inner: Application) -> None:
        self.inner = inner
        self.handshake_steps: tuple[Step, ...] = (
            ConnectThrottle(with_identity=True), OriginGuard(), TokenAuthMiddleware(),
            ConnectionRegistry())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        return await run(self.handshake_steps, self.inner, scope, receive, send)
