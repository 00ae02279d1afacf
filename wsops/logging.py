"""``JsonFormatter``: one JSON object per line, for log pipelines (Loki, ELK, Datadog, ...).

    LOGGING = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "wsops.logging.JsonFormatter"}},
        "handlers": {"security": {"class": "logging.StreamHandler", "formatter": "json"}},
        "loggers": {"wsops.security": {"handlers": ["security"], "level": "WARNING",
                                       "propagate": False}},
    }

A security event (``wsops.signals.report``) becomes its structured fields at the
top level: ``event_id``, ``connection_id``, ``request_id``, ``kind``, ``reason``,
``ip``, ``user_id``, ``token_prefix``, ``path``, ``origin`` and the extras
(``close_code``, ``action``, ``retry_after``, ...), next to ``timestamp`` (ISO
8601, UTC, milliseconds), ``level``, ``logger`` and ``message``. Any other record
(``wsops``' outage lines, your own loggers) gets the same envelope.

Why a line cannot be forged or leak: ``json.dumps`` with ``ensure_ascii`` escapes
every control character, quote, backslash and non-ASCII character (U+2028 too),
so a client-chosen path stays inside its string on one line. Events never hold
secrets (tokens appear as their public prefix); as a second guard, anything
shaped like a wsops token or ticket anywhere in the line (a message, a
traceback) is cut to its public prefix before it is written.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timezone
from typing import Any

from .handshake.transports import TICKET_PREFIX, TICKET_RE, TOKEN_RE

# Attributes every LogRecord has: not copied as extra fields.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "security_event"}


def redact(text: str) -> str:
    """Token secrets cut to their 12-character public prefix, tickets to their marker."""
    if "wst" not in text:
        return text
    text = TOKEN_RE.sub(lambda found: found.group()[:12] + "...", text)
    return TICKET_RE.sub(TICKET_PREFIX + "...", text)


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(key): _safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_safe(item) for item in value]
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    """Format each record as one line of JSON (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        event = getattr(record, "security_event", None)
        if isinstance(event, dict):
            line.update({key: value for key, value in event.items() if key not in line})
        for key, value in vars(record).items():  # extra={...} of other records
            if key not in _RECORD_FIELDS and key not in line:
                line[key] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(_safe(line), ensure_ascii=True, allow_nan=False, default=str,
                          separators=(",", ":"))
