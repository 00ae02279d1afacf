"""``Refused``: the one exception a handshake step raises, and the one place that answers it.

Like Django's CSRF middleware (``RejectRequest`` turned into a response in one
method), every step raises ``Refused(code, kind, reason)`` and ``answer()``
reports the security event and turns the handshake down:

- ``REJECT_WITH="handshake"`` (default): before accept, so the server answers
  HTTP 403 (401/403/429 with a JSON body where the server offers ASGI's
  WebSocket denial response and refusals are explained);
- ``REJECT_WITH="close_code"``: accepted, then closed with the ``wsops.codes``
  code;
- Redis down under ``FAIL_MODE="closed"``: always accepted and closed with 1013
  (try again later), which clients treat as retryable.

With ``EXPLAIN_REFUSALS`` (default: under ``DEBUG``) the reason reaches the
client; ``wsops.daphne_compat`` makes daphne put it in the close frame, or in
the 403 status line before accept.
"""

from __future__ import annotations

import json
from typing import Any

from .. import codes, metrics, signals
from ..conf import get_settings
from ..scope import Receive, Scope, Send
from .transports import SUBPROTOCOL, offers_marker

DENIAL_STATUS = {codes.UNAUTHENTICATED: 401, codes.RATE_LIMITED: 429}  # else 403


class Refused(Exception):
    """A handshake (or a first-frame login) turned down; ``extra`` goes into the event."""

    def __init__(self, code: int, kind: str, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.code, self.kind, self.reason, self.extra = code, kind, reason, extra


def unavailable() -> Refused:
    """Redis is down and ``FAIL_MODE`` is ``"closed"``."""
    return Refused(codes.TRY_AGAIN_LATER, signals.UNAVAILABLE, "redis_unavailable")


async def answer(scope: Scope, receive: Receive, send: Send, refused: Refused) -> None:
    """Report one security event, then turn the handshake down as configured."""
    signals.report(refused.kind, scope, refused.reason, close_code=refused.code, **refused.extra)
    metrics.refused(scope, refused.kind, refused.reason, refused.extra.get("transport"))
    message = await receive()
    if message.get("type") != "websocket.connect":
        return  # the client went away first
    conf = get_settings()
    code, reason = refused.code, refused.reason
    explained = {"reason": reason} if conf.explain_refusals else {}
    if code != codes.TRY_AGAIN_LATER and conf.REJECT_WITH == "handshake":
        if explained and "websocket.http.response" in (scope.get("extensions") or {}):
            await _deny_with_body(send, code, reason)
        else:  # before accept: the server answers HTTP 403
            await send({"type": "websocket.close", "code": code, **explained})
        return
    offered = SUBPROTOCOL if offers_marker(scope) else None
    await send({"type": "websocket.accept", "subprotocol": offered})
    await send({"type": "websocket.close", "code": code, **explained})


async def _deny_with_body(send: Send, code: int, reason: str) -> None:
    """ASGI's WebSocket denial response: an HTTP answer with a JSON body."""
    body = json.dumps({"code": code, "reason": reason}).encode()
    await send({"type": "websocket.http.response.start", "status": DENIAL_STATUS.get(code, 403),
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "websocket.http.response.body", "body": body})
