"""Single-use tickets: how a browser page authenticates its WebSocket.

A logged-in page POSTs to ``wsops.urls`` ``ticket/`` (CSRF-protected) and gets a
ticket that lives ``TICKET_TTL`` seconds (default 30), is bound to the user and,
when the request carried an ``Origin``, to that origin. The page then opens
``new WebSocket(url, ["wsops", ticket])`` (or ``?ticket=``).

Consumption is atomic: in Redis a ``GETDEL``, so two workers racing on one
ticket admit exactly one. Without Redis the Django cache is used; its
``delete()`` reports whether the key existed, which is atomic on django-redis
and within one process on the local-memory cache.

Records are JSON sealed with an HMAC bound to the ticket's key
(``wsops.sealing``): whoever can write to Redis still cannot mint a ticket.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.core.cache import cache

from . import sealing, store
from .conf import get_settings
from .handshake.transports import TICKET_PREFIX, TICKET_RE
from .tokens import generate_secret, hash_secret


def _key(ticket: str) -> str:
    return store.key("ticket", hash_secret(ticket))


def issue(user: Any, origin: str | None = None) -> tuple[str, int]:
    """Mint a ticket for ``user``; return ``(ticket, seconds it lives)``."""
    ttl = get_settings().TICKET_TTL
    ticket = generate_secret(TICKET_PREFIX)
    payload = sealing.seal_json("ticket", _key(ticket), {"user_id": user.pk, "origin": origin},
                                ttl)
    if store.redis_url():
        store.sync_client().set(_key(ticket), payload, ex=ttl)
    else:
        cache.set(_key(ticket), payload, timeout=ttl)
    return ticket, ttl


def _consume_from_cache(key: str) -> str | None:
    payload = cache.get(key)
    return payload if payload is not None and cache.delete(key) else None


async def consume(ticket: str) -> dict[str, Any] | None:
    """Redeem a ticket once: its ``{"user_id", "origin"}``, or None if unknown/used/expired.

    Raises ``store.StoreUnavailable`` when Redis does not answer.
    """
    if not TICKET_RE.fullmatch(ticket or ""):
        return None
    key = _key(ticket)
    if store.redis_url():
        payload = await store.call(store.async_client().getdel(key), "ticket")
    else:
        payload = await database_sync_to_async(_consume_from_cache)(key)
    return sealing.unseal_json("ticket", key, payload)
