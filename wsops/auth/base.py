"""``BaseAuthenticator``: what each entry of ``WSOPS["AUTHENTICATORS"]`` is.

Like DRF's authentication classes, an authenticator is a small class asked in
turn about the credential the transports found (``wsops.handshake.transports``:
subprotocol, ``Authorization: Bearer``/``Token``, the first frame, ``?token=``
with ``query_token``). It answers in one of three ways:

- ``(user, TokenInfo)``: the credential is its kind and valid. ``TokenInfo``
  carries the scopes, the expiry, the revocation handle (``id``) and a safe
  identifier (``prefix``: a JWT's ``jti``, a hash prefix; never the secret), so
  bans, caps, ``HasScope``, expiry on live sockets, events and remote close treat
  every kind alike;
- ``None``: not its kind; the next authenticator is asked;
- ``raise AuthenticationFailed(reason)``: its kind, but not valid. The socket is
  refused (4401), never downgraded to anonymous.

A credential no authenticator claims is refused too. After one claims it, the
chain refuses an expired ``TokenInfo`` or an inactive user, whatever the kind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any

from ..handshake.state import Handshake, TokenInfo
from ..handshake.transports import Credential

Authenticated = tuple[Any, "TokenInfo | None"]  # (user, token info or None)


class AuthenticationFailed(Exception):
    """Refuse the credential (4401). ``reason`` is safe to log; ``identifier`` (safe
    too) names the credential in the security event when it is known."""

    def __init__(self, reason: str, identifier: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.identifier = identifier


def _holds(fetched: Any) -> bool:
    return True


def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class ReadAhead:
    """What the first handshake step may fold into its Redis round trip.

    With an ``owner``, the step decides that user's bans, rate and caps in the same
    trip, then asks ``confirms(what was fetched)`` whether the guess held (a token
    whose cache entry names another owner, or none: refunded, and ``forget()`` drops
    the guess).
    """

    fetch: str | None = None  # a key to read in that trip (the credential's cache entry)
    owner: str | None = None  # the owner's pk when known without the database
    identifier: str | None = None  # the credential's safe identifier (its token ban)
    confirms: Callable[[Any], bool] = _holds
    forget: Callable[[], None] = _nothing


class BaseAuthenticator:
    """Subclass and list the dotted path in ``WSOPS["AUTHENTICATORS"]``.

    One instance serves every handshake of a worker: keep no per-connection state
    on it (what belongs to one handshake goes on the ``Handshake``).
    """

    kind = ""  # TokenInfo.kind, and the prefix of identifiers ("jwt" -> "jwt_...")
    requires: tuple[str, ...] = ()  # modules the authenticator's extra installs
    extra = ""  # the pip extra that installs them (wsops[jwt], ...)
    uses_session = False  # whether Django's session cookie is read (SessionAuthenticator)
    apps: tuple[str, ...] = ()  # INSTALLED_APPS entries its models live in

    @classmethod
    def missing(cls) -> str | None:
        """Why this authenticator cannot run here (a package or an app is missing)."""
        from django.conf import settings

        for module in cls.requires:
            if find_spec(module) is None:
                how = f' (pip install "wsops[{cls.extra}]")' if cls.extra else ""
                return f"{cls.__name__} needs the {module} package{how}"
        for app in cls.apps:
            if app not in settings.INSTALLED_APPS:
                return f"{cls.__name__} needs {app!r} in INSTALLED_APPS"
        return None

    def read_ahead(self, credential: Credential, handshake: Handshake) -> ReadAhead | None:
        """What can be decided in the first Redis trip, without I/O; None: nothing."""
        return None

    async def authenticate(self, credential: Credential,
                           handshake: Handshake) -> Authenticated | None:
        """``(user, TokenInfo)``, None when not this kind, or raise AuthenticationFailed."""
        raise NotImplementedError

    async def revoked(self, live: list[TokenInfo]) -> set[str]:
        """The identifiers among this kind's live tokens that no longer authenticate.

        Called for a whole worker every ``TOKEN_CACHE_SECONDS``; those sockets close
        (4401). Where a signal is seen (a deleted token), they close at once instead.
        """
        return set()

    def connect_signals(self) -> None:
        """Connect model signals that drop caches and close live sockets (at startup)."""

    def identifier(self, secret: str) -> str:
        """A safe identifier for a secret: the kind and a prefix of its SHA-256."""
        return f"{self.kind}_{digest(secret)[:16]}"


def problem(path: str) -> str | None:
    """Why a dotted path cannot serve in ``WSOPS["AUTHENTICATORS"]``, else None."""
    from django.utils.module_loading import import_string

    try:
        found = import_string(path)
    except ImportError as error:
        return f"{path!r} cannot be imported ({error})"
    if not (isinstance(found, type) and issubclass(found, BaseAuthenticator)):
        return f"{path!r} is not a wsops.auth.BaseAuthenticator subclass"
    return found.missing()


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()
