"""The shared cache of verified credentials that are not wsops tokens.

As for wsops tokens (``wsops.tokens``): with Redis configured, a DRF or OAuth2
token's verification (its ``TokenInfo`` and its owner's fields, never the
password), or a JWT owner's fields, is kept under ``wsops:cred:<kind>:<digest>``
for ``TOKEN_CACHE_SECONDS`` (never past the token's expiry) as plain JSON sealed
with an HMAC bound to the key (``wsops.sealing``): a Redis writer can neither run
code nor forge a login. Model signals (each authenticator's ``connect_signals``)
delete an entry when its token or user changes. Without Redis nothing is cached.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model

from .. import sealing, store, tokens
from ..conf import get_settings
from ..handshake.state import NOT_FETCHED, TokenInfo
from .base import Authenticated


def key(kind: str, digest: str) -> str:
    return store.key("cred", kind, digest)


def _purpose(kind: str) -> str:
    return f"{kind}_credential"  # a JWT-user record cannot pass for a DRF token's


def pack(kind: str, digest: str, user: Any, info: TokenInfo | None, lifetime: int) -> str:
    data: dict[str, Any] = {"user": tokens._user_record(user)}
    if info is not None:
        data["token"] = {"id": info.id, "prefix": info.prefix, "scopes": info.scopes,
                         "expires_at": info.expires_at}
    return sealing.seal_json(_purpose(kind), digest, data, lifetime)


def unpack(kind: str, digest: str, raw: str | None) -> Authenticated | None:
    """The cached ``(user, TokenInfo or None)``, or None (absent, forged, unreadable)."""
    data = sealing.unseal_json(_purpose(kind), digest, raw)
    if data is None:
        return None
    try:
        user = tokens._user_from_record(data["user"])
        token = data.get("token")
        info = None if token is None else TokenInfo(
            token["id"], str(token["prefix"]), [str(s) for s in token["scopes"]],
            token["expires_at"], kind)
    except Exception:  # sealed by us, yet unreadable (a model change): just a miss
        return None
    return user, info


def cached_owner(raw: Any) -> str | None:
    """The owner's pk a raw entry names (before its MAC is checked: only to confirm an
    early identity decision, which the verification that follows still checks)."""
    if not isinstance(raw, str):
        return None
    try:
        user = json.loads(raw.split(sealing.SEPARATOR, 2)[2])["user"]
        return str(user[get_user_model()._meta.pk.attname])
    except (IndexError, KeyError, TypeError, ValueError):
        return None


async def read(kind: str, digest: str, fetched: Any = NOT_FETCHED) -> Authenticated | None:
    """The cached verification; ``fetched`` is the raw entry when read ahead."""
    if not store.redis_url():
        return None
    if fetched is NOT_FETCHED:
        try:
            fetched = await store.call(store.async_client().get(key(kind, digest)),
                                       "token_cache")
        except store.StoreUnavailable:
            return None  # the database still answers
    return unpack(kind, digest, fetched)


async def remember(kind: str, digest: str, user: Any, info: TokenInfo | None) -> None:
    if not store.redis_url():
        return
    ttl = get_settings().TOKEN_CACHE_SECONDS
    if info is not None and info.expires_at is not None:
        ttl = min(ttl, max(1, int(info.expires_at - tokens.now().timestamp())))
    try:
        await store.call(store.async_client().set(
            key(kind, digest), pack(kind, digest, user, info, ttl), ex=ttl), "token_cache")
    except store.StoreUnavailable:
        pass


def forget(kind: str, digests: Any) -> None:
    """Drop entries (sync: model signals), so every worker reads the database next."""
    tokens.forget_keys([key(kind, d) for d in digests])
