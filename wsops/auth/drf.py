"""``DRFTokenAuthenticator``: Django REST framework's ``authtoken`` tokens (``wsops[drf]``).

Sent as ``Authorization: Token <key>`` (DRF's keyword), in the subprotocol, or
in the first frame. The safe identifier is ``drf_`` and the first 16 hex digits
of the key's SHA-256. DRF tokens carry no scopes (``HasScope`` refuses them) and
never expire; deleting one (``Token.objects.filter(...).delete()``, a cascade
from the user, the admin) closes its live sockets at once. See
``wsops.auth.stored`` for the cache.
"""

from __future__ import annotations

import re
from typing import Any

from channels.db import database_sync_to_async

from ..handshake.state import TokenInfo
from .base import Authenticated, AuthenticationFailed, digest
from .stored import StoredTokenAuthenticator


class DRFTokenAuthenticator(StoredTokenAuthenticator):
    kind = "drf"
    requires = ("rest_framework",)
    apps = ("rest_framework.authtoken",)
    extra = "drf"
    shape = re.compile(r"[0-9a-f]{40}")  # rest_framework.authtoken: hexlify(urandom(20))
    schemes = ("", "token")

    def model(self) -> Any:
        from rest_framework.authtoken.models import Token

        return Token

    def digest_of(self, row: Any) -> str:
        return digest(row.key)

    def load(self, secret: str, secret_digest: str) -> Authenticated:
        row = self.model().objects.select_related("user").filter(key=secret).first()
        if row is None:
            raise AuthenticationFailed("unknown_token", self.identifier(secret))
        # The revocation handle is the owner: DRF keeps one token per user.
        return row.user, self.info(row.user_id, secret, [], None)

    async def revoked(self, live: list[TokenInfo]) -> set[str]:
        def load() -> set[str]:
            rows = self.model().objects.filter(user_id__in={t.id for t in live})
            current = {self.identifier(key) for key in rows.values_list("key", flat=True)}
            return {t.prefix for t in live if t.prefix not in current}

        return await database_sync_to_async(load)()
