"""Security events: one structured record per rejection.

Every refusal wsops makes (origin, auth, permission, throttle, size, invalid
input, ban, outage) calls ``report()`` exactly once. It logs to the
``wsops.security`` logger and sends the ``security_event`` signal, whose
receivers get ``event`` (a dict) as a keyword argument. Receivers run inline
in the event loop: keep them quick, or hand the event to a queue.

An event never carries a secret or a message body: tokens appear only as their
public prefix.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

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


def report(kind: str, scope: dict[str, Any] | None, reason: str, **extra: Any) -> dict[str, Any]:
    """Log and signal one security event about the connection ``scope``."""
    from .clientip import client_ip  # local import: clientip reads settings lazily

    state = (scope or {}).get("wsops", {})
    token = state.get("token") or {}
    user = (scope or {}).get("user")
    event = {
        "kind": kind,
        "reason": reason,
        "ip": client_ip(scope) if scope else None,
        "user_id": getattr(user, "pk", None) if getattr(user, "is_authenticated", False) else None,
        "token_prefix": token.get("prefix") or state.get("presented_prefix"),
        "path": (scope or {}).get("path"),
        "origin": state.get("origin"),
        **extra,
    }
    logger.warning(
        "wsops %s refused: %s (ip=%s user=%s token=%s path=%s origin=%s)",
        kind, reason, event["ip"], event["user_id"], event["token_prefix"], event["path"],
        event["origin"], extra={"security_event": event},
    )
    security_event.send(sender=report, event=event)
    return event
