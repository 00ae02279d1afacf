"""``OAuth2Authenticator``: django-oauth-toolkit access tokens (``wsops[oauth2]``).

Sent as ``Authorization: Bearer <token>``, in the subprotocol, or in the first
frame. Looked up by its SHA-256 (``token_checksum``, as django-oauth-toolkit
does); the safe identifier is ``oauth2_`` and its first 16 hex digits. The token's
scopes are the socket's (``HasScope("read")``), its ``expires`` closes live
sockets with 4401, and revoking it (``AccessToken.revoke()`` deletes the row)
closes them at once. Tokens without a user (client credentials) are refused: a
socket needs someone to act for. See ``wsops.auth.stored`` for the cache.
"""

from __future__ import annotations

import re
from typing import Any

from channels.db import database_sync_to_async
from django.utils import timezone

from ..handshake.state import TokenInfo
from .base import Authenticated, AuthenticationFailed
from .stored import StoredTokenAuthenticator


class OAuth2Authenticator(StoredTokenAuthenticator):
    kind = "oauth2"
    requires = ("oauth2_provider",)
    apps = ("oauth2_provider",)
    extra = "oauth2"
    shape = re.compile(r"[A-Za-z0-9._~+/=-]{8,}")  # RFC 6750 b64token
    schemes = ("", "bearer")

    def model(self) -> Any:
        from oauth2_provider.models import get_access_token_model

        return get_access_token_model()

    def digest_of(self, row: Any) -> str:
        return row.token_checksum

    def load(self, secret: str, secret_digest: str) -> Authenticated:
        row = (self.model().objects.select_related("user")
               .filter(token_checksum=secret_digest).first())
        identifier = self.identifier(secret)
        if row is None:
            raise AuthenticationFailed("unknown_token", identifier)
        if row.is_expired():
            raise AuthenticationFailed("expired", identifier)
        if row.user is None:
            raise AuthenticationFailed("token_without_user", identifier)
        return row.user, self.info(row.pk, secret, row.scope.split(), row.expires.timestamp())

    async def revoked(self, live: list[TokenInfo]) -> set[str]:
        def load() -> set[str]:
            current = set(self.model().objects.filter(
                pk__in={t.id for t in live}, expires__gt=timezone.now(),
            ).values_list("pk", flat=True))
            return {t.prefix for t in live if t.id not in current}

        return await database_sync_to_async(load)()
