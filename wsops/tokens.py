"""Access tokens: issuing, verifying, revoking and rotating.

A secret is ``wst_`` + 43 URL-safe characters (256 bits from ``secrets``). The
database keeps ``sha256(secret)`` and the first 12 characters as the public
prefix. Verification looks rows up by prefix and compares hashes with
``hmac.compare_digest`` so timing reveals nothing about the stored hash.

Handshakes should not need the database: with Redis configured, a verified
token (and its owner's fields, never the password) is cached under
``wsops:tok:<hash>`` for ``TOKEN_CACHE_SECONDS`` as plain JSON sealed with an
HMAC (``wsops.sealing``), so a Redis writer can neither run code nor forge a
verification. Every ORM path that changes a token or its owner (save, delete,
cascades, ``wstokens``, the admin) deletes that entry through model signals
(``wsops.apps``), so every worker refuses the token on its next handshake.
Without Redis nothing is cached (a per-process cache could not be invalidated
from ``wstokens revoke``).

``now()`` is the clock everything here uses; tests replace it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.core.serializers.json import DjangoJSONEncoder
from django.db import router, transaction
from django.db.models import Q
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from . import metrics, sealing, store
from .conf import get_settings
from .handshake.state import NOT_FETCHED, TokenInfo
from .handshake.transports import TOKEN_PREFIX, TOKEN_RE
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

    def info(self) -> TokenInfo:
        """What ``scope["wsops"].token`` carries: never the secret."""
        return TokenInfo(self.id, self.prefix, list(self.scopes), self.expires_at)


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


def issued_lifetime(token: WebSocketToken) -> int | None:
    """Seconds the token was issued for (None: never). Rotation cuts a token's expiry
    to its grace end, so a token in grace takes its first successor's lifetime."""
    if token.rotated_at is not None:
        successor = token.successors.order_by("created_at").first()
        if successor is not None:
            return issued_lifetime(successor)
    if token.expires_at is None:
        return None
    return max(1, int((token.expires_at - token.created_at).total_seconds()))


def rotate(token: WebSocketToken, grace: int, ttl: int | str | None = "renew",
           ) -> tuple[WebSocketToken, str]:
    """Issue the successor with a fresh lifetime (``ttl`` seconds, None: never; default:
    as long as ``token`` was issued for); the old token works ``grace`` more seconds
    (0: stops now), never longer than it would have."""
    lifetime = issued_lifetime(token) if ttl == "renew" else ttl
    successor, secret = issue(token.owner, name=token.name, scopes=list(token.scopes),
                              ttl=lifetime, rotated_from=token)
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
    matches = queryset.filter(prefix__startswith=reference)[:200]
    # LIKE ignores case on SQLite and MySQL; base64url prefixes are case-sensitive.
    return [t for t in matches if t.prefix.startswith(reference)][:20]


# --- verification (async: the handshake path) ------------------------------------------


def cache_key(token_hash: str) -> str:
    """The shared-cache key of a token's verification (read ahead by ConnectThrottle)."""
    return store.key("tok", token_hash)


def forget(hashes: Any) -> None:
    """Delete cached verifications so the next handshake goes to the database.

    Inside a transaction, again once it commits: until then a handshake still
    reads the old committed row and would cache it afresh.
    """
    keys = [cache_key(h) for h in hashes]
    if not keys or not store.redis_url():
        return

    def delete() -> None:
        try:
            store.sync_client().delete(*keys)
        except store.store_errors():
            pass  # cache entries expire by themselves within TOKEN_CACHE_SECONDS

    delete()
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(delete)


def forget_user(user_id: Any) -> None:
    """Forget every token of a user (deactivated, demoted, password changed, deleted)."""
    if store.redis_url():
        forget(WebSocketToken.objects.filter(owner_id=user_id).values_list("hash", flat=True))


def connect_cache_invalidation() -> None:
    """Drop cached verifications on every ORM path that changes a token or its owner.

    ``post_save`` and ``post_delete`` cover ``save()`` (the admin's change form moving
    ``expires_at`` into the past), ``delete()``, ``QuerySet.delete()``, ``wstokens
    purge`` and cascades from a deleted user: with a receiver connected, Django's
    collector sends the signal for every row instead of fast-deleting. What sends no
    signal (``QuerySet.update()``, raw SQL) is seen within ``TOKEN_CACHE_SECONDS``.
    """
    def token_changed(sender: Any, instance: WebSocketToken, **kwargs: Any) -> None:
        forget([instance.hash])

    def owner_changed(sender: Any, instance: Any, update_fields: Any = None,
                      **kwargs: Any) -> None:
        if update_fields is not None and set(update_fields) <= {"last_login"}:
            return  # every login saves last_login: nothing a token check reads
        forget_user(instance.pk)

    # weak=False: these closures have no other reference and would be collected.
    for signal in (post_save, post_delete):
        signal.connect(token_changed, sender=WebSocketToken, weak=False,
                       dispatch_uid=f"wsops.token_changed.{id(signal)}")
    post_save.connect(owner_changed, sender=get_user_model(), weak=False,
                      dispatch_uid="wsops.owner_changed")


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


# Cache entries are ``<mac>|<valid until>|<user id>|<prefix>|<JSON>`` (``wsops.sealing``),
# readable by an operator with redis-cli; the MAC, bound to the token's hash, covers all of it.
_SEALED_AS = "token"
# Never cached: a password hash has no business in Redis. Left deferred, so a
# ``save()`` of the cached user object cannot overwrite it.
_UNCACHED_USER_FIELDS = {"password"}


def _user_record(user: Any) -> dict[str, Any]:
    """The user's concrete fields as JSON-safe values (no password)."""
    fields = {f.attname: f.value_from_object(user) for f in type(user)._meta.concrete_fields
              if f.attname not in _UNCACHED_USER_FIELDS}
    return json.loads(json.dumps(fields, cls=DjangoJSONEncoder))


def _user_from_record(record: dict[str, Any]) -> Any:
    """A user instance as if loaded from the database (uncached fields deferred)."""
    model = get_user_model()
    names, values = [], []
    for model_field in model._meta.concrete_fields:
        if model_field.attname in record:
            names.append(model_field.attname)
            values.append(model_field.to_python(record[model_field.attname]))
    return model.from_db(router.db_for_read(model), names, values)


def _pack(secret_hash: str, token: VerifiedToken, lifetime: int) -> str:
    body = json.dumps({"id": token.id, "scopes": token.scopes, "expires_at": token.expires_at,
                       "user": _user_record(token.user)}, separators=(",", ":"))
    return sealing.seal(_SEALED_AS, secret_hash, f"{token.user.pk}|{token.prefix}|{body}",
                        lifetime)


def _unpack(raw: str | None, secret_hash: str) -> VerifiedToken | None:
    """The cached verification, or None: absent, or not sealed by us (a miss + an event)."""
    sealed = sealing.unseal(_SEALED_AS, secret_hash, raw)
    if sealed is None:
        return None
    try:
        _, prefix, body = sealed.split("|", 2)
        data = json.loads(body)
        return VerifiedToken(id=int(data["id"]), prefix=prefix, scopes=list(data["scopes"]),
                             expires_at=data["expires_at"],
                             user=_user_from_record(data["user"]))
    except Exception:  # sealed by us, yet unreadable (a model change): just a miss
        return None


# Token hash -> its owner's pk, for tokens this worker has verified, so the next handshake
# can decide the owner's bans, rate and caps in the same Redis trip as the IP checks
# (``ConnectThrottle``), ahead of verifying the token again. That guess is checked against
# the token-cache entry read in the same trip (``cached_owner``): a revoked token has no
# entry, a re-owned one names its new owner, and then the early decision is refunded.
# A token this worker finds invalid is dropped from here.
_owners: dict[str, str] = {}
MAX_KNOWN_OWNERS = 100_000


def known_owner(secret_hash: str) -> str | None:
    return _owners.get(secret_hash)


def forget_owner(secret_hash: str) -> None:
    _owners.pop(secret_hash, None)


def _learn_owner(secret_hash: str, owner_pk: Any) -> None:
    if secret_hash not in _owners and len(_owners) >= MAX_KNOWN_OWNERS:
        del _owners[next(iter(_owners))]  # the oldest
    _owners[secret_hash] = str(owner_pk)


def cached_owner(raw: Any) -> str | None:
    """The owner's pk a raw token-cache entry names (before its MAC is checked), or None."""
    parts = raw.split("|", 4) if isinstance(raw, str) else ()
    return parts[2] if len(parts) == 5 else None


async def _cached(secret_hash: str) -> VerifiedToken | None:
    try:
        raw = await store.call(store.async_client().get(cache_key(secret_hash)), "token_cache")
    except store.StoreUnavailable:
        return None  # the database still answers
    return _unpack(raw, secret_hash)


async def _remember(secret_hash: str, token: VerifiedToken) -> None:
    ttl = get_settings().TOKEN_CACHE_SECONDS
    if token.expires_at is not None:
        ttl = min(ttl, max(1, int(token.expires_at - now().timestamp())))
    try:
        await store.call(store.async_client().set(cache_key(secret_hash),
                                                  _pack(secret_hash, token, ttl), ex=ttl),
                         "token_cache")
    except store.StoreUnavailable:
        pass


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
        token = _unpack(cached, secret_hash)
    if shared:
        metrics.token_cache("hit" if token is not None else "miss")
    try:
        if token is None:
            token = await database_sync_to_async(_load_from_db)(secret_hash,
                                                                 public_prefix(secret))
            if shared:
                await _remember(secret_hash, token)
        _check(token)
    except TokenInvalid:
        forget_owner(secret_hash)  # no early identity decisions for a token that fails
        raise
    _learn_owner(secret_hash, token.user.pk)
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


def _batches(ids: set[Any], size: int = 900) -> list[list[Any]]:
    ordered = list(ids)
    return [ordered[start:start + size] for start in range(0, len(ordered), size)]


@dataclass(frozen=True)
class Recheck:
    """What the database says now about a worker's live identities."""

    tokens: dict[int, tuple[list[str], float | None]]  # usable token id -> (scopes, expires_at)
    users: dict[Any, Any]  # active user pk -> freshly loaded user


async def recheck(token_ids: set[int], user_ids: set[Any]) -> Recheck:
    """Re-read live sockets' tokens and users (two queries for a whole worker)."""

    def load() -> Recheck:
        tokens, users = {}, {}
        at = now()
        manager = get_user_model()._default_manager
        for batch in _batches(token_ids):  # bounded IN lists: SQLite caps query variables
            rows = (WebSocketToken.objects.usable(at)
                    .filter(pk__in=batch, owner__is_active=True)
                    .values_list("pk", "scopes", "expires_at"))
            tokens.update({pk: (list(scopes or []), expires.timestamp() if expires else None)
                           for pk, scopes, expires in rows})
        for batch in _batches(user_ids):
            users.update({u.pk: u for u in manager.filter(pk__in=batch, is_active=True)})
        return Recheck(tokens, users)

    return await database_sync_to_async(load)()


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
