"""Access tokens: issuing, verifying, revoking and rotating.

A secret is ``wst_`` + 43 URL-safe characters (256 bits from ``secrets``). The
database keeps ``sha256(secret)`` and the first 12 characters as the public
prefix. Verification looks rows up by prefix and compares hashes with
``hmac.compare_digest`` so timing reveals nothing about the stored hash.

Handshakes should not need the database: with Redis configured, a verified
token (and its owner) is cached under ``wsops:tok:<hash>`` for
``TOKEN_CACHE_SECONDS``. Revoking, rotating or deactivating the owner deletes
that entry, so every worker refuses the token on its next handshake. Without
Redis nothing is cached (a per-process cache could not be invalidated from
``wstokens revoke``).

``now()`` is the clock everything here uses; tests replace it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import pickle
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.db.models import Q
from django.utils import timezone

from . import store
from .conf import get_settings
from .credentials import TOKEN_PREFIX, TOKEN_RE
from .models import WebSocketToken

LAST_USED_RESOLUTION = 60  # seconds: last_used_at is written at most this often per token


def now() -> datetime:
    return timezone.now()


class TokenInvalid(Exception):
    """The presented token does not authenticate; ``reason`` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class VerifiedToken:
    id: int
    prefix: str
    scopes: list[str]
    expires_at: float | None  # epoch seconds
    user: Any = field(repr=False, default=None)

    def as_scope(self) -> dict[str, Any]:
        """What ``scope["wsops"]["token"]`` carries: never the secret."""
        return {"id": self.id, "prefix": self.prefix, "scopes": list(self.scopes),
                "expires_at": self.expires_at}


def generate_secret(prefix: str = TOKEN_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def public_prefix(secret: str) -> str:
    return secret[:12]


# --- issuing and lifecycle (sync: commands, admin, views) ------------------------------


def issue(owner: Any, *, name: str = "", scopes: list[str] | None = None,
          ttl: int | str | None = "default", rotated_from: WebSocketToken | None = None,
          ) -> tuple[WebSocketToken, str]:
    """Create a token; return the row and the secret (shown once, never stored)."""
    if ttl == "default":
        ttl = get_settings().TOKEN_TTL
    secret = generate_secret()
    issued = now()
    token = WebSocketToken.objects.create(
        owner=owner,
        name=name,
        scopes=sorted(set(scopes or [])),
        prefix=public_prefix(secret),
        hash=hash_secret(secret),
        created_at=issued,
        expires_at=issued + timedelta(seconds=ttl) if ttl else None,
        rotated_from=rotated_from,
    )
    return token, secret


def revoke(tokens: list[WebSocketToken]) -> int:
    """Revoke tokens now and drop them from the shared cache (every worker sees it)."""
    at = now()
    ids = [t.pk for t in tokens if t.revoked_at is None]
    WebSocketToken.objects.filter(pk__in=ids).update(revoked_at=at)
    for token in tokens:
        token.revoked_at = token.revoked_at or at
    forget(token.hash for token in tokens)
    return len(ids)


def rotate(token: WebSocketToken, grace: int) -> tuple[WebSocketToken, str]:
    """Issue the successor; the old token keeps working for ``grace`` seconds."""
    remaining = None
    if token.expires_at is not None:
        remaining = max(1, int((token.expires_at - now()).total_seconds()))
    ttl = get_settings().TOKEN_TTL if remaining is None else remaining
    successor, secret = issue(token.owner, name=token.name, scopes=list(token.scopes),
                              ttl=ttl, rotated_from=token)
    grace_end = now() + timedelta(seconds=grace)
    if token.expires_at is None or token.expires_at > grace_end:
        token.expires_at = grace_end
    token.rotated_at = now()
    token.save(update_fields=["expires_at", "rotated_at"])
    forget([token.hash])
    return successor, secret


def find(reference: str, queryset: Any = None) -> list[WebSocketToken]:
    """Tokens matching a prefix (``wst_ab…``) or an id: one, none, or the ambiguous set."""
    queryset = queryset if queryset is not None else WebSocketToken.objects.all()
    queryset = queryset.select_related("owner")
    if reference.isdigit():
        return list(queryset.filter(pk=int(reference)))
    if not reference.startswith(TOKEN_PREFIX) or len(reference) < len(TOKEN_PREFIX) + 2:
        return []
    if len(reference) > 12:  # a whole secret pasted: match by its hash, never store it
        return list(queryset.filter(hash=hash_secret(reference)))
    return list(queryset.filter(prefix__startswith=reference)[:20])


# --- verification (async: the handshake path) ------------------------------------------


def _cache_key(token_hash: str) -> str:
    return store.key("tok", token_hash)


def forget(hashes: Any) -> None:
    """Delete cached verifications so the next handshake goes to the database."""
    keys = [_cache_key(h) for h in hashes]
    if keys and store.redis_url():
        try:
            store.sync_client().delete(*keys)
        except store.store_errors():
            pass  # cache entries expire by themselves within TOKEN_CACHE_SECONDS


def forget_user(user_id: Any) -> None:
    """Forget every token of a user (deactivated, password changed, deleted)."""
    if store.redis_url():
        forget(WebSocketToken.objects.filter(owner_id=user_id).values_list("hash", flat=True))


def _check(token: VerifiedToken) -> None:
    if token.expires_at is not None and token.expires_at <= now().timestamp():
        raise TokenInvalid("expired")
    if not getattr(token.user, "is_active", False):
        raise TokenInvalid("inactive_user")


def _load_from_db(secret_hash: str, prefix: str) -> VerifiedToken:
    candidates = WebSocketToken.objects.select_related("owner").filter(prefix=prefix)
    for row in candidates:
        if hmac.compare_digest(row.hash, secret_hash):
            if row.revoked_at is not None:
                raise TokenInvalid("revoked")
            return VerifiedToken(
                id=row.pk, prefix=row.prefix, scopes=list(row.scopes or []),
                expires_at=row.expires_at.timestamp() if row.expires_at else None,
                user=row.owner,
            )
    raise TokenInvalid("unknown_token")


def cache_key_for(secret: str) -> str:
    """The shared-cache key of a token secret (read ahead by ConnectThrottle)."""
    return _cache_key(hash_secret(secret))


def _unpack(raw: str | None) -> VerifiedToken | None:
    """Cache entries are ``<user id>|<prefix>|<pickled VerifiedToken>``: the prefix lets
    the handshake script decide the identity's limits without Python."""
    if raw is None:
        return None
    try:
        return pickle.loads(base64.b64decode(raw.split("|", 2)[2]))
    except Exception:
        return None


def cached_identity(raw: str | None) -> str | None:
    """The user id at the head of a cache entry."""
    return raw.split("|", 1)[0] if raw and "|" in raw else None


async def _cached(secret_hash: str) -> VerifiedToken | None:
    try:
        return _unpack(await store.call(store.async_client().get(_cache_key(secret_hash))))
    except store.StoreUnavailable:
        return None  # the database still answers


async def _remember(secret_hash: str, token: VerifiedToken) -> None:
    ttl = get_settings().TOKEN_CACHE_SECONDS
    if token.expires_at is not None:
        ttl = min(ttl, max(1, int(token.expires_at - now().timestamp())))
    packed = base64.b64encode(pickle.dumps(token)).decode()
    payload = f"{token.user.pk}|{token.prefix}|{packed}"
    try:
        await store.call(store.async_client().set(_cache_key(secret_hash), payload, ex=ttl))
    except store.StoreUnavailable:
        pass


NOT_FETCHED = object()


async def verify(secret: str, *, touch: bool = True, cached: Any = NOT_FETCHED) -> VerifiedToken:
    """Verify a token secret on the handshake path; raise TokenInvalid with a reason.

    ``cached`` is the raw cache entry when the caller already read it (None: a miss).
    """
    if not TOKEN_RE.fullmatch(secret or ""):
        raise TokenInvalid("malformed_token")
    secret_hash = hash_secret(secret)
    shared = bool(store.redis_url())
    if not shared:
        token = None
    elif cached is NOT_FETCHED:
        token = await _cached(secret_hash)
    else:
        token = _unpack(cached)
    if token is None:
        token = await database_sync_to_async(_load_from_db)(secret_hash, public_prefix(secret))
        if shared:
            await _remember(secret_hash, token)
    _check(token)
    if touch:
        _touch_soon(token.id)
    return token


def verify_sync(secret: str) -> VerifiedToken:
    """Verify without the cache and without marking the token used (``wstokens verify``)."""
    if not TOKEN_RE.fullmatch(secret or ""):
        raise TokenInvalid("malformed_token")
    token = _load_from_db(hash_secret(secret), public_prefix(secret))
    _check(token)
    return token


async def valid_token_ids(token_ids: set[int]) -> set[int]:
    """Which of these tokens still authenticate (one query for a whole worker's sockets)."""

    def check() -> set[int]:
        return set(
            WebSocketToken.objects.usable(now())
            .filter(pk__in=token_ids, owner__is_active=True)
            .values_list("pk", flat=True)
        )

    return await database_sync_to_async(check)()


# --- last used: at most once a minute per token, off the handshake path ----------------

_last_touch: dict[int, float] = {}


def _touch_soon(token_id: int) -> None:
    moment = time.monotonic()
    if moment - _last_touch.get(token_id, -LAST_USED_RESOLUTION) < LAST_USED_RESOLUTION:
        return
    _last_touch[token_id] = moment
    task = asyncio.get_running_loop().create_task(_touch(token_id))
    _background.add(task)
    task.add_done_callback(_background.discard)


_background: set[asyncio.Task] = set()


async def _touch(token_id: int) -> None:
    at = now()
    # The condition makes it at most once a minute across workers, too.
    threshold = at - timedelta(seconds=LAST_USED_RESOLUTION)

    def update() -> None:
        WebSocketToken.objects.filter(pk=token_id).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=threshold)
        ).update(last_used_at=at)

    try:
        await database_sync_to_async(update)()
    except Exception:  # bookkeeping must never break a connection
        pass


async def load_user(user_id: Any) -> Any:
    """The active user with this id, or None (tickets carry only the id)."""

    def load() -> Any:
        return get_user_model()._default_manager.filter(pk=user_id, is_active=True).first()

    return await database_sync_to_async(load)()
