"""Sealed records: plain data stored in Redis, authenticated with an HMAC.

Whoever can write to the wsops Redis (a shared instance, a leaked password, a
compromised neighbour service) must not be able to run code in the workers or
mint a login. So nothing wsops keeps there is a pickle, and every record that
grants something (a cached token verification, a ticket) carries an HMAC keyed
from ``SECRET_KEY`` (Django's ``salted_hmac``, one salt per purpose) over the
record *and the key it is stored under*: a writer can neither forge a record
nor copy a genuine one under another token's or ticket's key.

Each record also seals the end of its validity, so a genuine record stored
again later (a revoked token's cached verification, a redeemed ticket) is
refused once its own lifetime (``TOKEN_CACHE_SECONDS``, ``TICKET_TTL``) is
over: within that lifetime a Redis writer can replay what it saw, which is the
bound the README states.

A record that fails the check is treated as absent (a cache miss, an unknown
ticket) and reported as one ``tampered`` security event.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.utils.crypto import constant_time_compare, salted_hmac

from . import signals

SEPARATOR = "|"


def _mac(purpose: str, bound_to: str, body: str) -> str:
    return salted_hmac(f"wsops.{purpose}", f"{bound_to}\n{body}", algorithm="sha256").hexdigest()


def seal(purpose: str, bound_to: str, body: str, lifetime: float) -> str:
    """``"<mac>|<valid until>|<body>"``: ``body`` authenticated for ``purpose`` under
    ``bound_to`` for ``lifetime`` seconds.

    The end of validity is inside the MAC: Redis' own expiry is not, so without it a
    writer could store an old genuine record again (a revoked token's cached
    verification, a redeemed ticket) and have it accepted for ever.
    """
    signed = f"{int(time.time() + lifetime)}{SEPARATOR}{body}"
    return _mac(purpose, bound_to, signed) + SEPARATOR + signed


def unseal(purpose: str, bound_to: str, raw: str | None) -> str | None:
    """The body of a sealed record, or None when absent, expired, malformed or forged."""
    if raw is None:
        return None
    mac, separator, signed = raw.partition(SEPARATOR)
    valid_until, _, body = signed.partition(SEPARATOR)
    if separator and constant_time_compare(mac, _mac(purpose, bound_to, signed)):
        if valid_until.isdigit() and int(valid_until) >= time.time():
            return body
        reason = f"expired_{purpose}_record"  # genuine, but stored again after its time
    else:
        reason = f"bad_{purpose}_record"
    signals.report(signals.TAMPERED, None, reason)
    return None


def seal_json(purpose: str, bound_to: str, data: dict[str, Any], lifetime: float) -> str:
    return seal(purpose, bound_to, json.dumps(data, separators=(",", ":"), sort_keys=True),
                lifetime)


def unseal_json(purpose: str, bound_to: str, raw: str | None) -> dict[str, Any] | None:
    """The sealed JSON object, or None (absent, expired, forged, or not an object)."""
    body = unseal(purpose, bound_to, raw)
    if body is None:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        signals.report(signals.TAMPERED, None, f"bad_{purpose}_record")
        return None
    return data
