"""Finding the credential a WebSocket handshake presents, without trusting it.

Transports, in the order they are tried (each can be switched off in
``WSOPS["TOKEN_TRANSPORTS"]``):

1. ``subprotocol``: ``Sec-WebSocket-Protocol: wsops, <secret>``, the only header
   a browser's ``new WebSocket(url, protocols)`` can set. The server must answer
   ``wsops`` or the browser drops the socket.
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
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

SUBPROTOCOL = "wsops"
TOKEN_PREFIX = "wst_"
TICKET_PREFIX = "wstkt_"
_SECRET_BODY = r"[A-Za-z0-9_-]{43}"
TOKEN_RE = re.compile(re.escape(TOKEN_PREFIX) + _SECRET_BODY)
TICKET_RE = re.compile(re.escape(TICKET_PREFIX) + _SECRET_BODY)
MAX_SECRET_LENGTH = 256

TOKEN, TICKET, MALFORMED = "token", "ticket", "malformed"


@dataclass(frozen=True)
class Credential:
    transport: str  # subprotocol | header | query
    kind: str  # token | ticket | malformed
    secret: str = ""

    @property
    def prefix(self) -> str | None:
        """The public prefix, safe to log; None for tickets and garbage."""
        return self.secret[:12] if self.kind == TOKEN else None


def classify(secret: str) -> str:
    if TOKEN_RE.fullmatch(secret):
        return TOKEN
    if TICKET_RE.fullmatch(secret):
        return TICKET
    return MALFORMED


def _from_subprotocols(subprotocols: Any) -> Credential | None:
    if not isinstance(subprotocols, (list, tuple)) or SUBPROTOCOL not in subprotocols:
        return None
    others = [p for p in subprotocols if p != SUBPROTOCOL]
    if not others:
        return None
    if len(others) != 1 or not isinstance(others[0], str) or len(others[0]) > MAX_SECRET_LENGTH:
        return Credential("subprotocol", MALFORMED)
    return Credential("subprotocol", classify(others[0]), others[0])


def _from_authorization(value: bytes | None) -> Credential | None:
    if value is None:
        return None
    try:
        text = value.decode("ascii").strip()
    except UnicodeDecodeError:
        return Credential("header", MALFORMED)
    scheme, _, secret = text.partition(" ")
    if scheme.lower() != "bearer":
        return None  # another scheme (Basic, ...) is not ours to judge
    secret = secret.strip()
    if not secret or len(secret) > MAX_SECRET_LENGTH:
        return Credential("header", MALFORMED)
    return Credential("header", classify(secret), secret)


def _from_query(query_string: bytes, allow_tokens: bool) -> Credential | None:
    if b"ticket=" not in query_string and b"token=" not in query_string:
        return None
    try:
        params = dict(parse_qsl(query_string.decode("latin-1"), max_num_fields=50))
    except ValueError:
        return Credential("query", MALFORMED)
    secret = params.get("ticket") or (params.get("token") if allow_tokens else None)
    if secret is None:
        return None
    kind = classify(secret) if len(secret) <= MAX_SECRET_LENGTH else MALFORMED
    if kind == TOKEN and not allow_tokens:
        kind = MALFORMED  # a long-lived token in a URL: refuse rather than ignore
    return Credential("query", kind, secret)


def find_credential(scope: dict[str, Any], transports: tuple[str, ...]) -> Credential | None:
    """The first credential the handshake presents, in transport order (cached in scope)."""
    state = scope.setdefault("wsops", {})
    if "credential" in state:
        return state["credential"]
    found = None
    if "subprotocol" in transports:
        found = _from_subprotocols(scope.get("subprotocols"))
    if found is None and "header" in transports:
        for name, value in scope.get("headers") or ():
            if name == b"authorization":
                found = _from_authorization(value)
                break
    if found is None and ("query" in transports or "query_token" in transports):
        found = _from_query(scope.get("query_string") or b"", "query_token" in transports)
    state["credential"] = found
    if found is not None and found.prefix:
        state["presented_prefix"] = found.prefix
    return found


def strip_secrets(scope: dict[str, Any]) -> dict[str, Any]:
    """A copy of the scope without the secret in subprotocols, headers or query string."""
    scope = dict(scope)
    if SUBPROTOCOL in (scope.get("subprotocols") or ()):
        scope["subprotocols"] = [SUBPROTOCOL]
    scope["headers"] = [
        (name, value)
        for name, value in scope.get("headers") or ()
        if name not in (b"authorization", b"sec-websocket-protocol")
    ]
    query = scope.get("query_string") or b""
    if b"ticket=" in query or b"token=" in query:
        try:
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, max_num_fields=50)
            kept = [(k, v) for k, v in pairs if k not in ("ticket", "token")]
            scope["query_string"] = urlencode(kept).encode("latin-1")
        except (ValueError, UnicodeEncodeError):
            scope["query_string"] = b""
    return scope
