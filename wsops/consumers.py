"""``SecureJsonWebsocketConsumer``: JSON actions with validation, permissions and limits.

    class ChatConsumer(SecureJsonWebsocketConsumer):
        connect_permission = IsAuthenticated()

        @action("send_message", permission=HasPerm("chat.send_message"),
                form=SendMessageForm, rate="10/m")
        async def send_message(self, data):
            ...  # data is the form's cleaned_data
            return {"type": "sent"}  # optional reply

Lifetime checks (token expiry and revocation) and remote closes are done for
every socket of the stack by ``wsops.connections``, not per consumer.

Every frame goes through, in this order (cheapest first): the size cap
(``MAX_MESSAGE_BYTES``, close 1009 before any parsing), the per-connection
throttle (``RATES["message"]``, in process), the per-user throttle
(``RATES["user_message"]``) together with the action's own ``rate=`` (one Redis
round trip for both), JSON parsing, action lookup, the permission (cached per
connection), and form validation. A refusal answers an error frame
``{"type": "error", "code": ..., "errors": {...}}``; repeated abuse closes the
socket (4400 for invalid messages, 4429 for floods). Each refusal is one
security event.

Database hygiene. Channels' ``AsyncConsumer.dispatch`` awaits
``aclose_old_connections()`` before every message: a hop to the one shared
sync thread that halves echo throughput. ORM work through
``database_sync_to_async`` already cleans connections around each call, so
this consumer instead cleans (a) around connect and disconnect, (b) before
actions declared ``uses_db=True`` (handlers using Django's async ORM, which
runs in the shared thread without that cleanup), and (c) at most once every
``DB_HYGIENE_INTERVAL`` seconds per process otherwise, so a connection made
stale by an undeclared ORM call is still closed within that interval.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from channels.consumer import get_handler_name
from channels.db import aclose_old_connections, database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django import forms

from . import codes, signals, store, tokens
from .conf import get_settings
from .credentials import classify
from .permissions import BasePermission
from .ratelimit import ConnectionThrottle, Limit, get_limiter, rate_key
from .units import Rate, parse_rate

DB_HYGIENE_INTERVAL = 10.0  # seconds


@dataclass(frozen=True)
class ActionSpec:
    name: str
    handler: Callable[..., Any]
    permission: BasePermission | None = None
    form: type[forms.Form] | None = None
    rate: Rate | None = None
    uses_db: bool = False


def action(name: str, *, permission: BasePermission | None = None,
           form: type[forms.Form] | None = None, rate: str | None = None,
           uses_db: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Expose a coroutine method as the JSON action ``name``.

    ``form`` validates the payload (the handler receives ``cleaned_data``),
    ``permission`` guards it, ``rate`` (``"10/m"``) throttles it per user across
    workers, and ``uses_db=True`` cleans stale DB connections before it runs.
    """
    parsed_rate = parse_rate(rate) if rate else None

    def register(handler: Callable[..., Any]) -> Callable[..., Any]:
        if not asyncio.iscoroutinefunction(handler):
            raise TypeError(f"@action({name!r}) needs an async def method")
        handler.wsops_action = ActionSpec(name, handler, permission, form, parsed_rate, uses_db)
        return handler

    return register


class _DatabaseHygiene:
    """Close stale DB connections at most once per interval per process."""

    def __init__(self) -> None:
        self.last = float("-inf")  # never 0.0: monotonic time starts near 0 at boot

    async def maybe_clean(self) -> None:
        moment = time.monotonic()
        if moment - self.last >= DB_HYGIENE_INTERVAL:
            self.last = moment
            await aclose_old_connections()


db_hygiene = _DatabaseHygiene()


class ActionRefused(Exception):
    def __init__(self, code: str, kind: str, reason: str, errors: Any = None,
                 retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.code, self.kind, self.reason = code, kind, reason
        self.errors, self.retry_after = errors, retry_after


class SecureJsonWebsocketConsumer(AsyncWebsocketConsumer):
    """An async JSON consumer whose messages are ``{"action": name, ...payload}``."""

    #: Checked before the socket is accepted: 4401 for anonymous, 4403 otherwise.
    connect_permission: BasePermission | None = None
    #: Binary frames are refused (close 1003) unless this is True; then ``receive_bytes``.
    accept_binary: bool = False

    actions: dict[str, ActionSpec] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, ActionSpec] = {}
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                spec = getattr(value, "wsops_action", None)
                if spec is not None:
                    found[spec.name] = spec
        cls.actions = found

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        conf = get_settings()
        message_rate = conf.rate("message")
        self._message_throttle = ConnectionThrottle(message_rate) if message_rate else None
        self._invalid = ConnectionThrottle(
            Rate(conf.INVALID_MESSAGE_LIMIT, conf.INVALID_MESSAGE_WINDOW)
        )
        # Created on first use: most sockets never need them (memory per idle socket).
        self._local_action_throttles: dict[str, ConnectionThrottle] | None = None
        self._throttled_in_row = 0
        self._permission_cache: dict[int, tuple[float, bool]] | None = None
        self._accepted = False
        self._closing = False
        self._authenticated_by_message = False
        self._auth_timer: asyncio.Task | None = None

    # --- dispatch without the per-message thread hop ---------------------------------

    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        if message["type"] == "websocket.receive":
            await db_hygiene.maybe_clean()
        else:
            await aclose_old_connections()
        await handler(message)

    # --- connection lifecycle ----------------------------------------------------------

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        state = self.scope.setdefault("wsops", {})
        user = self.scope.get("user")
        anonymous = user is None or not user.is_authenticated
        if anonymous and state.get("auth_method") is None and \
                "message" in get_settings().TOKEN_TRANSPORTS:
            await self.accept()
            self._auth_timer = asyncio.create_task(self._auth_deadline())
            return
        await self._admit()

    async def _admit(self) -> None:
        if self.connect_permission is not None and \
                not await self.connect_permission.has_permission(self.scope):
            user = self.scope.get("user")
            anonymous = user is None or not user.is_authenticated
            code = codes.UNAUTHENTICATED if anonymous else codes.FORBIDDEN
            kind = signals.AUTH if anonymous else signals.PERMISSION
            signals.report(kind, self.scope, "connect_permission", close_code=code)
            await self._refuse_connect(code)
            return
        for group in self.groups:  # Channels' class-level `groups`, as its consumer does
            await self.channel_layer.group_add(group, self.channel_name)
        await self.connect()

    async def _refuse_connect(self, code: int) -> None:
        if not self._accepted and get_settings().REJECT_WITH == "handshake":
            await self.close()  # before accept: HTTP 403
        else:
            await self._close(code)

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        if self._accepted:
            return  # message-transport sockets are accepted before connect() runs
        self._accepted = True
        await super().accept(subprotocol, headers)

    async def _close(self, code: int) -> None:
        if self._closing:
            return
        self._closing = True
        if not self._accepted:
            await self.accept()
        await self.close(code)

    async def _auth_deadline(self) -> None:
        await asyncio.sleep(get_settings().AUTH_TIMEOUT)
        if not self._authenticated_by_message and not self._closing:
            signals.report(signals.AUTH, self.scope, "auth_timeout",
                           close_code=codes.UNAUTHENTICATED)
            await self._close(codes.UNAUTHENTICATED)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        self._closing = True
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        await super().websocket_disconnect(message)

    # --- frames ------------------------------------------------------------------------

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        if self._closing:
            return
        text = message.get("text")
        if text is None:
            data = message.get("bytes") or b""
            if not self.accept_binary:
                signals.report(signals.INVALID_INPUT, self.scope, "binary_frame",
                               close_code=codes.UNSUPPORTED_DATA)
                return await self._close(codes.UNSUPPORTED_DATA)
            if len(data) > get_settings().MAX_MESSAGE_BYTES:
                return await self._too_big(len(data))
            if await self._throttle_connection():
                await self.receive_bytes(data)
            return
        limit = get_settings().MAX_MESSAGE_BYTES
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
            return await self._too_big(len(text.encode()))
        if not await self._throttle_connection():
            return
        if not self._authenticated_by_message and self._awaiting_message_auth():
            return await self._authenticate_by_message(text)
        await self._handle_text(text)

    async def receive_bytes(self, data: bytes) -> None:
        """Override to handle binary frames (with ``accept_binary = True``)."""

    async def _too_big(self, size: int) -> None:
        signals.report(signals.SIZE, self.scope, "message_too_big", size=size,
                       close_code=codes.MESSAGE_TOO_BIG)
        await self._close(codes.MESSAGE_TOO_BIG)

    async def _throttle_connection(self) -> bool:
        """The per-connection flood check (in process). False when refused."""
        if self._message_throttle is None:
            return True
        retry_after = self._message_throttle.hit()
        if not retry_after:
            self._throttled_in_row = 0
            return True
        await self._refused(None, None, ActionRefused(
            codes.THROTTLED, signals.THROTTLE, "message_rate", retry_after=retry_after))
        return False

    async def _handle_text(self, text: str) -> None:
        request_id = None
        name = None
        try:
            content = json.loads(text)
            if not isinstance(content, dict):
                raise ActionRefused(codes.INVALID_JSON, signals.INVALID_INPUT, "not_an_object",
                                    {"__all__": ["Expected a JSON object."]})
            request_id = content.get("id")
            name = content.get("action")
            spec = self.actions.get(name) if isinstance(name, str) else None
            if spec is None:
                raise ActionRefused(codes.UNKNOWN_ACTION, signals.INVALID_INPUT, "unknown_action",
                                    {"action": ["Unknown action."]})
            await self._check_shared_rates(spec)
            await self._check_permission(spec)
            data = await self._validate(spec, content)
            if spec.uses_db:
                await aclose_old_connections()
            self._throttled_in_row = 0
            reply = await spec.handler(self, data)
        except ActionRefused as refusal:
            await self._refused(name if isinstance(name, str) else None, request_id, refusal)
            return
        except (ValueError, RecursionError):
            await self._refused(None, None, ActionRefused(
                codes.INVALID_JSON, signals.INVALID_INPUT, "invalid_json",
                {"__all__": ["Malformed JSON."]}))
            return
        if isinstance(reply, dict):
            if _is_scalar_id(request_id):
                reply = {**reply, "id": request_id}
            await self.send_json(reply)

    async def _check_shared_rates(self, spec: ActionSpec) -> None:
        """The per-user rate and the action's rate, in one round trip when shared."""
        limits = []
        user = self.scope.get("user")
        user_id = user.pk if user is not None and user.is_authenticated else None
        user_rate = get_settings().rate("user_message")
        if user_rate and user_id is not None:
            limits.append(Limit(rate_key("user_message", "user", user_id), user_rate))
        if spec.rate is not None:
            if user_id is None:  # anonymous: per connection, in process
                if self._local_action_throttles is None:
                    self._local_action_throttles = {}
                throttle = self._local_action_throttles.get(spec.name)
                if throttle is None:
                    throttle = self._local_action_throttles[spec.name] = \
                        ConnectionThrottle(spec.rate)
                if retry_after := throttle.hit():
                    raise ActionRefused(codes.THROTTLED, signals.THROTTLE, "action_rate",
                                        retry_after=retry_after)
            else:
                limits.append(Limit(rate_key("action." + spec.name, "user", user_id), spec.rate))
        if not limits:
            return
        try:
            decision = await get_limiter().admit(limits=tuple(limits))
        except store.StoreUnavailable:
            return  # an outage never closes an open socket: admit the message
        if not decision.allowed:
            reason = "user_message_rate" if ":user_message:" in decision.key else "action_rate"
            raise ActionRefused(codes.THROTTLED, signals.THROTTLE, reason,
                                retry_after=decision.retry_after)

    async def _check_permission(self, spec: ActionSpec) -> None:
        permission = spec.permission
        if permission is None:
            return
        allowed = None
        key = id(permission)
        if self._permission_cache is None:
            self._permission_cache = {}
        if permission.cacheable:
            cached = self._permission_cache.get(key)
            if cached is not None and cached[0] > time.monotonic():
                allowed = cached[1]
        if allowed is None:
            allowed = await permission.has_permission(self.scope)
            if permission.cacheable:
                ttl = get_settings().PERMISSION_CACHE_SECONDS
                self._permission_cache[key] = (time.monotonic() + ttl, allowed)
        if not allowed:
            raise ActionRefused(codes.FORBIDDEN_ACTION, signals.PERMISSION, "permission_denied",
                                {"__all__": ["You do not have permission for this action."]})

    async def _validate(self, spec: ActionSpec, content: dict[str, Any]) -> dict[str, Any]:
        if spec.form is None:
            return {}
        payload = {k: v for k, v in content.items() if k not in ("action", "id")}
        if any(not isinstance(v, (str, int, float, bool, type(None))) for v in payload.values()):
            raise ActionRefused(codes.INVALID, signals.INVALID_INPUT, "invalid_form",
                                {"__all__": ["Field values must be strings, numbers or booleans."]})
        form = spec.form(data=payload)
        valid = (await database_sync_to_async(form.is_valid)() if spec.uses_db
                 else form.is_valid())
        if not valid:
            raise ActionRefused(codes.INVALID, signals.INVALID_INPUT, "invalid_form",
                                form.errors.get_json_data(escape_html=True))
        return form.cleaned_data

    async def _refused(self, name: str | None, request_id: Any, refusal: ActionRefused) -> None:
        signals.report(refusal.kind, self.scope, refusal.reason, action=name)
        frame: dict[str, Any] = {"type": "error", "code": refusal.code,
                                 "errors": refusal.errors or {}}
        if name is not None:
            frame["action"] = name
        if _is_scalar_id(request_id):
            frame["id"] = request_id
        if refusal.retry_after is not None:
            frame["retry_after"] = round(refusal.retry_after, 3)
        await self.send_json(frame)
        if refusal.code == codes.THROTTLED:
            self._throttled_in_row += 1
            if self._throttled_in_row >= get_settings().THROTTLE_CLOSE_AFTER:
                signals.report(signals.THROTTLE, self.scope, "flood", close_code=codes.RATE_LIMITED)
                await self._close(codes.RATE_LIMITED)
        elif refusal.kind == signals.INVALID_INPUT and self._invalid.hit():
            signals.report(signals.INVALID_INPUT, self.scope, "too_many_invalid_messages",
                           close_code=codes.INVALID_MESSAGES)
            await self._close(codes.INVALID_MESSAGES)

    # --- first-message authentication (TOKEN_TRANSPORTS includes "message") ---------

    def _awaiting_message_auth(self) -> bool:
        user = self.scope.get("user")
        return (user is None or not user.is_authenticated) and \
            "message" in get_settings().TOKEN_TRANSPORTS and \
            self.scope.get("wsops", {}).get("auth_method") is None

    async def _authenticate_by_message(self, text: str) -> None:
        from .credentials import Credential
        from .middleware import authenticate

        try:
            content = json.loads(text)
        except ValueError:
            content = None
        secret = content.get("token") if isinstance(content, dict) and \
            content.get("action") == "authenticate" else None
        reason = "expected_authenticate_message"
        if isinstance(secret, str):
            try:
                user, token = await authenticate(Credential("message", classify(secret), secret),
                                                 self.scope)
            except tokens.TokenInvalid as error:
                reason = error.reason
            except store.StoreUnavailable:
                reason = "redis_unavailable"
            else:
                self.scope["user"] = user
                state = self.scope["wsops"]
                state["user_id"] = user.pk
                state["auth_method"] = "message"
                state["token"] = token.as_scope() if token else None
                self._authenticated_by_message = True
                await self.send_json({"type": "authenticated"})
                await self._admit()
                return
        signals.report(signals.AUTH, self.scope, reason, close_code=codes.UNAUTHENTICATED)
        await self._close(codes.UNAUTHENTICATED)

    # --- JSON helpers -----------------------------------------------------------------

    async def send_json(self, content: Any, close: bool = False) -> None:
        await self.send(text_data=json.dumps(content, separators=(",", ":")), close=close)


def _is_scalar_id(value: Any) -> bool:
    return isinstance(value, (str, int)) and not isinstance(value, bool) and len(str(value)) <= 64


__all__ = ["ActionSpec", "SecureJsonWebsocketConsumer", "action"]
