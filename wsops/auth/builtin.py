"""wsops' own credentials as authenticators: access tokens, tickets, the session.

``WSOPS["AUTHENTICATORS"]`` defaults to these three, in this order, which is
wsops' behaviour before authenticators were configurable.
"""

from __future__ import annotations

from .. import tickets, tokens
from ..handshake.state import NOT_FETCHED, Handshake
from ..handshake.transports import TICKET, TOKEN, Credential
from .base import Authenticated, AuthenticationFailed, BaseAuthenticator, ReadAhead


class TokenAuthenticator(BaseAuthenticator):
    """``wst_`` access tokens (``wstokens issue``), verified by the shared cache or the DB."""

    kind = "wsops"

    def read_ahead(self, credential: Credential, handshake: Handshake) -> ReadAhead | None:
        if credential.kind != TOKEN:
            return None
        secret_hash = tokens.hash_secret(credential.secret)
        owner = tokens.known_owner(secret_hash)
        return ReadAhead(tokens.cache_key(secret_hash), owner, credential.prefix,
                         confirms=lambda fetched: tokens.cached_owner(fetched) == owner,
                         forget=lambda: tokens.forget_owner(secret_hash))

    async def authenticate(self, credential: Credential,
                           handshake: Handshake) -> Authenticated | None:
        if credential.kind != TOKEN:
            return None
        cached, handshake.cached_token = handshake.cached_token, NOT_FETCHED
        token = await tokens.verify(credential.secret, cached=cached)
        return token.user, token.info()


class TicketAuthenticator(BaseAuthenticator):
    """Single-use ``wstkt_`` tickets (``POST ticket/``), redeemed atomically in Redis."""

    kind = "ticket"

    async def authenticate(self, credential: Credential,
                           handshake: Handshake) -> Authenticated | None:
        if credential.kind != TICKET:
            return None
        record = await tickets.consume(credential.secret)
        if record is None:
            raise AuthenticationFailed("unknown_or_used_ticket")
        bound_origin = record.get("origin")
        if bound_origin and bound_origin != handshake.origin:
            raise AuthenticationFailed("ticket_origin_mismatch")
        user = await tokens.load_user(record.get("user_id"))
        if user is None:
            raise AuthenticationFailed("inactive_user")
        return user, None


class SessionAuthenticator(BaseAuthenticator):
    """Django's session cookie (``"cookie"`` in ``TOKEN_TRANSPORTS``), when no credential
    is presented; see ``wsops.auth.authenticate_session``."""

    kind = "session"
    uses_session = True

    async def authenticate(self, credential: Credential,
                           handshake: Handshake) -> Authenticated | None:
        return None  # a session is a cookie, never a presented credential
