"""Closing live sockets on every worker, through the channel layer.

Each worker listens on the group ``wsops.workers`` (see ``wsops.connections``);
one ``wsops.disconnect`` event closes, on every worker, the sockets whose
identity matches: ``{"token": "wst_ab12cd34"}``, ``{"user": "42"}`` or
``{"ip": "1.2.3.4"}``.
"""

from __future__ import annotations

from channels.layers import get_channel_layer

from . import codes, signals
from .connections import WORKERS_GROUP


async def disconnect(match: dict[str, str], *, reason: str, code: int = codes.UNAUTHENTICATED,
                     kind: str = signals.AUTH) -> str | None:
    """Ask every worker to close matching sockets; return an error text, or None on success."""
    layer = get_channel_layer()
    if layer is None:
        return "no channel layer is configured (CHANNEL_LAYERS)"
    event = {"type": "wsops.disconnect", "match": match, "code": code, "reason": reason,
             "kind": kind}
    try:
        await layer.group_send(WORKERS_GROUP, event)
    except Exception as error:  # any layer failure is reported to the operator
        return f"{type(error).__name__}: {error}"
    return None
