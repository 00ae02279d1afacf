"""Connect and disconnect, as Channels does them, with wsops' admission in front.

``connect_permission`` is checked before the socket is accepted (4401 for anonymous,
4403 otherwise; before accept, an HTTP 403 under ``REJECT_WITH="handshake"``); then
Channels' class-level ``groups`` are joined (``InvalidChannelLayerError`` without a
layer that has groups, as in Channels) and ``connect()`` runs, where
``AcceptConnection`` and ``DenyConnection`` mean what they mean in Channels.
``disconnect()`` runs only if ``connect()`` did.

Close reasons: when refusals are explained (``DEBUG``, or
``WSOPS["EXPLAIN_REFUSALS"] = True``) the closes carry the security event's reason,
so a developer sees why; otherwise no reason is sent, which tells a prober nothing.
"""

from __future__ import annotations

from typing import Any

from channels.exceptions import (
    AcceptConnection,
    DenyConnection,
    InvalidChannelLayerError,
    StopConsumer,
)

from .. import codes, signals
from ..conf import get_settings
from ..scope import signed_in_user

CLOSE_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes


class Lifecycle:
    """The consumer's connect/accept/close/disconnect (a mixin of the secure consumer)."""

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        if not await self._await_login():
            await self._admit()

    async def _admit(self) -> None:
        """``connect_permission``, then Channels' class-level ``groups``, then ``connect()``."""
        if self.connect_permission is not None and \
                not await self.connect_permission.has_permission(self.scope):
            anonymous = signed_in_user(self.scope) is None
            code = codes.UNAUTHENTICATED if anonymous else codes.FORBIDDEN
            kind = signals.AUTH if anonymous else signals.PERMISSION
            if not self._accepted and get_settings().REJECT_WITH == "handshake":
                signals.report(kind, self.scope, "connect_permission", close_code=code)
                self._closing = True  # before accept: HTTP 403
                return await self.close(reason=explained_reason("connect_permission"))
            return await self._close_refused(kind, "connect_permission", code)
        self._admitted = True
        try:
            for group in self.groups:
                await self.channel_layer.group_add(group, self.channel_name)
        except AttributeError:
            raise InvalidChannelLayerError(
                "BACKEND is unconfigured or doesn't support groups") from None
        try:
            await self.connect()
        except AcceptConnection:
            await self.accept()
        except DenyConnection:
            await self.close()

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        if not self._accepted:  # message-transport sockets are accepted before connect()
            self._accepted = True
            await super().accept(subprotocol, headers)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """Run ``disconnect()`` only if ``connect()`` ran: a refused socket has nothing to undo."""
        self._closing = True
        self._cancel_login_deadline()
        if self._admitted:
            await super().websocket_disconnect(message)  # raises StopConsumer
        raise StopConsumer()

    async def _close_refused(self, kind: str, reason: str, code: int, **extra: Any) -> None:
        """One security event, then close once (the reason only when refusals are explained)."""
        if self._closing:
            return
        self._closing = True
        signals.report(kind, self.scope, reason, close_code=code, **extra)
        if not self._accepted:
            await self.accept()
        await self.close(code, explained_reason(reason))


def explained_reason(reason: str) -> str | None:
    """The close reason to send: ``reason`` when refusals are explained, else None.

    Cut to what a close frame holds (never inside a UTF-8 sequence), whatever the
    server: a ban reason is operator text of any length.
    """
    if not get_settings().explain_refusals:
        return None
    return reason.encode()[:CLOSE_REASON_BYTES].decode(errors="ignore")
