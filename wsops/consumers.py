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

import logging
from typing import Any

from channels.db import aclose_old_connections
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from . import codes, metrics, signals
from .messages.actions import (
    ActionRefused,
    ActionSpec,
    action,
    declared_actions,
    forbidden,
    invalid_input,
    server_error_frame,
    throttled,
)
from .messages.guard import MessageGuard
from .messages.hygiene import DispatchWithoutHop
from .messages.lifecycle import Lifecycle
from .messages.login import FirstFrameLogin
from .messages.parsing import (
    MAX_ECHO_LENGTH,
    JsonCodec,
    decode,
    echoable_action,
    envelope,
    valid_id,
)
from .messages.rates import MessageRates
from .messages.validation import validate
from .permissions import BasePermission, PermissionCache

logger = logging.getLogger("wsops")
# What a frame without an action is charged as: no rate of its own, the user's rate.
PLAIN_FRAME = ActionSpec("receive_json", handler=AsyncJsonWebsocketConsumer.receive_json)


class SecureJsonWebsocketConsumer(DispatchWithoutHop, FirstFrameLogin, Lifecycle, JsonCodec,
                                  AsyncJsonWebsocketConsumer):
    """An ``AsyncJsonWebsocketConsumer`` whose messages are ``{"action": name, ...payload}``.

    Frames without an ``"action"`` key go to ``receive_json()`` when the subclass
    defines it (behind the same guard), else they are ``unknown_action``.
    """

    #: Checked before the socket is accepted: 4401 for anonymous, 4403 otherwise.
    connect_permission: BasePermission | None = None
    #: Binary frames are refused (close 1003) unless this is True; then ``receive_bytes``.
    accept_binary: bool = False
    actions: dict[str, ActionSpec] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.receive is not AsyncJsonWebsocketConsumer.receive:
            raise TypeError(f"{cls.__qualname__} overrides receive(), which "
                            "SecureJsonWebsocketConsumer never calls: frames are dispatched as "
                            "actions; define receive_json() for frames without an action")
        cls.actions = declared_actions(cls)
        cls.uses_default_codec()
        cls._plain_frames = cls.receive_json is not AsyncJsonWebsocketConsumer.receive_json

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = MessageGuard()
        self._rates: MessageRates | None = None  # created on first use (memory per socket)
        self._permissions: PermissionCache | None = None
        self._accepted = self._admitted = self._closing = False

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
            content = decode(text) if self._own_decoder else await self.decode_json(text)
        except Exception:  # ValueError; RecursionError for "[[[[..."; a decode_json's own
            # error, whatever its class: the frame could not be read, and that is the client's
            return await self._refused(None, None, invalid_input(
                codes.INVALID_JSON, "invalid_json", "Malformed JSON."))
        if type(content) is not dict:
            return await self._refused(None, None, invalid_input(
                codes.INVALID_JSON, "not_an_object", "Expected a JSON object."))
        if self._plain_frames and "action" not in content:
            return await self._serve(None, None, self._run_plain(content))
        name, request_id = content.pop("action", None), content.pop("id", None)
        spec = self.actions.get(name) if type(name) is str else None
        echoed = name if spec is not None else echoable_action(name)
        if request_id is not None and not valid_id(request_id):
            return await self._refused(echoed, None, invalid_input(
                codes.INVALID, "invalid_id",
                f"Expected a string of at most {MAX_ECHO_LENGTH} characters or an integer.",
                field="id"))
        if spec is None:
            return await self._refused(echoed, request_id, invalid_input(
                codes.UNKNOWN_ACTION, "unknown_action", "Unknown action.", field="action"))
        await self._serve(echoed, request_id, self._run(spec, content))

    async def _serve(self, name: str | None, request_id: Any, work: Any) -> None:
        """Await the handler and send its reply; its failure is the server's, not the client's."""
        try:
            reply = await work
            metrics.message("ok")
            if isinstance(reply, dict):
                await self.send_json(reply if request_id is None else {**reply, "id": request_id})
        except ActionRefused as refusal:
            await self._refused(name, request_id, refusal)
        except Exception:
            logger.exception("wsops: %s failed on action %r", type(self).__qualname__, name)
            await self.send_json(server_error_frame(name, request_id))

    async def _charge(self, spec: ActionSpec, payload: Any = None) -> None:
        """The per-user rate (and the action's): one Redis trip, or in process."""
        if self._rates is None:
            self._rates = MessageRates(self.scope)
        plan = self._rates.plan(spec, payload)
        if plan.local or plan.limits:
            await self._rates.check(plan)
        self.guard.passed()

    async def _run_plain(self, content: dict[str, Any]) -> Any:
        await self._charge(PLAIN_FRAME)  # RATES["user_message"] counts these frames too
        return await self.receive_json(content)

    async def _run(self, spec: ActionSpec, payload: dict[str, Any]) -> Any:
        await self._charge(spec, payload)
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
        metrics.message("refused", refusal.code)
        await self.send_json(refusal.frame(name, request_id))
        if (close := self.guard.close_after(refusal)) is not None:
            await self._close_refused(*close)


__all__ = ["ActionRefused", "ActionSpec", "SecureJsonWebsocketConsumer", "action"]
