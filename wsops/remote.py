"""Closing live sockets on every worker, through the channel layer.

The same mechanism as ``wsops.push``: one ``wsops.disconnect`` event per worker
holding a matching socket, found in the connection registry, closes on each
the sockets whose identity matches: ``{"token": "wst_ab12cd34"}``,
``{"user": "42"}`` (or ``{"connection": id}``). An IP, a CIDR, another
credential's identifier (``{"token": "jwt_<jti>"}``), a deployment
without the per-user registry (``MAX_CONNECTIONS_PER_USER`` unset) or a Redis
that cannot answer sends the event to the whole ``wsops.workers`` group
instead: every live worker gets it once.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured

from . import codes, signals, store
from .conf import get_settings
from .handshake.transports import TOKEN_PREFIX
from .push import ask_every_worker, ask_workers, token_workers, user_workers


async def _workers_for(match: dict[str, str]) -> set[str] | None:
    """The workers holding matching sockets, or None when the registry cannot say."""
    if len(match) != 1 or not get_settings().MAX_CONNECTIONS_PER_USER:
        return None
    (kind, ident), = match.items()
    if kind == "token" and not ident.startswith(TOKEN_PREFIX):
        return None  # another credential's identifier (jwt_…, drf_…): no wsops token row
    try:
        if kind == "user":
            return await user_workers(ident)
        if kind == "token":
            return await token_workers(ident)
    except store.StoreUnavailable:
        return None
    return None


async def disconnect(match: dict[str, str], *, reason: str, code: int = codes.UNAUTHENTICATED,
                     kind: str = signals.AUTH) -> str | None:
    """Ask the workers to close matching sockets; return an error text, or None on success."""
    event: dict[str, Any] = {"type": "wsops.disconnect", "match": match, "code": code,
                             "reason": reason, "kind": kind}
    try:
        workers = await _workers_for(match)
        if workers is None:
            await ask_every_worker(event)
        elif workers:
            await ask_workers(workers, event)
    except ImproperlyConfigured:
        return "no channel layer is configured (CHANNEL_LAYERS)"
    except Exception as error:  # any layer failure is reported to the operator
        return f"{type(error).__name__}: {error}"
    return None
