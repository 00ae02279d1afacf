"""Form validation of an action's payload: nested values only reach fields that take them."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.forms.fields import JSONString

from .. import codes, signals
from .actions import ActionRefused, ActionSpec, ErrorList

# The exact types json.loads gives scalars (type() checks are cheaper than isinstance).
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _wrong_types(spec: ActionSpec, payload: dict[str, Any]) -> ErrorList | None:
    wrong: ErrorList | None = None
    for name, value in payload.items():
        if type(value) in _SCALARS or name in spec.json_fields:
            continue
        if name in spec.list_fields:
            if type(value) is list and all(type(item) in _SCALARS for item in value):
                continue
            message = "Expected a list of strings, numbers or booleans."
        else:
            message = "Expected a string, number, boolean or null."
        if wrong is None:
            wrong = {}
        wrong[name] = [{"message": message, "code": "invalid_type"}]
    return wrong


async def validate(spec: ActionSpec, payload: dict[str, Any]) -> dict[str, Any]:
    """The form's ``cleaned_data``, or raise ``ActionRefused`` with the field errors."""
    wrong = _wrong_types(spec, payload)
    if wrong is not None:
        raise ActionRefused(codes.INVALID, signals.INVALID_INPUT, "invalid_form", errors=wrong)
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
