"""Reading the connection registry: who is connected, and through which worker.

Every admitted socket of a known user holds an entry in ``wsops:conn:{user:<id>}``
(a sorted set: connection id -> expiry in ms), refreshed by its worker every
``CONNECTION_TTL / 3``; the connection id starts with the worker's id
(``wsops.connections.new_member``). So the registry that enforces
``MAX_CONNECTIONS_PER_USER`` also answers "is this user online" (``wsops.presence``)
and "which workers hold their sockets" (``wsops.push``), with no state of its own.

A batch is one round trip (``live.lua``), on Redis' clock. Without Redis, the
in-process limiter's registry answers the same questions for this process.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from importlib import resources
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .. import store
from ..conf import get_settings
from .engine import LocalLimiter, get_limiter
from .keys import cap_key

LIVE = store.Script(resources.files(__package__).joinpath("live.lua").read_text())
COUNT, MEMBERS = "count", "members"


def user_keys(user_ids: Iterable[Any]) -> list[str]:
    """The registry keys of these users; refuse when no per-user registry is kept."""
    if not get_settings().MAX_CONNECTIONS_PER_USER:
        raise ImproperlyConfigured(
            'wsops keeps the per-user connection registry only with WSOPS["MAX_CONNECTIONS_'
            'PER_USER"] set (any size): presence and push by user read it.')
    return [cap_key("user", user_id) for user_id in user_ids]


def _local(keys: list[str], mode: str) -> list[Any]:
    limiter = get_limiter()
    assert isinstance(limiter, LocalLimiter)
    now = time.monotonic()
    live = [[m for m, expiry in limiter.registry.get(key, {}).items() if expiry > now]
            for key in keys]
    return live if mode == MEMBERS else [len(members) for members in live]


async def alive(keys: list[str], mode: str) -> list[Any]:
    """Per key: the live entries' count (``COUNT``) or connection ids (``MEMBERS``)."""
    if not keys:
        return []
    if not store.redis_url():
        return _local(keys, mode)
    return await store.call(LIVE.run(store.async_client(), keys, [mode]))


def alive_sync(keys: list[str], mode: str) -> list[Any]:
    """``alive`` on the blocking client (views, signals, commands)."""
    if not keys:
        return []
    if not store.redis_url():
        return _local(keys, mode)
    return store.call_sync(LIVE.run_sync, store.sync_client(), keys, [mode])
