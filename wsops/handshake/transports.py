"""Transports: finding the credential a WebSocket handshake presents, without trusting it.

Transports, in the order they are tried (each can be switched off in
``WSOPS["TOKEN_TRANSPORTS"]``):

1. ``subprotocol``: ``Sec-WebSocket-Protocol: wsops, <secret>``, the only header
   a browser's ``new WebSocket(url, protocols)`` can set. The pair may stand
   anywhere among the application's own subprotocols; the server answers the
   application's choice, or ``wsops`` (a browser drops a socket whose answer is
   not one it offered).
2. ``header``: ``Authorization: Bearer <secret>`` (non-browser clients).
3. ``query``: ``?ticket=<ticket>``; long-lived tokens only with ``query_token``
   (a URL ends up in access logs and browser history).
4. ``cookie``: Django's session (handled by the middleware, not here).

A present but malformed credential is still a credential: it is rejected, never
downgraded to an anonymous connection. After parsing, the secret is removed
from the scope so nothing downstream (consumers, loggers) can leak it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from ..scope import header

SUBPROTOCOL = "wsops"
TOKEN_PREFIX = "wst_"
TICKET_PREFIX = "wstkt_"
_SECRET_BODY = r"[A-Za-z0-9_-]{43}"
TOKEN_RE = re.compile(re.escape(TOKEN_PREFIX) + _SECRET_BODY)
TICKET_RE = re.compile(re.escape(TICKET_PREFIX) + _SECRET_BODY)
MAX_SECRET_LENGTH = 256

TOKEN, TICKET, MALFORMED = "token", "ticket", "malformed"
DISABLED = "disabled"  # a wsops credential in a transport TOKEN_TRANSPORTS switches off


@dataclass(frozen=True)
class Credential:
    transport: str  # subprotocol | header | query | message
    kind: str  # token | ticket | malformed | disabled
    secret: str = field(default="", repr=False)
    switch: str = ""  # the TOKEN_TRANSPORTS entry this needs, when not the transport's name

    @property
    def prefix(self) -> str | None:
        """The public prefix, safe to log; None for tickets and garbage."""
        return self.secret[:12] if self.kind == TOKEN else None

    @property
    def refusal(self) -> str:
        """Why a malformed or disabled credential is refused (a security event reason)."""
        if self.kind == DISABLED:
            return f"{self.switch or self.transport}_disabled"
        return "malformed_credential"


def classify(secret: str) -> str:
    if TOKEN_RE.fullmatch(secret):
        return TOKEN
    if TICKET_RE.fullmatch(secret):
        return TICKET
    return MALFORMED


# A whole wsops secret standing anywhere inside a value (``?a=1;token=wst_…``,
# ``Basic …, Bearer wst_…``): refused and stripped like one in its proper place.
_SECRET_INSIDE = re.compile(r"wst(?:kt)?_[A-Za-z0-9_-]{43}")


def holds_our_secret(value: str) -> bool:
    """Whether a value was meant as, or carries, a wsops token or ticket."""
    return looks_like_ours(value) or _SECRET_INSIDE.search(value) is not None


def looks_like_ours(secret: str) -> bool:
    """Whether a value was meant as a wsops token or ticket (even a garbled one)."""
    return secret.startswith(TOKEN_PREFIX) or secret.startswith(TICKET_PREFIX)


def _offered_credential(offered: list[Any]) -> tuple[int | None, bool]:
    """``(the index of the entry offered as the credential or None, whether the offer is
    malformed)``.

    The credential is the entry right after the ``wsops`` marker, wherever the pair
    stands, so an application's own subprotocols may come before or after it
    (``["graphql-transport-ws", "wsops", "wst_…"]``). A wsops secret anywhere else
    (without the marker, or a second one) makes the offer malformed: refused, never
    let in as anonymous with the secret in its scope.
    """
    credential = None
    if SUBPROTOCOL in offered:
        after = offered.index(SUBPROTOCOL) + 1
        credential = after if after < len(offered) else None
        if credential is not None and offered[credential] == SUBPROTOCOL:
            return None, True
    stray = [i for i, p in enumerate(offered) if i != credential and isinstance(p, str)
             and holds_our_secret(p)]
    return credential, bool(stray)


def _from_subprotocols(subprotocols: Any) -> Credential | None:
    if not isinstance(subprotocols, (list, tuple)):
        return None
    offered = list(subprotocols)
    index, malformed = _offered_credential(offered)
    if malformed:
        return Credential("subprotocol", MALFORMED)
    if index is None:
        return None
    secret = offered[index]
    if not isinstance(secret, str) or len(secret) > MAX_SECRET_LENGTH:
        return Credential("subprotocol", MALFORMED)
    return Credential("subprotocol", classify(secret), secret)


def application_subprotocols(subprotocols: Any) -> list[Any]:
    """The offer without the credential and without any wsops secret: the marker and the
    application's own subprotocols, in the order offered (what consumers may accept)."""
    offered = list(subprotocols) if isinstance(subprotocols, (list, tuple)) else []
    index, _ = _offered_credential(offered)
    return [p for i, p in enumerate(offered) if i != index
            and not (isinstance(p, str) and holds_our_secret(p))]


def _from_authorization(value: bytes | None) -> Credential | None:
    if value is None:
        return None
    try:
        text = value.decode("ascii").strip()
    except UnicodeDecodeError:
        return Credential("header", MALFORMED)
    scheme, _, secret = text.partition(" ") if " " in text else text.partition("\t")
    if scheme.lower() != "bearer":
        if holds_our_secret(text):  # "Token wst_…", a bare secret, merged headers
            return Credential("header", MALFORMED, text)
        return None  # another scheme (Basic, ...) is not ours to judge
    secret = secret.strip()
    if not secret or len(secret) > MAX_SECRET_LENGTH:
        return Credential("header", MALFORMED)
    return Credential("header", classify(secret), secret)


_QUERY_MARKERS = (b"ticket", b"token", b"wst", b"%")


def _from_query(query_string: bytes) -> Credential | None:
    """``?ticket=`` or ``?token=`` (the latter as transport ``query_token``); names are
    read percent-decoded and case-insensitively, and a wsops secret under any other
    name is refused rather than ignored."""
    lowered = query_string.lower()
    if not any(marker in lowered for marker in _QUERY_MARKERS):
        return None
    try:
        pairs = [(name.lower(), value) for name, value in _query_pairs(query_string) if value]
    except ValueError:
        return Credential("query", MALFORMED)
    params = dict(pairs)
    for name, switch in (("ticket", "query"), ("token", "query_token")):
        secret = params.get(name)
        if secret is not None:
            kind = classify(secret) if len(secret) <= MAX_SECRET_LENGTH else MALFORMED
            if switch == "query" and kind == TOKEN:
                kind = MALFORMED  # a long-lived token passed as a ticket
            return Credential("query", kind, secret, switch)
    for name, value in pairs:
        if holds_our_secret(name) or holds_our_secret(value):
            return Credential("query", MALFORMED, value)
    return None


def _query_pairs(query_string: bytes) -> list[tuple[str, str]]:
    """The query string's pairs, blank values kept; ValueError past 50 fields."""
    return parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, max_num_fields=50)


def _allowed(found: Credential | None, transports: tuple[str, ...]) -> Credential | None:
    """``found`` if its transport is switched on; a DISABLED credential if it is off but
    the value is a wsops one (refuse, never ignore); None if it is someone else's."""
    if found is None:
        return None
    switch = found.switch or found.transport
    if switch in transports or (switch == "query" and "query_token" in transports):
        return found
    if found.transport == "subprotocol" or holds_our_secret(found.secret):
        return Credential(found.transport, DISABLED, switch=found.switch)
    return None


def find_credential(scope: dict[str, Any], transports: tuple[str, ...]) -> Credential | None:
    """The first credential the handshake presents, in transport order.

    Every transport is looked at, switched on or not: a wsops token or ticket sent
    where ``TOKEN_TRANSPORTS`` does not allow it (``?token=`` without
    ``query_token``) is refused (``query_token_disabled``), never silently ignored
    while the secret sits in the scope. Called once per handshake, by
    ``Handshake.parse``.
    """
    found = _allowed(_from_subprotocols(scope.get("subprotocols")), transports)
    if found is None:
        found = _allowed(_from_authorization(header(scope, b"authorization")), transports)
    if found is None:
        found = _allowed(_from_query(scope.get("query_string") or b""), transports)
    return found


def offers_marker(scope: dict[str, Any]) -> bool:
    """Whether the client offered the ``wsops`` subprotocol (then it must be answered)."""
    return SUBPROTOCOL in (scope.get("subprotocols") or ())


def strip_secrets(scope: dict[str, Any]) -> dict[str, Any]:
    """A copy of the scope without credentials in subprotocols, headers or query string.

    Applied to every scope the application sees, whatever authenticated it (or
    nothing did): consumers log scopes, and an ``Authorization`` header or a
    ``?ticket=`` there is a secret at rest in someone's logs.
    """
    scope = dict(scope)
    if scope.get("subprotocols"):
        scope["subprotocols"] = application_subprotocols(scope["subprotocols"])
    scope["headers"] = [
        (name, value)
        for name, value in scope.get("headers") or ()
        if name not in (b"authorization", b"sec-websocket-protocol")
    ]
    query = scope.get("query_string") or b""
    if any(marker in query.lower() for marker in _QUERY_MARKERS):
        try:
            kept = [(k, v) for k, v in _query_pairs(query)
                    if k.lower() not in ("ticket", "token") and not holds_our_secret(v)
                    and not holds_our_secret(k)]
            scope["query_string"] = urlencode(kept).encode("latin-1")
        except (ValueError, UnicodeEncodeError):
            scope["query_string"] = b""
    return scope
