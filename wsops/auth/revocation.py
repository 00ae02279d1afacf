"""Closing the live sockets of a credential revoked elsewhere (model signals).

Signals run in whichever process changes the row (an API worker, the admin, a
shell), so the news travels like ``wstokens revoke --disconnect``: one
``wsops.disconnect`` event to every worker through the channel layer
(``wsops.remote``), sent once the transaction commits. Where it cannot be sent
(no channel layer, Redis down) the sockets close at the next re-check, within
``TOKEN_CACHE_SECONDS``.
"""

from __future__ import annotations

import logging
import time

from asgiref.sync import async_to_sync
from django.db import transaction

from .. import remote, store
from ..limits import operators

logger = logging.getLogger("wsops")


def close_live(identifier: str, reason: str) -> None:
    """Close every worker's sockets authenticated by ``identifier``, after commit."""

    def send() -> None:
        error = async_to_sync(remote.disconnect)({"token": identifier}, reason=reason)
        if error is not None:
            logger.warning("wsops: could not close the live sockets of %s at once (%s); "
                           "they close within TOKEN_CACHE_SECONDS", identifier, error)

    transaction.on_commit(send)


def ban_until(identifier: str, until: float, reason: str) -> None:
    """Refuse ``identifier`` on every worker until ``until`` (epoch seconds), in the ban
    check every handshake already makes (no extra round trip)."""
    seconds = int(until - time.time()) + 1
    if seconds <= 0 or not store.redis_url():
        return
    try:
        operators.ban(store.sync_client(), operators.Identity("token", identifier), seconds,
                      reason)
    except store.store_errors() as error:
        logger.warning("wsops: could not record that %s is %s (%s)", identifier, reason, error)


def unban(identifier: str) -> None:
    if not store.redis_url():
        return
    try:
        operators.unban(store.sync_client(), operators.Identity("token", identifier))
    except store.store_errors():
        pass
