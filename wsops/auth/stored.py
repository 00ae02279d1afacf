"""``StoredTokenAuthenticator``: opaque tokens whose truth is a database row.

DRF's ``authtoken`` and django-oauth-toolkit's access tokens share one shape:
the secret is looked up in a table. Like wsops tokens they are cached in Redis
(sealed JSON keyed by the secret's SHA-256, ``wsops.auth.cache``) and read
ahead in the first handshake step's round trip, so a warm handshake makes one
round trip and no query. Saving or deleting the row drops the cache entry on
every worker; deleting it also closes its live sockets at once
(``wsops.auth.revocation``), and every ``TOKEN_CACHE_SECONDS`` the live sockets
are re-checked against the table (what sends no signal: ``QuerySet.update()``,
raw SQL).
"""

from __future__ import annotations

import re
from typing import Any

from channels.db import database_sync_to_async
from django.db.models.signals import post_delete, post_save

from .. import tokens
from ..handshake.state import NOT_FETCHED, Handshake, TokenInfo
from ..handshake.transports import FOREIGN, Credential
from . import cache, revocation
from .base import Authenticated, BaseAuthenticator, ReadAhead, digest


class StoredTokenAuthenticator(BaseAuthenticator):
    """Subclasses give the shape, the Authorization schemes, the model and the lookup."""

    shape = re.compile(r".+")  # what a secret of this kind looks like
    schemes: tuple[str, ...] = ("",)  # Authorization schemes it comes with ("": no header)

    def claims(self, credential: Credential) -> bool:
        return (credential.kind == FOREIGN and credential.scheme in self.schemes
                and self.shape.fullmatch(credential.secret) is not None)

    def model(self) -> Any:
        raise NotImplementedError

    def load(self, secret: str, secret_digest: str) -> Authenticated:
        """Read the row (sync); ``(user, TokenInfo)`` or raise AuthenticationFailed."""
        raise NotImplementedError

    def digest_of(self, row: Any) -> str:
        """The SHA-256 of the secret a row holds (its cache key)."""
        raise NotImplementedError

    def read_ahead(self, credential: Credential, handshake: Handshake) -> ReadAhead | None:
        if not self.claims(credential):
            return None
        secret_digest = digest(credential.secret)
        owner = tokens.known_owner(secret_digest)
        return ReadAhead(cache.key(self.kind, secret_digest), owner,
                         self.identifier(credential.secret),
                         confirms=lambda fetched: cache.cached_owner(fetched) == owner,
                         forget=lambda: tokens.forget_owner(secret_digest))

    async def authenticate(self, credential: Credential,
                           handshake: Handshake) -> Authenticated | None:
        if not self.claims(credential):
            return None
        secret_digest = digest(credential.secret)
        fetched, handshake.cached_token = handshake.cached_token, NOT_FETCHED
        found = await cache.read(self.kind, secret_digest, fetched)
        if found is None:
            try:
                found = await database_sync_to_async(self.load)(credential.secret,
                                                               secret_digest)
            except Exception:
                tokens.forget_owner(secret_digest)  # no early decisions for a failing token
                raise
            await cache.remember(self.kind, secret_digest, *found)
        tokens.learn_owner(secret_digest, found[0].pk)
        return found

    def connect_signals(self) -> None:
        def changed(sender: Any, instance: Any, **kwargs: Any) -> None:
            cache.forget(self.kind, [self.digest_of(instance)])

        def deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
            changed(sender, instance)
            revocation.close_live(f"{self.kind}_{self.digest_of(instance)[:16]}", "revoked")

        model = self.model()
        post_save.connect(changed, sender=model, weak=False,
                          dispatch_uid=f"wsops.{self.kind}.changed")
        post_delete.connect(deleted, sender=model, weak=False,
                            dispatch_uid=f"wsops.{self.kind}.deleted")

    def info(self, handle: Any, secret: str, scopes: list[str],
             expires_at: float | None) -> TokenInfo:
        return TokenInfo(handle, self.identifier(secret), scopes, expires_at, self.kind)
