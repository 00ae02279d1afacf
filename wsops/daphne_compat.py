"""Two fixes to daphne's WebSocket closes, applied once from ``WsopsConfig.ready()``.

1. **RFC 6455 close codes.** daphne closes sockets with autobahn's
   ``sendClose()``, which only accepts 1000 and 3000-4999, although RFC 6455
   (section 7.4.1) defines 1003 (unsupported data), 1009 (message too big) and
   1013 (try again later) for servers to send, and autobahn lists them itself in
   ``CLOSE_STATUS_CODES_ALLOWED``. Without this, ``close(1009)`` raises inside
   daphne and the client sees 1006 (abnormal). Those codes go through
   autobahn's ``sendCloseFrame()`` (the same frame ``sendClose()`` would build).
2. **Close reasons.** ASGI's ``websocket.close`` carries an optional ``reason``;
   daphne drops it. With it passed on, a developer sees why wsops refused
   (only sent when ``WSOPS["EXPLAIN_REFUSALS"]`` is on, by default under
   ``DEBUG``): in the close frame of an accepted socket, and in the HTTP status
   line of a handshake refused before accept (``HTTP/1.1 403 origin_not_allowed``).
   Reasons are reduced to printable ASCII without CR/LF and cut to the 123
   bytes a close frame allows, so nothing a client sent can split the response.

3. **Non-ASCII handshakes.** daphne decodes the request path and the
   ``Sec-WebSocket-Protocol`` header as ASCII; a raw UTF-8 byte there raises
   inside daphne, which answers 500 and logs a traceback, and wsops never sees
   the attempt. Such a handshake is now refused with 400 and one
   ``invalid_input`` security event.

Every other close takes daphne's own path. Nothing is patched when daphne is
not installed.
"""

from __future__ import annotations

import re
from typing import Any

from . import signals

MAX_REASON_BYTES = 123  # RFC 6455 5.5: a control frame's payload is at most 125 bytes
_UNSAFE = re.compile(r"[^\x20-\x7e]")


def safe_reason(reason: Any) -> str:
    """A reason that is safe in a close frame and in an HTTP status line."""
    return _UNSAFE.sub("?", str(reason or ""))[:MAX_REASON_BYTES]


def install() -> bool:
    """Patch daphne if it is importable; return whether the patch is in place."""
    try:
        from autobahn.websocket.protocol import WebSocketProtocol as AutobahnProtocol
        from autobahn.websocket.types import ConnectionDeny
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:
        return False
    if getattr(WebSocketProtocol.handle_reply, "wsops_patched", False):
        return True
    original_reply = WebSocketProtocol.handle_reply
    rfc_codes = set(AutobahnProtocol.CLOSE_STATUS_CODES_ALLOWED) - {1000}

    def server_close(self: Any, code: int | None = None, reason: str = "") -> None:
        code = 1000 if code is None else code
        if code in rfc_codes:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode() or None)
        else:
            self.sendClose(code=code, reason=reason or None)

    def handle_reply(self: Any, message: dict[str, Any]) -> None:
        if message.get("type") != "websocket.close":
            return original_reply(self, message)
        reason = safe_reason(message.get("reason"))
        if self.state != self.STATE_CONNECTING:
            return server_close(self, message.get("code"), reason)
        if not reason:
            return original_reply(self, message)
        self.handshake_deferred.errback(ConnectionDeny(code=403, reason=reason))
        del self.handshake_deferred
        self.server.protocol_disconnected(self)
        client = "%s:%s" % tuple(self.client_addr) if self.client_addr else None  # noqa: UP031
        self.server.log_action("websocket", "rejected",
                               {"path": self.request.path, "client": client})

    original_connect = WebSocketProtocol.onConnect

    def on_connect(self: Any, request: Any) -> Any:
        protocols = request.headers.get("sec-websocket-protocol", "")
        if not (request.path.isascii() and protocols.isascii()):
            peer = self.transport.getPeer()
            client = [str(peer.host), peer.port] if hasattr(peer, "host") else None
            signals.report(signals.INVALID_INPUT, {"path": request.path, "client": client},
                           "non_ascii_handshake", close_code=400)
            raise ConnectionDeny(code=400, reason="Bad Request")
        return original_connect(self, request)

    handle_reply.wsops_patched = True  # type: ignore[attr-defined]
    WebSocketProtocol.handle_reply = handle_reply
    WebSocketProtocol.onConnect = on_connect
    WebSocketProtocol.serverClose = server_close
    return True
