"""Server push: send a channel-layer event to a user's live sockets, from any Django code.

    from wsops import push

    push.send_to_user(user.pk, {"type": "chat.message", "text": "Deploy at 18:00"})
    push.send_to_token("wst_ab12cd34", {"type": "session.notice", ...})
    push.send_to_connection(connection_id, {...})  # scope["wsops"].connection_id
    await push.asend_to_user(user.pk, {...})         # async twins: asend_*

The event reaches each matching live socket's consumer handler
(``chat_message`` above) as if it had come from a channel-layer group, in
order per socket. How: the connection registry (``wsops.limits.registry``)
says which workers hold the user's sockets; if any does, one event goes to the
``wsops.workers`` group that every worker's listener is in (``wsops.connections``),
one channel-layer message per worker whatever the number of sockets, and no
group join per socket. The return value is how many workers hold matching
sockets (each got the message); a user with no live socket costs one Redis read
and no message (0).

Refused at the sender, with ``PushRefused`` (a ``ValueError``): a message that
is not a JSON object with a ``type``, a ``type`` of ``websocket.*`` or
``wsops.*`` (a push must not pose as a client frame or a close), and a message
larger than ``MAX_MESSAGE_BYTES`` once encoded as JSON (send an id and let the
client fetch the rest).

Needs a channel layer (``CHANNEL_LAYERS``) and, for users and tokens,
``MAX_CONNECTIONS_PER_USER`` (the registry it reads). Delivery is at most once:
a socket that closes, or a worker that dies, in between loses the push.
"""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.exceptions import ImproperlyConfigured

from .conf import get_settings
from .connections import WORKERS_GROUP, worker_of
from .limits.registry import MEMBERS, alive, alive_sync, user_keys

__all__ = ["PushRefused", "asend_to_connection", "asend_to_token", "asend_to_user",
           "send_to_connection", "send_to_token", "send_to_user"]

Event = dict[str, Any]


class PushRefused(ValueError):
    """A push the sender must not send (shape, type or size)."""


def push_event(match: dict[str, str], message: Any) -> Event:
    """The ``wsops.push`` event for ``message``, or raise ``PushRefused``."""
    kind = message.get("type") if isinstance(message, dict) else None
    if not isinstance(kind, str) or not kind:
        raise PushRefused('a push is a channel-layer event: a dict with a "type" such as '
                          '"chat.message"')
    if kind.startswith(("websocket.", "wsops.")):
        raise PushRefused(f"a push may not have the type {kind!r}: websocket.* and wsops.* "
                          "are the server's own events")
    try:
        size = len(json.dumps(message, separators=(",", ":")).encode())
    except (TypeError, ValueError) as error:
        raise PushRefused(f"a push must be JSON-serializable: {error}") from None
    limit = get_settings().MAX_MESSAGE_BYTES
    if size > limit:
        raise PushRefused(f'push of {size} bytes refused: more than WSOPS["MAX_MESSAGE_BYTES"] '
                          f"({limit} bytes). Push an id and let the client fetch the rest.")
    return {"type": "wsops.push", "match": match, "message": message}


def workers_of(connection_ids: list[str]) -> set[str]:
    return {worker_of(member) for member in connection_ids}


def _layer() -> Any:
    layer = get_channel_layer()
    if layer is None:
        raise ImproperlyConfigured("wsops.push needs a channel layer (CHANNEL_LAYERS)")
    return layer


async def ask_workers(workers: set[str], event: Event) -> int:
    """One ``group_send`` to ``wsops.workers`` (each live worker gets one message) when
    ``workers`` is not empty; return ``len(workers)``, the workers holding targets."""
    if workers:
        await ask_every_worker(event)
    return len(workers)


async def ask_every_worker(event: Event) -> None:
    """One message to the ``wsops.workers`` group: every live worker gets it once."""
    await _layer().group_send(WORKERS_GROUP, event)


def _owner_query(prefix: str) -> Any:
    """The owner id of the token ``prefix`` (a query: ``.first()`` or ``.afirst()``)."""
    from .models import WebSocketToken

    return WebSocketToken.objects.filter(prefix=prefix).values_list("owner_id", flat=True)


def _connection_worker(connection_id: str) -> set[str]:
    worker = worker_of(str(connection_id))
    if not worker:
        raise PushRefused(f"{connection_id!r} is not a wsops connection id "
                          '(scope["wsops"].connection_id)')
    return {worker}


# --- async ---------------------------------------------------------------------------

async def user_workers(user_id: Any) -> set[str]:
    """The workers holding a live socket of ``user_id`` (one Redis round trip)."""
    return workers_of((await alive(user_keys([user_id]), MEMBERS))[0])


async def asend_to_user(user_id: Any, message: Event) -> int:
    """Push ``message`` to every live socket of the user; return the workers asked."""
    event = push_event({"user": str(user_id)}, message)
    workers = await user_workers(user_id)
    return await ask_workers(workers, event) if workers else 0


async def token_workers(prefix: str) -> set[str]:
    """The workers holding a live socket of the token's owner (they filter by token)."""
    # Django's async ORM, not database_sync_to_async: that closes the calling thread's
    # connection, and commands and the admin reach this through async_to_sync.
    owner = await _owner_query(prefix).afirst()
    return await user_workers(owner) if owner is not None else set()


async def asend_to_token(prefix: str, message: Event) -> int:
    """Push ``message`` to the live sockets authenticated with the token ``prefix``."""
    event = push_event({"token": prefix}, message)
    workers = await token_workers(prefix)
    return await ask_workers(workers, event) if workers else 0


async def asend_to_connection(connection_id: str, message: Event) -> int:
    """Push ``message`` to one socket, by its connection id (its worker: 1)."""
    event = push_event({"connection": str(connection_id)}, message)
    return await ask_workers(_connection_worker(connection_id), event)


# --- sync (views, signals, tasks) -------------------------------------------------------

def sync_user_workers(user_id: Any) -> set[str]:
    return workers_of(alive_sync(user_keys([user_id]), MEMBERS)[0])


def send_to_user(user_id: Any, message: Event) -> int:
    """``asend_to_user`` for sync code: the registry read on the blocking client."""
    event = push_event({"user": str(user_id)}, message)
    workers = sync_user_workers(user_id)
    return async_to_sync(ask_workers)(workers, event) if workers else 0


def send_to_token(prefix: str, message: Event) -> int:
    event = push_event({"token": prefix}, message)
    owner = _owner_query(prefix).first()
    workers = sync_user_workers(owner) if owner is not None else set()
    return async_to_sync(ask_workers)(workers, event) if workers else 0


def send_to_connection(connection_id: str, message: Event) -> int:
    event = push_event({"connection": str(connection_id)}, message)
    return async_to_sync(ask_workers)(_connection_worker(connection_id), event)
