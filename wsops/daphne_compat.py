"""Let daphne send the RFC 6455 close codes wsops documents (1003, 1009, 1013).

daphne closes sockets with autobahn's ``sendClose()``, which only accepts 1000
and 3000-4999, although RFC 6455 (section 7.4.1) defines 1003 (unsupported
data), 1009 (message too big) and 1013 (try again later) for servers to send,
and autobahn lists them itself in ``CLOSE_STATUS_CODES_ALLOWED``. Without this,
``close(1009)`` raises inside daphne and the client sees 1006 (abnormal).

``install()`` wraps daphne's ``WebSocketProtocol.serverClose`` so those codes go
through autobahn's ``sendCloseFrame()`` (the same frame ``sendClose()`` would
build); every other code takes daphne's own path. It is applied once, from
``WsopsConfig.ready()``, only when daphne is installed.
"""

from __future__ import annotations

from typing import Any


def install() -> bool:
    """Patch daphne if it is importable; return whether the patch is in place."""
    try:
        from autobahn.websocket.protocol import WebSocketProtocol as AutobahnProtocol
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:
        return False
    if getattr(WebSocketProtocol.serverClose, "wsops_patched", False):
        return True
    original = WebSocketProtocol.serverClose
    rfc_codes = set(AutobahnProtocol.CLOSE_STATUS_CODES_ALLOWED) - {1000}

    def server_close(self: Any, code: int | None = None) -> None:
        if code in rfc_codes:
            self.sendCloseFrame(code=code)
        else:
            original(self, code)

    server_close.wsops_patched = True  # type: ignore[attr-defined]
    WebSocketProtocol.serverClose = server_close
    return True
