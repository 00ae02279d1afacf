"""``Handshake``: what wsops knows about one connection, parsed once.

It is published to the application as ``scope["wsops"]`` (the one scope key
wsops owns), and consumers read it through attributes::

    handshake = self.scope["wsops"]
    handshake.authenticated, handshake.user_id, handshake.auth_method
    handshake.ip, handshake.origin, handshake.connection_id
    handshake.token.prefix, handshake.token.scopes      # token sockets only

The presented credential (the secret) lives on it only until authentication has
used it; ``forget_credential()`` drops it before the application runs, and it is
never in ``repr()``. The fields below the line are the steps' bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..clientip import client_address, per_ip_key
from ..conf import get_settings
from ..limits.engine import Cap, Limit
from ..scope import Scope, header
from .transports import Credential, find_credential, offers_marker

NOT_FETCHED = object()  # the token cache entry was not read ahead


@dataclass(eq=False, slots=True)
class TokenInfo:
    """The token a socket authenticated with: never its secret."""

    id: Any
    prefix: str
    scopes: list[str]
    expires_at: float | None  # epoch seconds; None: never


@dataclass(eq=False, slots=True)
class Admission:
    """Cap slots a step took in Redis for one identity, to release if a later step refuses."""

    user_id: str  # whom they were taken for
    member: str  # the connection id registered in the cap sets
    caps: tuple[Cap, ...]
    limits: tuple[Limit, ...] = ()  # rates charged with them (refunded if the guess was wrong)


@dataclass(eq=False, slots=True, weakref_slot=True)
class Handshake:
    ip: str | None  # the client's canonical address (``wsops.clientip``)
    ip_key: str | None  # what per-IP limits key by (an IPv6 client: its /64)
    origin: str | None  # the raw Origin header, None when absent
    has_cookie: bool
    offers_marker: bool  # the client offered the ``wsops`` subprotocol
    presents_credential: bool  # a token or ticket was presented (valid or not)
    credential: Credential | None = field(default=None, repr=False)
    presented_prefix: str | None = None  # a presented token's public prefix, for events
    auth_method: str | None = None  # subprotocol|header|query|session|message; None: anonymous
    user_id: Any = None
    token: TokenInfo | None = None
    connection_id: str | None = None
    # ---- the steps' bookkeeping ----
    cached_token: Any = field(default=NOT_FETCHED, repr=False)  # read ahead with the IP checks
    admission: Admission | None = field(default=None, repr=False)
    steps_run: int = field(default=0, repr=False)  # one bit per step class that has run

    @classmethod
    def parse(cls, scope: Scope) -> Handshake:
        """Read the handshake's headers once: address, Origin, cookie, credential."""
        raw_origin = header(scope, b"origin")
        ip = client_address(scope)
        credential = find_credential(scope, get_settings().TOKEN_TRANSPORTS)
        return cls(ip=ip, ip_key=per_ip_key(ip),
                   origin=raw_origin.decode("latin-1") if raw_origin is not None else None,
                   has_cookie=bool(header(scope, b"cookie")),
                   offers_marker=offers_marker(scope),
                   presents_credential=credential is not None, credential=credential,
                   presented_prefix=credential.prefix if credential is not None else None)

    @property
    def authenticated(self) -> bool:
        return self.user_id is not None

    def forget_credential(self) -> None:
        """Drop the secret: nothing downstream (consumers, loggers) may see it."""
        self.credential = None

    def signed_in(self, user: Any, method: str, token: TokenInfo | None = None) -> None:
        """Record who authenticated, and how."""
        self.user_id = user.pk
        self.auth_method = method
        self.token = token
        self.credential = None


def handshake_of(scope: Scope) -> Handshake | None:
    """The connection's ``Handshake`` (None outside wsops' middleware)."""
    found = scope.get("wsops")
    return found if isinstance(found, Handshake) else None

