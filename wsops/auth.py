"""Authentication: one path for every transport, the first frame included.

``authenticate()`` turns what the handshake presented into ``scope["user"]``
and the ``Handshake``'s identity fields:

- a wsops access token (subprotocol, ``Authorization: Bearer``, ``?token=`` with
  ``query_token``), verified against the shared cache or the database;
- a single-use ticket (subprotocol or ``?ticket=``), redeemed atomically;
- else Django's session cookie (``"cookie"`` in ``TOKEN_TRANSPORTS``): the
  session is loaded and the user resolved as Channels' ``AuthMiddleware`` does,
  with ``scope["cookies"]`` and ``scope["session"]`` set, so Channels'
  ``login()``/``logout()``/``get_user()`` work on such sockets;
- else the socket is anonymous (``AnonymousUser``).

A presented credential that does not verify is refused (4401), never downgraded
to anonymous. ``login_by_message()`` is the first-frame transport (``"message"``):
the same verification, then the same identity admission a handshake credential
passes (``wsops.handshake.admission``).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from channels.auth import get_user
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie
from django.utils.functional import LazyObject

from . import codes, signals, store, tickets, tokens
from .conf import get_settings
from .connections import live_connections, new_member
from .handshake.admission import admit, identity_checks
from .handshake.refusal import Refused, unavailable
from .handshake.state import Handshake, TokenInfo
from .handshake.transports import DISABLED, MALFORMED, TICKET, Credential, classify
from .messages.parsing import decode
from .scope import Scope, header


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
    elif handshake.has_cookie and "cookie" in get_settings().TOKEN_TRANSPORTS:
        await authenticate_session(handshake, scope)
    else:
        scope["user"] = AnonymousUser()
        scope["session"] = EmptySession()


async def verify(credential: Credential, handshake: Handshake) -> tuple[Any, TokenInfo | None]:
    """Resolve a credential to ``(user, token info or None)``, or raise ``Refused`` (4401)."""
    try:
        return await _verify(credential, handshake)
    except tokens.TokenInvalid as error:
        raise Refused(codes.UNAUTHENTICATED, signals.AUTH, error.reason,
                      transport=credential.transport) from None
    except store.StoreUnavailable:
        raise unavailable() from None


async def _verify(credential: Credential, handshake: Handshake) -> tuple[Any, TokenInfo | None]:
    if credential.kind in (MALFORMED, DISABLED):
        raise tokens.TokenInvalid(credential.refusal)
    if credential.kind == TICKET:
        record = await tickets.consume(credential.secret)
        if record is None:
            raise tokens.TokenInvalid("unknown_or_used_ticket")
        bound_origin = record.get("origin")
        if bound_origin and bound_origin != handshake.origin:
            raise tokens.TokenInvalid("ticket_origin_mismatch")
        user = await tokens.load_user(record.get("user_id"))
        if user is None:
            raise tokens.TokenInvalid("inactive_user")
        return user, None
    cached, handshake.cached_token = handshake.cached_token, tokens.NOT_FETCHED
    token = await tokens.verify(credential.secret, cached=cached)
    return token.user, token.info()


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
