"""Closing live sockets on every worker, through the channel layer.

The same path as ``wsops.push``: each worker listens on the group ``wsops.workers``
(see ``wsops.connections``); one ``wsops.disconnect`` event closes, on every
worker, the sockets whose identity matches: ``{"token": "wst_ab12cd34"}``,
``{"user": "42"}``, ``{"ip": "1.2.3.4"}`` (or a network) or ``{"connection": id}``.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from . import codes, signals
from .push import ask_every_worker


async def disconnect(match: dict[str, str], *, reason: str, code: int = codes.UNAUTHENTICATED,
                     kind: str = signals.AUTH) -> str | None:
    """Ask every worker to close matching sockets; return an error text, or None on success."""
    event = {"type": "wsops.disconnect", "match": match, "code": code, "reason": reason,
             "kind": kind}
    try:
        await ask_every_worker(event)
    except ImproperlyConfigured:
        return "no channel layer is configured (CHANNEL_LAYERS)"
    except Exception as error:  # any layer failure is reported to the operator
        return f"{type(error).__name__}: {error}"
    return None
