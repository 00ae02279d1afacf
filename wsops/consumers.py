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

Messages. A frame is a JSON object ``{"action": name, "id": ..., ...payload}``.
The payload is the object without ``action`` and ``id``. An action declared with
``form=`` gets the form's ``cleaned_data``; one without gets the payload itself,
unvalidated (so validate it in the handler, or give the action a form).

``id`` is optional. It is echoed on the reply and on every error frame of that
message, so a client can match answers to requests. It must be a string of at
most 64 characters or an integer of at most 64 digits (``null`` counts as no
id). Anything else (objects, lists, floats, booleans, longer values) is refused
with an ``invalid`` error on the ``id`` field rather than dropped: a client
whose ids are silently lost would wait forever for an answer it cannot match.

Nested values (lists, objects) reach a form only through fields that take them:
``forms.JSONField`` receives the value as sent (a JSON string stays a string;
Django's JSONField still treats ``[]``, ``{}`` and ``""`` as empty), and
``MultipleChoiceField``/``TypedMultipleChoiceField``/``ModelMultipleChoiceField``
receive a list of scalars. A nested value under any other key is refused with
the field error code ``invalid_type``: Django's other fields would ``str()`` it
(``{"a": 1}`` would become the text ``"{'a': 1}"``). Fields are those declared
on the form class (``base_fields``).

Error frames have one shape, whatever refused the message::

    {"type": "error", "code": "invalid",
     "errors": {"text": [{"message": "This field is required.", "code": "required"}]},
     "action": "send_message", "id": 7}

``code`` is one of ``wsops.codes.ERROR_CODES``. ``errors`` maps a field name
(``"__all__"`` when no field is to blame, ``"action"``, ``"id"``) to a list of
``{"message", "code"}``: Django's validation codes for form fields, otherwise the
refusal's reason (``invalid_json``, ``not_an_object``, ``unknown_action``,
``invalid_id``, ``invalid_type``, ``permission_denied``, ``message_rate``,
``action_rate``, ``user_message_rate``). ``action`` and ``id`` are always present:
the message's values when they could be read (an action name of at most 64
characters, or any declared action; a valid id), else null. ``rate_limited``
frames add ``retry_after`` (seconds).

Every frame goes through, in this order (cheapest first): the size cap
(``MAX_MESSAGE_BYTES``, close 1009 before any parsing), the per-connection
throttle (``RATES["message"]``, in process), JSON parsing, action lookup, the
per-user throttle (``RATES["user_message"]``) together with the action's own
``rate=`` (one Redis round trip for both), the permission (cached per
connection), and form validation. A refusal answers an error frame; repeated
abuse closes the socket (4400 after ``INVALID_MESSAGE_LIMIT`` invalid messages in
a window, 4429 after ``THROTTLE_CLOSE_AFTER`` rate-limited messages in a row).
Each refusal is one security event.

Shared rates during a Redis outage. Under ``FAIL_MODE="closed"`` the per-user and
per-action rates fall back to an in-process limit per connection with the same
rate: limits that vanished whenever Redis is slow would be no limits. A user
with several sockets may then send the rate once per socket (at most
``MAX_CONNECTIONS_PER_USER`` times it). Under ``"open"`` such messages are
admitted, as ``"open"`` admits new sockets. An outage never closes an open socket.

First-frame authentication (``TOKEN_TRANSPORTS`` includes ``"message"``). An
anonymous socket is accepted and must send ``{"action": "authenticate", "token":
...}`` within ``AUTH_TIMEOUT``. Until then nothing else is handled: any other
frame, text or binary, closes 4401 with one security event. A login then goes
through the identity admission the handshake transports get
(``wsops.middleware.admit_identity``: user and token bans, 4403; the per-user
connect rate and connection caps, 4429; Redis down under fail-closed, 1013)
before ``{"type": "authenticated"}``, ``connect_permission`` and ``connect()``.

Close reasons. When ``get_settings().explain_refusals`` is true (``DEBUG``, or
``WSOPS["EXPLAIN_REFUSALS"] = True``) the consumer's closes carry the security
event's reason as the WebSocket close reason, so a developer sees why a socket
was closed; otherwise no reason is sent, which tells a prober nothing.

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
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from channels.consumer import get_handler_name
from channels.db import aclose_old_connections, database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django import forms
from django.forms.fields import JSONString

from . import codes, metrics, middleware, signals, store, tokens
from .conf import get_settings
from .credentials import TOKEN, Credential, classify
from .permissions import BasePermission
from .ratelimit import ConnectionThrottle, Limit, gcra, get_limiter, rate_key
from .units import Rate, parse_rate

DB_HYGIENE_INTERVAL = 10.0  # seconds
MAX_ECHO_LENGTH = 64  # longest action name or id echoed back (characters or digits)
CLOSE_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes
_ID_BOUND = 10 ** MAX_ECHO_LENGTH  # integer ids have at most MAX_ECHO_LENGTH digits

# The exact types json.loads gives scalars (type() checks are cheaper than isinstance).
_SCALARS = frozenset({str, int, float, bool, type(None)})
_LIST_FIELDS = (forms.MultipleChoiceField, forms.ModelMultipleChoiceField)

ErrorList = dict[str, list[dict[str, str]]]


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _finite(number: str) -> float:
    value = float(number)
    if value in (math.inf, -math.inf):
        raise ValueError(f"{number} overflows a float")
    return value


# Python's json accepts NaN and Infinity, and turns 1e400 into inf: none is a JSON
# number (RFC 8259), a reply would pass them on to clients that cannot parse them,
# and int(inf) raises in a handler. decode() costs what json.loads() does (that is
# the same call on a default decoder); only floats take the extra check.
_decoder = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)


@dataclass(frozen=True)
class ActionSpec:
    name: str
    handler: Callable[..., Any]
    permission: BasePermission | None = None
    form: type[forms.Form] | None = None
    rate: Rate | None = None
    uses_db: bool = False
    #: Form fields that take any JSON value as sent (``forms.JSONField``).
    json_fields: frozenset[str] = field(default_factory=frozenset)
    #: Form fields that take a list of scalars (the multiple-choice fields).
    list_fields: frozenset[str] = field(default_factory=frozenset)


def action(name: str, *, permission: BasePermission | None = None,
           form: type[forms.Form] | None = None, rate: str | None = None,
           uses_db: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Expose a coroutine method as the JSON action ``name``.

    ``form`` validates the payload (the handler receives ``cleaned_data``;
    without a form it receives the payload), ``permission`` guards it, ``rate``
    (``"10/m"``) throttles it per user across workers, and ``uses_db=True``
    cleans stale DB connections before it runs (and validates the form in a
    thread, for forms that query the database).
    """
    parsed_rate = parse_rate(rate) if rate else None
    declared = form.base_fields if form is not None else {}
    json_fields = frozenset(n for n, f in declared.items() if isinstance(f, forms.JSONField))
    list_fields = frozenset(n for n, f in declared.items() if isinstance(f, _LIST_FIELDS))

    def register(handler: Callable[..., Any]) -> Callable[..., Any]:
        if not asyncio.iscoroutinefunction(handler):
            raise TypeError(f"@action({name!r}) needs an async def method")
        handler.wsops_action = ActionSpec(name, handler, permission, form, parsed_rate, uses_db,
                                          json_fields, list_fields)
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
    """A message refused with an error frame (handlers may raise it too).

    ``errors`` defaults to ``{field: [{"message": message, "code": reason}]}``.
    """

    def __init__(self, code: str, kind: str, reason: str, message: str = "", *,
                 field: str = "__all__", errors: ErrorList | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.code, self.kind, self.reason = code, kind, reason
        self.errors = errors if errors is not None else \
            {field: [{"message": message, "code": reason}]}
        self.retry_after = retry_after


def _throttled(reason: str, retry_after: float) -> ActionRefused:
    return ActionRefused(codes.THROTTLED, signals.THROTTLE, reason,
                         f"Rate limit exceeded: retry in {retry_after:.3f} s.",
                         retry_after=retry_after)


@dataclass(frozen=True, slots=True)
class _Rated:
    """One rate a message is checked against."""

    local: str  # the per-connection throttle's name: "user_message" or "action.<name>"
    rate: Rate
    reason: str  # of a refusal
    key: str | None = None  # the shared Redis key; None: per connection only (anonymous)


@dataclass(frozen=True, slots=True)
class _RatePlan:
    """The rates of one action on one connection, worked out on its first message."""

    local: tuple[_Rated, ...]  # always in process
    shared: tuple[_Rated, ...]  # in Redis; in process when Redis fails under fail-closed
    limits: tuple[Limit, ...]  # ``shared`` as the limiter takes them


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
        self._rate_plans: dict[str, _RatePlan] | None = None
        self._local_throttles: dict[str, ConnectionThrottle] | None = None
        self._permission_cache: dict[int, tuple[float, bool]] | None = None
        self._throttled_in_row = 0
        self._accepted = False
        self._admitted = False  # connect() ran: disconnect() will too
        self._closing = False
        self._awaiting_auth = False  # first-frame transport: nothing else is handled yet
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
            self._awaiting_auth = True
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
            if not self._accepted and get_settings().REJECT_WITH == "handshake":
                # Before accept: HTTP 403 (wsops' daphne patch puts the reason in its status line).
                self._closing = True
                await self.close(reason=_explained("connect_permission"))
            else:
                await self._close(code, "connect_permission")
            return
        self._admitted = True
        for group in self.groups:  # Channels' class-level `groups`, as its consumer does
            await self.channel_layer.group_add(group, self.channel_name)
        await self.connect()

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        if self._accepted:
            return  # message-transport sockets are accepted before connect() runs
        self._accepted = True
        await super().accept(subprotocol, headers)

    async def _close(self, code: int, reason: str) -> None:
        """Close once; the reason goes to the client only when refusals are explained."""
        if self._closing:
            return
        self._closing = True
        if not self._accepted:
            await self.accept()
        await self.close(code, _explained(reason))

    async def _close_refused(self, kind: str, reason: str, code: int, **extra: Any) -> None:
        """One security event, then the close (nothing if the socket is closing already)."""
        if self._closing:
            return
        signals.report(kind, self.scope, reason, close_code=code, **extra)
        await self._close(code, reason)

    async def _auth_deadline(self) -> None:
        await asyncio.sleep(get_settings().AUTH_TIMEOUT)
        if self._awaiting_auth:
            await self._close_refused(signals.AUTH, "auth_timeout", codes.UNAUTHENTICATED)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """Leave groups and run ``disconnect()`` only if ``connect()`` ran: a socket
        refused before it (first frame, connect_permission) has nothing to undo."""
        self._closing = True
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        if self._admitted:
            await super().websocket_disconnect(message)  # raises StopConsumer
        raise StopConsumer()

    # --- frames ------------------------------------------------------------------------

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        if self._closing:
            return
        text = message.get("text")
        if text is None:
            return await self._receive_binary(message.get("bytes") or b"")
        limit = get_settings().MAX_MESSAGE_BYTES
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
            return await self._too_big(len(text.encode()))
        if self._awaiting_auth:
            return await self._authenticate_by_message(text)
        if self._message_throttle is not None:
            retry_after = self._message_throttle.hit()
            if retry_after:
                return await self._refused(*_envelope(text),
                                           _throttled("message_rate", retry_after))
        await self._handle_text(text)

    async def _receive_binary(self, data: bytes) -> None:
        if self._awaiting_auth:
            return await self._close_refused(signals.AUTH, "expected_authenticate_message",
                                             codes.UNAUTHENTICATED, transport="message")
        if not self.accept_binary:
            return await self._close_refused(signals.INVALID_INPUT, "binary_frame",
                                             codes.UNSUPPORTED_DATA)
        if len(data) > get_settings().MAX_MESSAGE_BYTES:
            return await self._too_big(len(data))
        if self._message_throttle is not None:
            retry_after = self._message_throttle.hit()
            if retry_after:
                return await self._refused(None, None, _throttled("message_rate", retry_after))
        self._throttled_in_row = 0
        await self.receive_bytes(data)

    async def receive_bytes(self, data: bytes) -> None:
        """Override to handle binary frames (with ``accept_binary = True``)."""

    async def _too_big(self, size: int) -> None:
        await self._close_refused(signals.SIZE, "message_too_big", codes.MESSAGE_TOO_BIG,
                                  size=size)

    async def _handle_text(self, text: str) -> None:
        try:
            content = _decoder.decode(text)
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
            return await self._refused(None, None, ActionRefused(
                codes.INVALID_JSON, signals.INVALID_INPUT, "invalid_json", "Malformed JSON."))
        if type(content) is not dict:
            return await self._refused(None, None, ActionRefused(
                codes.INVALID_JSON, signals.INVALID_INPUT, "not_an_object",
                "Expected a JSON object."))
        name = content.pop("action", None)
        request_id = content.pop("id", None)  # what remains is the payload
        spec = self.actions.get(name) if type(name) is str else None
        echoed = name if spec is not None else _echoable_action(name)
        if request_id is not None and not _valid_id(request_id):
            return await self._refused(echoed, None, ActionRefused(
                codes.INVALID, signals.INVALID_INPUT, "invalid_id",
                f"Expected a string of at most {MAX_ECHO_LENGTH} characters or an integer.",
                field="id"))
        if spec is None:
            return await self._refused(echoed, request_id, ActionRefused(
                codes.UNKNOWN_ACTION, signals.INVALID_INPUT, "unknown_action",
                "Unknown action.", field="action"))
        try:
            await self._check_rates(spec)
            self._throttled_in_row = 0
            if spec.permission is not None:
                await self._check_permission(spec.permission)
            data = content if spec.form is None else await self._validate(spec, content)
            if spec.uses_db:
                await aclose_old_connections()
            reply = await spec.handler(self, data)
        except ActionRefused as refusal:
            return await self._refused(echoed, request_id, refusal)
        metrics.message("ok")
        if isinstance(reply, dict):
            if request_id is not None:
                reply = {**reply, "id": request_id}
            await self.send_json(reply)

    async def _check_rates(self, spec: ActionSpec) -> None:
        """The per-user rate and the action's rate: one Redis round trip for both, or in
        process (anonymous sockets; Redis failing under fail-closed)."""
        plans = self._rate_plans
        if plans is None:
            plans = self._rate_plans = {}
        plan = plans.get(spec.name)
        if plan is None:
            plan = plans[spec.name] = self._plan_rates(spec)
        if plan.local:
            self._hit_locally(plan.local)
        if not plan.limits:
            return
        try:
            decision = await get_limiter().admit(limits=plan.limits)
        except store.StoreUnavailable:
            if get_settings().FAIL_MODE == "closed":
                self._hit_locally(plan.shared)
            return  # an outage never closes an open socket
        if not decision.allowed:
            reason = next((r.reason for r in plan.shared if r.key == decision.key),
                          "action_rate")
            raise _throttled(reason, decision.retry_after)

    def _plan_rates(self, spec: ActionSpec) -> _RatePlan:
        user = self.scope.get("user")
        user_id = user.pk if user is not None and user.is_authenticated else None
        rated = []
        user_rate = get_settings().rate("user_message")
        if user_rate and user_id is not None:
            rated.append(_Rated("user_message", user_rate, "user_message_rate",
                                rate_key("user_message", "user", user_id)))
        if spec.rate is not None:
            scope = "action." + spec.name
            key = rate_key(scope, "user", user_id) if user_id is not None else None
            rated.append(_Rated(scope, spec.rate, "action_rate", key))
        local = tuple(r for r in rated if r.key is None)
        shared = tuple(r for r in rated if r.key is not None)
        return _RatePlan(local, shared, tuple(Limit(r.key, r.rate) for r in shared))

    def _hit_locally(self, rates: tuple[_Rated, ...]) -> None:
        """Count one message against per-connection throttles: all of them or none, so
        a refused message is not charged (as in the shared script)."""
        throttles = self._local_throttles
        if throttles is None:
            throttles = self._local_throttles = {}
        now = time.monotonic()
        moves = []
        for rated in rates:
            throttle = throttles.get(rated.local)
            if throttle is None:
                throttle = throttles[rated.local] = ConnectionThrottle(rated.rate)
            new_tat, retry_after = gcra(throttle.tat, now, throttle.rate)
            if retry_after:
                raise _throttled(rated.reason, retry_after)
            moves.append((throttle, new_tat))
        for throttle, new_tat in moves:
            throttle.tat = new_tat

    async def _check_permission(self, permission: BasePermission) -> None:
        if self._permission_cache is None:
            self._permission_cache = {}
        if not await permission.allows(self.scope, self._permission_cache):
            raise ActionRefused(codes.FORBIDDEN_ACTION, signals.PERMISSION, "permission_denied",
                                "You do not have permission for this action.")

    async def _validate(self, spec: ActionSpec, payload: dict[str, Any]) -> dict[str, Any]:
        """The form's ``cleaned_data``; nested values only reach fields that take them."""
        wrong_type: ErrorList | None = None
        for name, value in payload.items():
            if type(value) in _SCALARS or name in spec.json_fields:
                continue
            if name in spec.list_fields:
                if type(value) is list and all(type(item) in _SCALARS for item in value):
                    continue
                message = "Expected a list of strings, numbers or booleans."
            else:
                message = "Expected a string, number, boolean or null."
            if wrong_type is None:
                wrong_type = {}
            wrong_type[name] = [{"message": message, "code": "invalid_type"}]
        if wrong_type is not None:
            raise ActionRefused(codes.INVALID, signals.INVALID_INPUT, "invalid_form",
                                errors=wrong_type)
        for name in spec.json_fields:
            if type(payload.get(name)) is str:  # already decoded: JSONField must not decode it
                payload[name] = JSONString(payload[name])
        form = spec.form(data=payload)
        valid = (await database_sync_to_async(form.is_valid)() if spec.uses_db
                 else form.is_valid())
        if not valid:
            raise ActionRefused(codes.INVALID, signals.INVALID_INPUT, "invalid_form",
                                errors=form.errors.get_json_data(escape_html=True))
        return form.cleaned_data

    async def _refused(self, name: str | None, request_id: Any, refusal: ActionRefused) -> None:
        signals.report(refusal.kind, self.scope, refusal.reason, action=name)
        metrics.message("refused", refusal.code)
        frame: dict[str, Any] = {"type": "error", "code": refusal.code,
                                 "errors": refusal.errors, "action": name, "id": request_id}
        if refusal.retry_after is not None:
            frame["retry_after"] = round(refusal.retry_after, 3)
        await self.send_json(frame)
        if refusal.code == codes.THROTTLED:
            self._throttled_in_row += 1
            if self._throttled_in_row >= get_settings().THROTTLE_CLOSE_AFTER:
                await self._close_refused(signals.THROTTLE, "flood", codes.RATE_LIMITED)
        elif refusal.kind == signals.INVALID_INPUT and self._invalid.hit():
            await self._close_refused(signals.INVALID_INPUT, "too_many_invalid_messages",
                                      codes.INVALID_MESSAGES)

    # --- first-frame authentication (TOKEN_TRANSPORTS includes "message") ---------

    async def _authenticate_by_message(self, text: str) -> None:
        """Log in with the first frame, admit the identity, then run ``_admit()``.

        The frame arrived in time, so the deadline stops here, and no later frame
        is taken for an authenticate frame: frames sent meanwhile wait (Channels
        handles one message at a time) and are handled once this one is done.
        """
        self._awaiting_auth = False
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        secret = _authenticate_token(text)
        if secret is None:
            return await self._close_refused(signals.AUTH, "expected_authenticate_message",
                                             codes.UNAUTHENTICATED, transport="message")
        credential = Credential("message", classify(secret), secret)
        state = self.scope["wsops"]
        if credential.kind == TOKEN:
            state["presented_prefix"] = credential.prefix
        try:
            user, token = await middleware.authenticate(credential, self.scope)
        except tokens.TokenInvalid as error:
            return await self._close_refused(signals.AUTH, error.reason, codes.UNAUTHENTICATED,
                                             transport="message")
        except store.StoreUnavailable:  # as on the handshake transports
            return await self._close_refused(signals.UNAVAILABLE, "redis_unavailable",
                                             codes.TRY_AGAIN_LATER)
        self.scope["user"] = user
        state["user_id"] = user.pk
        state["auth_method"] = "message"
        state["token"] = token.as_scope() if token else None
        refusal = await middleware.admit_identity(self.scope)
        if refusal is not None:
            code, kind, reason, extra = refusal
            return await self._close_refused(kind, reason, code, **extra)
        if self._closing:
            return  # the client left, or a remote close came, while we waited
        await self.send_json({"type": "authenticated"})
        await self._admit()

    # --- JSON helpers -----------------------------------------------------------------

    async def send_json(self, content: Any, close: bool = False) -> None:
        await self.send(text_data=json.dumps(content, separators=(",", ":")), close=close)


def _valid_id(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return len(value) <= MAX_ECHO_LENGTH
    return kind is int and -_ID_BOUND < value < _ID_BOUND


def _echoable_action(value: Any) -> str | None:
    return value if type(value) is str and len(value) <= MAX_ECHO_LENGTH else None


def _envelope(text: str) -> tuple[str | None, Any]:
    """``(action, id)`` to echo on a frame refused before it was parsed, when readable.

    Only refused frames pay this parse, and a flood closes after
    ``THROTTLE_CLOSE_AFTER`` of them in a row.
    """
    try:
        content = _decoder.decode(text)
    except (ValueError, RecursionError):
        return None, None
    if type(content) is not dict:
        return None, None
    request_id = content.get("id")
    return _echoable_action(content.get("action")), \
        request_id if _valid_id(request_id) else None


def _authenticate_token(text: str) -> str | None:
    """The token of ``{"action": "authenticate", "token": "..."}``, else None."""
    try:
        content = _decoder.decode(text)
    except (ValueError, RecursionError):
        return None
    if type(content) is not dict or content.get("action") != "authenticate":
        return None
    secret = content.get("token")
    return secret if type(secret) is str else None


def _explained(reason: str) -> str | None:
    """The close reason to send: ``reason`` when refusals are explained, else None.

    Cut to what a close frame holds (never inside a UTF-8 sequence), whatever the
    server: a ban reason is operator text of any length.
    """
    if not get_settings().explain_refusals:
        return None
    return reason.encode()[:CLOSE_REASON_BYTES].decode(errors="ignore")


__all__ = ["ActionRefused", "ActionSpec", "SecureJsonWebsocketConsumer", "action"]
