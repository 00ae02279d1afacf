"""Who is online: read from the connection registry wsops keeps anyway.

    from wsops import presence

    presence.is_online(user.pk)                  # True while a socket of theirs is live
    presence.connection_count(user.pk)           # live sockets, across every worker
    presence.online_users([u.pk for u in team])  # the subset online: one Redis round trip
    await presence.aonline_users(ids)            # each has an async twin: a...

Answers come from the per-user registry behind ``MAX_CONNECTIONS_PER_USER``
(``wsops.limits.registry``), so they are right across workers and cost no
writes of their own. A socket counts from its admission until it closes; a
worker that dies without closing its sockets stops refreshing their entries, so
they stop counting within ``CONNECTION_TTL``. Anonymous sockets are not counted.
Needs ``MAX_CONNECTIONS_PER_USER`` set (``ImproperlyConfigured`` otherwise); on
the embedded defaults (no Redis) the answers are this process's. A Redis
failure raises ``wsops.store.StoreUnavailable``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .limits.registry import COUNT, alive, alive_sync, user_keys

__all__ = ["aconnection_count", "ais_online", "aonline_users", "connection_count",
           "is_online", "online_users"]


def _online(user_ids: list[Any], counts: list[int]) -> set[Any]:
    return {user_id for user_id, count in zip(user_ids, counts, strict=True) if count}


def connection_count(user_id: Any) -> int:
    """How many live sockets the user has, on every worker."""
    return int(alive_sync(user_keys([user_id]), COUNT)[0])


def is_online(user_id: Any) -> bool:
    """Whether the user has at least one live socket."""
    return connection_count(user_id) > 0


def online_users(user_ids: Iterable[Any]) -> set[Any]:
    """The ids among ``user_ids`` with a live socket: one round trip for the batch."""
    ids = list(dict.fromkeys(user_ids))
    return _online(ids, alive_sync(user_keys(ids), COUNT))


async def aconnection_count(user_id: Any) -> int:
    return int((await alive(user_keys([user_id]), COUNT))[0])


async def ais_online(user_id: Any) -> bool:
    return await aconnection_count(user_id) > 0


async def aonline_users(user_ids: Iterable[Any]) -> set[Any]:
    ids = list(dict.fromkeys(user_ids))
    return _online(ids, await alive(user_keys(ids), COUNT))
