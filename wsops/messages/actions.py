"""``@action``: what an action declares, and ``ActionRefused``, how a message is turned down."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django import forms

from .. import codes, signals
from ..permissions import BasePermission
from ..units import Rate, parse_rate

_LIST_FIELDS = (forms.MultipleChoiceField, forms.ModelMultipleChoiceField)
#: What an action's rate may be keyed by (``key=``), besides a callable ``(scope, data)``.
RATE_KEYS = ("user", "ip", "token", "connection")
_GROUP_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
RateKey = str | Callable[[Any, Any], str]

ErrorList = dict[str, list[dict[str, str]]]


@dataclass(frozen=True)
class ActionSpec:
    name: str
    handler: Callable[..., Any]
    permission: BasePermission | None = None
    form: type[forms.Form] | None = None
    rate: Rate | None = None
    uses_db: bool = False
    #: What the rate counts per: one of ``RATE_KEYS`` or a callable ``(scope, data) -> str``.
    rate_key: RateKey = "user"
    #: The bucket the rate counts in, shared by the actions naming the same group.
    group: str = ""
    #: Form fields that take any JSON value as sent (``forms.JSONField``).
    json_fields: frozenset[str] = field(default_factory=frozenset)
    #: Form fields that take a list of scalars (the multiple-choice fields).
    list_fields: frozenset[str] = field(default_factory=frozenset)


def action(name: str, *, permission: BasePermission | None = None,
           form: type[forms.Form] | None = None, rate: str | None = None,
           key: RateKey = "user", group: str | None = None,
           uses_db: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Expose a coroutine method as the JSON action ``name``.

    ``form`` validates the payload (the handler receives ``cleaned_data``;
    without a form it receives the payload), ``permission`` guards it, ``rate``
    (``"10/m"``) throttles it across workers per ``key`` (``"user"``, ``"ip"``,
    ``"token"``, ``"connection"`` or a callable ``(scope, data) -> str``), in the
    bucket ``group`` (default: the action's name; actions naming one group share
    it, as django-ratelimit's ``group``), and ``uses_db=True`` cleans stale DB
    connections before it runs (and validates the form in a thread, for forms
    that query the database).
    """
    parsed_rate = parse_rate(rate) if rate else None
    if not callable(key) and key not in RATE_KEYS:
        raise ValueError(f"@action({name!r}, key={key!r}): expected one of "
                         f"{', '.join(RATE_KEYS)} or a callable (scope, data) -> str")
    group = name if group is None else group
    if not _GROUP_RE.fullmatch(group):
        raise ValueError(f"@action({name!r}, group={group!r}): expected 1-64 letters, digits, "
                         "'_', '.' or '-' (it is part of a Redis key)")
    declared = form.base_fields if form is not None else {}
    json_fields = frozenset(n for n, f in declared.items() if isinstance(f, forms.JSONField))
    list_fields = frozenset(n for n, f in declared.items() if isinstance(f, _LIST_FIELDS))

    def register(handler: Callable[..., Any]) -> Callable[..., Any]:
        if not asyncio.iscoroutinefunction(handler):
            raise TypeError(f"@action({name!r}) needs an async def method")
        handler.wsops_action = ActionSpec(name, handler, permission, form, parsed_rate, uses_db,
                                          key, group, json_fields, list_fields)
        return handler

    return register


def declared_actions(cls: type) -> dict[str, ActionSpec]:
    """The actions of a consumer class and its bases (a subclass's win)."""
    found: dict[str, ActionSpec] = {}
    for klass in reversed(cls.__mro__):
        for value in vars(klass).values():
            spec = getattr(value, "wsops_action", None)
            if spec is not None:
                found[spec.name] = spec
    return found


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

    def frame(self, action_name: str | None, request_id: Any) -> dict[str, Any]:
        """The error frame (one shape whatever refused the message)."""
        frame: dict[str, Any] = {"type": "error", "code": self.code, "errors": self.errors,
                                 "action": action_name, "id": request_id}
        if self.retry_after is not None:
            frame["retry_after"] = round(self.retry_after, 3)
        return frame


def throttled(reason: str, retry_after: float) -> ActionRefused:
    return ActionRefused(codes.THROTTLED, signals.THROTTLE, reason,
                         f"Rate limit exceeded: retry in {retry_after:.3f} s.",
                         retry_after=retry_after)


def invalid_input(code: str, reason: str, message: str, **details: Any) -> ActionRefused:
    return ActionRefused(code, signals.INVALID_INPUT, reason, message, **details)


def forbidden() -> ActionRefused:
    return ActionRefused(codes.FORBIDDEN_ACTION, signals.PERMISSION, "permission_denied",
                         "You do not have permission for this action.")


def server_error_frame(action_name: str | None, request_id: Any) -> dict[str, Any]:
    """What a client gets when a handler fails: the code, never the internals."""
    return ActionRefused(codes.SERVER_ERROR, "", codes.SERVER_ERROR,
                         "The server failed to handle this message.").frame(action_name,
                                                                            request_id)
