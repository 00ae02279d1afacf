"""``@action``: what an action declares, and ``ActionRefused``, how a message is turned down."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django import forms

from .. import codes, signals
from ..permissions import BasePermission
from ..units import Rate, parse_rate

_LIST_FIELDS = (forms.MultipleChoiceField, forms.ModelMultipleChoiceField)

ErrorList = dict[str, list[dict[str, str]]]


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
