"""``SecureJsonWebsocketConsumer``: JSON actions with validation, permissions and limits.

    class ChatConsumer(SecureJsonWebsocketConsumer):
        connect_permission = IsAuthenticated()

        @action("send_message", permission=HasPerm("chat.send_message"),
                form=SendMessageForm, rate="10/m")
        async def send_message(self, data):
            ...  # data is the form's cleaned_data
            return {"type": "sent"}  # optional reply

Each frame goes through: guard (size cap, per-connection rate) -> parse ->
action lookup -> rates (per user, per action) -> permission -> validation ->
the handler. The frame contract (envelope, ids, error frames, first-frame
login, close reasons) is documented in ``wsops.messages``, one module per step.
Token expiry, revocation and remote closes are handled for every socket of the
stack by ``wsops.connections``, not per consumer.
"""

from __future__ import annotations

import json
from typing import Any

from channels.db import aclose_old_connections
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from . import codes, signals
from .conf import get_settings
from .connections import attach
from .messages.actions import (
    ActionRefused,
    ActionSpec,
    action,
    declared_actions,
    forbidden,
    invalid_input,
    throttled,
)
from .messages.guard import MessageGuard
from .messages.hygiene import DispatchWithoutHop
from .messages.login import FirstFrameLogin
from .messages.parsing import MAX_ECHO_LENGTH, decode, echoable_action, envelope, valid_id
from .messages.rates import MessageRates
from .messages.validation import validate
from .permissions import BasePermission, PermissionCache
from .scope import signed_in_user

CLOSE_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes
_json_separators = (",", ":")


class SecureJsonWebsocketConsumer(DispatchWithoutHop, FirstFrameLogin, AsyncWebsocketConsumer):
    """An async JSON consumer whose messages are ``{"action": name, ...payload}``."""

    #: Checked before the socket is accepted: 4401 for anonymous, 4403 otherwise.
    connect_permission: BasePermission | None = None
    #: Binary frames are refused (close 1003) unless this is True; then ``receive_bytes``.
    accept_binary: bool = False
    actions: dict[str, ActionSpec] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.actions = declared_actions(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = MessageGuard()
        self._rates: MessageRates | None = None  # created on first use (memory per socket)
        self._permissions: PermissionCache | None = None
        self._accepted = self._admitted = self._closing = False

    # --- lifecycle ---------------------------------------------------------------------

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
                return await self.close(reason=_explained("connect_permission"))
            return await self._close_refused(kind, "connect_permission", code)
        self._admitted = True
        for group in self.groups:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.connect()
        attach(self.scope, self.dispatch_push)  # wsops.push delivers to its handlers

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
        await self.close(code, _explained(reason))

    # --- frames ------------------------------------------------------------------------

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        if self._closing:
            return
        text = message.get("text")
        data = message.get("bytes") or b""
        if text is None and self._awaiting_login:
            return await self._login(None)
        if text is None and not self.accept_binary:
            return await self._close_refused(signals.INVALID_INPUT, "binary_frame",
                                             codes.UNSUPPORTED_DATA)
        if (size := self.guard.oversized(text, data)) is not None:
            return await self._close_refused(signals.SIZE, "message_too_big",
                                             codes.MESSAGE_TOO_BIG, size=size)
        if self._awaiting_login:
            return await self._login(text)
        if retry_after := self.guard.over_message_rate():
            readable = envelope(text) if text is not None else (None, None)
            return await self._refused(*readable, throttled("message_rate", retry_after))
        if text is None:
            self.guard.passed()
            return await self.receive_bytes(data)
        await self._handle_text(text)

    async def receive_bytes(self, data: bytes) -> None:
        """Override to handle binary frames (with ``accept_binary = True``)."""

    async def _handle_text(self, text: str) -> None:
        """Parse -> look up -> rates -> permission -> validate -> dispatch."""
        try:
            content = decode(text)
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
            return await self._refused(None, None, invalid_input(
                codes.INVALID_JSON, "invalid_json", "Malformed JSON."))
        if type(content) is not dict:
            return await self._refused(None, None, invalid_input(
                codes.INVALID_JSON, "not_an_object", "Expected a JSON object."))
        name, request_id = content.pop("action", None), content.pop("id", None)
        spec = self.actions.get(name) if type(name) is str else None
        echoed = name if spec is not None else echoable_action(name)
        try:
            if request_id is not None and not valid_id(request_id):
                request_id = None
                raise invalid_input(codes.INVALID, "invalid_id", "Expected a string of at most "
                                    f"{MAX_ECHO_LENGTH} characters or an integer.", field="id")
            if spec is None:
                raise invalid_input(codes.UNKNOWN_ACTION, "unknown_action", "Unknown action.",
                                    field="action")
            reply = await self._run(spec, content)
        except ActionRefused as refusal:
            return await self._refused(echoed, request_id, refusal)
        if isinstance(reply, dict):
            await self.send_json(reply if request_id is None else {**reply, "id": request_id})

    async def _run(self, spec: ActionSpec, payload: dict[str, Any]) -> Any:
        if self._rates is None:
            self._rates = MessageRates(self.scope)
        await self._rates.check(spec, payload)
        self.guard.passed()
        permission = spec.permission
        if permission is not None and not permission.uses_data:
            await self._authorise(permission, None)
        data = payload if spec.form is None else await validate(spec, payload)
        if permission is not None and permission.uses_data:  # get_object(scope, data)
            await self._authorise(permission, data)
        if spec.uses_db:
            await aclose_old_connections()
        return await spec.handler(self, data)

    async def _authorise(self, permission: BasePermission, data: Any) -> None:
        self._permissions = self._permissions or PermissionCache()
        if not await self._permissions.allows(permission, self.scope, data):
            raise forbidden()

    async def _refused(self, name: str | None, request_id: Any, refusal: ActionRefused) -> None:
        """One event and the error frame; a close when the client has earned one."""
        signals.report(refusal.kind, self.scope, refusal.reason, action=name)
        await self.send_json(refusal.frame(name, request_id))
        if (close := self.guard.close_after(refusal)) is not None:
            await self._close_refused(*close)

    async def send_json(self, content: Any, close: bool = False) -> None:
        await self.send(text_data=json.dumps(content, separators=_json_separators),
                        close=close)


def _explained(reason: str) -> str | None:
    """The close reason to send: ``reason`` when refusals are explained, else None.

    Cut to what a close frame holds (never inside a UTF-8 sequence), whatever the
    server: a ban reason is operator text of any length.
    """
    if not get_settings().explain_refusals:
        return None
    return reason.encode()[:CLOSE_REASON_BYTES].decode(errors="ignore")


__all__ = ["ActionRefused", "ActionSpec", "SecureJsonWebsocketConsumer", "action"]
