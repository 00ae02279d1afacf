"""Database hygiene without a thread hop per message.

Channels' ``AsyncConsumer.dispatch`` awaits ``aclose_old_connections()`` before
every message: a hop to the one shared sync thread that halves echo throughput.
ORM work through ``database_sync_to_async`` already cleans connections around
each call, so ``SecureJsonWebsocketConsumer`` instead cleans (a) around connect
and disconnect, (b) before actions declared ``uses_db=True`` (handlers using
Django's async ORM, which runs in the shared thread without that cleanup), and
(c) at most once every ``DB_HYGIENE_INTERVAL`` seconds per process otherwise,
so a connection made stale by an undeclared ORM call is still closed within
that interval. ``wsops.push`` events count as frames here: a push fanned out to
1,000 sockets would otherwise queue 1,000 hops on that one thread (the bench's
push fan-out took 4x longer with them).
"""

from __future__ import annotations

import time
from functools import partialmethod
from typing import Any

from channels.consumer import get_handler_name
from channels.db import aclose_old_connections

DB_HYGIENE_INTERVAL = 10.0  # seconds


class DatabaseHygiene:
    """Close stale DB connections at most once per interval per process."""

    def __init__(self) -> None:
        self.last = float("-inf")  # never 0.0: monotonic time starts near 0 at boot

    async def maybe_clean(self) -> None:
        moment = time.monotonic()
        if moment - self.last >= DB_HYGIENE_INTERVAL:
            self.last = moment
            await aclose_old_connections()


db_hygiene = DatabaseHygiene()


class DispatchWithoutHop:
    """Channels' ``dispatch`` with the per-message cleanup replaced by ``db_hygiene``."""

    async def dispatch(self, message: dict[str, Any], *, pushed: bool = False) -> None:
        """Channels' dispatch; frames and ``wsops.push`` events (``pushed``) skip the hop."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        if pushed or message["type"] == "websocket.receive":  # a push fans out like frames
            await db_hygiene.maybe_clean()
        else:
            await aclose_old_connections()
        await handler(message)

    #: What ``wsops.push`` delivers to (``wsops.connections.attach``).
    dispatch_push = partialmethod(dispatch, pushed=True)
