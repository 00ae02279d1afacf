"""Security events: one structured record per rejection.

Every refusal wsops makes (origin, auth, permission, throttle, size, invalid
input, ban, outage) calls ``report()`` exactly once. It logs to the
``wsops.security`` logger and sends the ``security_event`` signal, whose
receivers get ``event`` (a dict) as a keyword argument. Receivers run inline
in the event loop: keep them quick, or hand the event to a queue.

Each event has an ``event_id``, unique and the same in the log line, the JSON
line (``wsops.logging.JsonFormatter``) and the signal, and the ``connection_id``
of its socket (the id the connection registry knows it by; a socket refused
before it was registered gets a fresh one), so one refusal, or every event of
one socket, can be followed through log pipelines. An ``X-Request-ID`` header
becomes the event's ``request_id``: the nginx config of ``wsdeploy`` sets it to
nginx's ``$request_id`` (overwriting whatever the client sent) and writes that
id in its WebSocket access log, which joins nginx's line to daphne's. Without
such a proxy a client can send any value: a correlation hint, not a fact (it
is kept only when it is 1-64 characters of ``[A-Za-z0-9._-]``).

An event never carries a secret or a message body: tokens appear only as their
public prefix. The log line escapes every value (``escape()``), since paths,
origins and reasons can come from the client; the event dict keeps raw values.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from django.dispatch import Signal

from .clientip import client_address

security_event = Signal()
logger = logging.getLogger("wsops.security")

# Kinds of event, one per reason a connection or message is refused.
ORIGIN = "origin"
AUTH = "auth"
PERMISSION = "permission"
THROTTLE = "throttle"
CONNECTION_CAP = "connection_cap"
SIZE = "size"
INVALID_INPUT = "invalid_input"
BANNED = "banned"
UNAVAILABLE = "unavailable"
TAMPERED = "tampered"  # a record in Redis failed its HMAC (someone wrote to Redis)


_CONTROL = re.compile(r'[\x00-\x1f\x7f-\x9f\u2028\u2029\\"]')
MAX_LOGGED_LENGTH = 512


def escape(value: Any) -> str:
    """A client-controlled value made safe for one log line.

    daphne percent-decodes the path, so ``/ws/x%0a2026-... WARNING ...`` would
    otherwise write a forged second line. Control characters (newlines, escape
    sequences for terminals), Unicode line separators, backslashes and double quotes
    become ``\\xNN``/``\\uNNNN``/``\\"`` escapes, and the value is cut to a bounded
    length. Paths and origins are logged in double quotes, so spaces inside them
    cannot fake ``key=value`` fields either. The structured ``event`` keeps the raw
    value.
    """
    text = str(value)
    if len(text) > MAX_LOGGED_LENGTH:
        text = text[:MAX_LOGGED_LENGTH] + "..."
    return _CONTROL.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in '\\"':
        return "\\" + char
    return char.encode("unicode_escape").decode("ascii")


_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def new_event_id() -> str:
    """128 random bits as 32 hex digits (what nginx's ``$request_id`` looks like)."""
    return os.urandom(16).hex()


def request_id(scope: dict[str, Any]) -> str | None:
    """The ``X-Request-ID`` the proxy sent (the id in its access log), if well-formed."""
    from .scope import header

    raw = header(scope, b"x-request-id")
    text = raw.decode("latin-1") if raw is not None else ""
    return text if _REQUEST_ID.fullmatch(text) else None


def report(kind: str, scope: dict[str, Any] | None, reason: str, **extra: Any) -> dict[str, Any]:
    """Log and signal one security event about the connection ``scope``."""
    from . import metrics
    from .connections import new_member  # connections imports this module

    about = scope is not None
    scope = scope or {}
    handshake = scope.get("wsops")  # a wsops.handshake.Handshake, or absent
    user = scope.get("user")
    if handshake is not None:
        ip, origin = handshake.ip, handshake.origin
        token_prefix = handshake.token.prefix if handshake.token else handshake.presented_prefix
    else:  # refused before wsops' middleware parsed it (daphne_compat)
        ip, origin, token_prefix = client_address(scope), None, None
    connection = getattr(handshake, "connection_id", None) or (new_member() if about else None)
    event = {
        "event_id": new_event_id(),
        "connection_id": connection,
        "request_id": request_id(scope),
        "kind": kind,
        "reason": reason,
        "ip": ip,
        "user_id": getattr(user, "pk", None) if getattr(user, "is_authenticated", False) else None,
        "token_prefix": token_prefix,
        "path": scope.get("path"),
        "origin": origin,
        **extra,
    }
    metrics.noted(scope, kind, reason)  # a refusal the metrics see only as a close
    logger.warning(
        'wsops %s refused: %s (ip=%s user=%s token=%s path="%s" origin="%s" event=%s conn=%s)',
        *(escape(event[name]) for name in ("kind", "reason", "ip", "user_id", "token_prefix",
                                           "path", "origin", "event_id", "connection_id")),
        extra={"security_event": event},
    )
    security_event.send(sender=report, event=event)
    return event
