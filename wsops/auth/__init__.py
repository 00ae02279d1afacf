"""Authentication: one path for every transport, the first frame included.

``authenticate()`` turns what the handshake presented into ``scope["user"]``
and the ``Handshake``'s identity fields. A presented credential (subprotocol,
``Authorization: Bearer``/``Token``, ``?ticket=``, ``?token=`` with
``query_token``, the first frame) is offered to the authenticators of
``WSOPS["AUTHENTICATORS"]`` in order (``wsops.auth.base``); by default:

- a wsops access token, verified against the shared cache or the database
  (``TokenAuthenticator``);
- a single-use ticket, redeemed atomically (``TicketAuthenticator``);
- else, with ``SessionAuthenticator``, Django's session cookie (``"cookie"`` in
  ``TOKEN_TRANSPORTS``): the session is loaded and the user resolved as
  Channels' ``AuthMiddleware`` does, with ``scope["cookies"]`` and
  ``scope["session"]`` set, so Channels' ``login()``/``logout()``/``get_user()``
  work on such sockets;
- else the socket is anonymous (``AnonymousUser``).

A presented credential that does not verify is refused (4401), never downgraded
to anonymous. ``login_by_message()`` is the first-frame transport (``"message"``):
the same verification, then the same identity admission a handshake credential
passes (``wsops.handshake.admission``).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import import_module
from typing import Any

from channels.auth import get_user
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie
from django.utils.functional import LazyObject
from django.utils.module_loading import import_string

from .. import codes, signals, store, tokens
from ..conf import get_settings, on_reload
from ..connections import live_connections, new_member
from ..handshake.admission import admit, identity_checks
from ..handshake.refusal import Refused, unavailable
from ..handshake.state import Handshake, TokenInfo
from ..handshake.transports import DISABLED, MALFORMED, TICKET, Credential, classify
from ..messages.parsing import decode
from ..scope import Scope, header
from .base import Authenticated, AuthenticationFailed, BaseAuthenticator, ReadAhead
from .builtin import SessionAuthenticator, TicketAuthenticator, TokenAuthenticator
from .drf import DRFTokenAuthenticator
from .jwt import SimpleJWTAuthenticator
from .oauth2 import OAuth2Authenticator

__all__ = ["AuthenticationFailed", "BaseAuthenticator", "DRFTokenAuthenticator",
           "OAuth2Authenticator", "ReadAhead", "SessionAuthenticator",
           "SimpleJWTAuthenticator", "TicketAuthenticator", "TokenAuthenticator",
           "authenticate", "authenticators", "login_by_message", "verify"]


@lru_cache(maxsize=1)
def authenticators() -> tuple[BaseAuthenticator, ...]:
    """This process' authenticator chain, built once from ``WSOPS["AUTHENTICATORS"]``."""
    return tuple(import_string(path)() for path in get_settings().AUTHENTICATORS)


on_reload(authenticators.cache_clear)


def connect_signals() -> None:
    """Let each configured authenticator connect its model signals (``AppConfig.ready``)."""
    for authenticator in authenticators():
        authenticator.connect_signals()


def read_ahead(credential: Credential, handshake: Handshake) -> ReadAhead | None:
    """What the first handshake step can fold into its Redis trip for this credential."""
    if credential.kind in (MALFORMED, DISABLED, TICKET):
        return None
    for authenticator in authenticators():
        ahead = authenticator.read_ahead(credential, handshake)
        if ahead is not None:
            if ahead.identifier is not None:  # events before authentication name it too
                handshake.presented_prefix = ahead.identifier
            return ahead
    return None


async def revoked_tokens(live: list[TokenInfo]) -> set[str]:
    """Identifiers of live non-wsops tokens that no longer authenticate (the re-check)."""
    found: set[str] = set()
    for authenticator in authenticators():
        mine = [token for token in live if token.kind == authenticator.kind]
        if mine:
            found |= await authenticator.revoked(mine)
    return found


async def authenticate(handshake: Handshake, scope: Scope) -> None:
    """Authenticate the handshake's credential, else its session cookie; raise ``Refused``.

    Every socket gets a ``scope["session"]``: its cookie's session, or an empty one that
    is only created if used (so Channels' ``login()`` works on any socket).
    """
    credential = handshake.credential
    if credential is not None:
        user, token = await verify(credential, handshake)
        scope["user"] = user
        scope["session"] = EmptySession()
        handshake.signed_in(user, credential.transport, token)
    elif (handshake.has_cookie and "cookie" in get_settings().TOKEN_TRANSPORTS
          and any(a.uses_session for a in authenticators())):
        await authenticate_session(handshake, scope)
    else:
        scope["user"] = AnonymousUser()
        scope["session"] = EmptySession()


async def verify(credential: Credential, handshake: Handshake) -> tuple[Any, TokenInfo | None]:
    """Resolve a credential to ``(user, token info or None)``, or raise ``Refused`` (4401)."""
    try:
        return await _verify(credential, handshake)
    except (tokens.TokenInvalid, AuthenticationFailed) as error:
        identifier = getattr(error, "identifier", None)
        if identifier is not None:
            handshake.presented_prefix = identifier  # the event names it, never the secret
        raise Refused(codes.UNAUTHENTICATED, signals.AUTH, error.reason,
                      transport=credential.transport) from None
    except store.StoreUnavailable:
        raise unavailable() from None


async def _verify(credential: Credential, handshake: Handshake) -> Authenticated:
    if credential.kind in (MALFORMED, DISABLED):
        raise AuthenticationFailed(credential.refusal)
    for authenticator in authenticators():
        found = await authenticator.authenticate(credential, handshake)
        if found is not None:
            _check(*found)
            return found
    raise AuthenticationFailed(credential.refusal)  # no authenticator claims it


def _check(user: Any, token: TokenInfo | None) -> None:
    """What every kind must pass, whoever vouched for it."""
    identifier = token.prefix if token is not None else None
    expires_at = token.expires_at if token is not None else None
    if expires_at is not None and expires_at <= tokens.now().timestamp():
        raise AuthenticationFailed("expired", identifier)
    if not getattr(user, "is_active", False) or not getattr(user, "is_authenticated", False):
        raise AuthenticationFailed("inactive_user", identifier)


def session_store() -> Any:
    """``settings.SESSION_ENGINE``'s ``SessionStore`` class."""
    return import_module(settings.SESSION_ENGINE).SessionStore


class EmptySession(LazyObject):
    """A new, empty session, made only when something uses it (memory per idle socket).

    Token, ticket and first-frame sockets carry no session cookie: ``login()`` works on
    this one (save it, as on any Channels socket, to keep it), ``get_user()`` reads
    AnonymousUser from it (read ``scope["user"]`` instead).
    """

    def _setup(self) -> None:
        self._wrapped = session_store()()


async def authenticate_session(handshake: Handshake, scope: Scope) -> None:
    """Django's session cookie -> ``scope["user"]``, as Channels' session stack does."""
    cookies = parse_cookie((header(scope, b"cookie") or b"").decode("latin-1"))
    scope["cookies"] = cookies
    scope["session"] = session_store()(cookies.get(settings.SESSION_COOKIE_NAME))
    user = await get_user(scope)  # one thread hop: session row, user row, session hash
    scope["user"] = user
    if user.is_authenticated:
        handshake.signed_in(user, "session")


async def login_by_message(handshake: Handshake, scope: Scope, text: str) -> None:
    """Log in with ``{"action": "authenticate", "token": ...}``; raise ``Refused`` if not.

    The socket is open and registered already, so the identity's admission (user and
    token bans, 4403; the user's connect rate and cap, 4429) runs now, and the cap
    slots it takes join the socket's registry entry: refreshed while it lives,
    released when it closes. Outside ``SecureWebsocketStack`` (no registry entry)
    those slots stop counting after ``CONNECTION_TTL``.
    """
    secret = _authenticate_token(text)
    if secret is None:
        raise Refused(codes.UNAUTHENTICATED, signals.AUTH, "expected_authenticate_message",
                      transport="message")
    credential = Credential("message", classify(secret), secret)
    handshake.presented_prefix = credential.prefix
    user, token = await verify(credential, handshake)
    scope["user"] = user
    handshake.signed_in(user, "message", token)
    member = handshake.connection_id or new_member()
    checks = identity_checks(user.pk, token.prefix if token else None)
    admission = await admit(handshake, checks, member, user.pk)
    entry = live_connections().entries.get(member)
    if entry is not None:
        entry.scope["user"] = user  # the lifetime re-checks watch this user
        entry.caps = (*entry.caps, *admission.caps)


def _authenticate_token(text: str) -> str | None:
    """The token of ``{"action": "authenticate", "token": "..."}``, else None."""
    try:
        content = decode(text)
    except (ValueError, RecursionError):
        return None
    if type(content) is not dict or content.get("action") != "authenticate":
        return None
    secret = content.get("token")
    return secret if type(secret) is str else None
