"""``SimpleJWTAuthenticator``: djangorestframework-simplejwt access tokens (``wsops[jwt]``).

Verified with the project's own ``SIMPLE_JWT`` settings, through simplejwt's own
token classes (``AUTH_TOKEN_CLASSES``, so its key, algorithm, audience, issuer,
leeway, token type and user id claim all apply), in process: no database, and
no round trip of its own.

- The owner is read from the user id claim, so the first handshake step decides
  the owner's bans, rate and caps in its one Redis trip, and reads the owner's
  cached fields (sealed JSON, ``wsops.auth.cache``) in the same trip; only a cache
  miss reads the user row.
- The safe identifier is ``jwt_<jti>`` (``wsratelimit block token:jwt_<jti>``,
  security events, remote close).
- With ``rest_framework_simplejwt.token_blacklist`` installed, blacklisting a
  token (``BlacklistedToken`` saved) bans its identifier until its ``exp`` in
  Redis, which every handshake already checks, and closes its live sockets at
  once; live sockets are also re-checked against the blacklist every
  ``TOKEN_CACHE_SECONDS``. Without Redis, every handshake asks the database.
- Scopes come from the ``scope`` claim (a space-separated string or a list);
  subclass and set ``scopes_claim`` for another.
- Live sockets close with 4401 at ``exp``.
"""

from __future__ import annotations

import re
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import SynchronousOnlyOperation, ValidationError
from django.db import DataError
from django.db.models.signals import post_delete, post_save

from .. import store
from ..handshake.state import NOT_FETCHED, Handshake, TokenInfo
from ..handshake.transports import FOREIGN, Credential
from . import cache, revocation
from .base import Authenticated, AuthenticationFailed, BaseAuthenticator, ReadAhead, digest

JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
SAFE_JTI = re.compile(r"[A-Za-z0-9_-]{1,64}")
BLACKLIST_APP = "rest_framework_simplejwt.token_blacklist"
USER_KIND = "jwtuser"  # cache entries of JWT owners


class _Verified:
    """A token this handshake validated in the read-ahead, with the secret it was for."""

    __slots__ = ("payload", "secret")

    def __init__(self, secret: str, payload: dict[str, Any]) -> None:
        self.secret, self.payload = secret, payload


class SimpleJWTAuthenticator(BaseAuthenticator):
    kind = "jwt"
    requires = ("rest_framework_simplejwt",)
    extra = "jwt"
    scopes_claim = "scope"

    def __init__(self) -> None:
        self.blacklist = BLACKLIST_APP in settings.INSTALLED_APPS

    @staticmethod
    def claims(credential: Credential) -> bool:
        """Whether a credential looks like a JWS (three base64url parts); else it passes."""
        return (credential.kind == FOREIGN and credential.scheme in ("", "bearer")
                and JWS.fullmatch(credential.secret) is not None)

    # --- verification, in process -----------------------------------------------------

    def validate(self, secret: str) -> dict[str, Any]:
        """The verified payload, by simplejwt's own token classes; raise AuthenticationFailed.

        Anything simplejwt or PyJWT raise on hostile input (bad base64, ``alg: none``,
        nested JSON) is a refusal, never a crash.
        """
        from rest_framework_simplejwt.exceptions import TokenError
        from rest_framework_simplejwt.settings import api_settings

        expired = False
        for token_class in api_settings.AUTH_TOKEN_CLASSES:
            try:
                return dict(token_class(secret).payload)
            except SynchronousOnlyOperation:
                raise  # a token class that reads the database: the caller retries in a thread
            except TokenError as error:
                expired = expired or type(error).__name__ == "ExpiredTokenError"
            except Exception:  # PyJWT/json errors simplejwt does not wrap (RecursionError...)
                pass
        raise AuthenticationFailed("expired" if expired else "invalid_jwt")

    def identifier_of(self, secret: str, payload: dict[str, Any]) -> str:
        from rest_framework_simplejwt.settings import api_settings

        jti = payload.get(api_settings.JTI_CLAIM)
        if isinstance(jti, str) and SAFE_JTI.fullmatch(jti):
            return f"jwt_{jti}"
        return self.identifier(secret)

    def scopes_of(self, payload: dict[str, Any]) -> list[str]:
        granted = payload.get(self.scopes_claim)
        if isinstance(granted, str):
            return granted.split()
        if isinstance(granted, list):
            return [s for s in granted if isinstance(s, str)]
        return []

    @staticmethod
    def owner_of(payload: dict[str, Any]) -> str | None:
        from rest_framework_simplejwt.settings import api_settings

        owner = payload.get(api_settings.USER_ID_CLAIM)
        return str(owner) if isinstance(owner, (str, int)) and not isinstance(owner, bool) \
            else None

    # --- the handshake ----------------------------------------------------------------

    def read_ahead(self, credential: Credential, handshake: Handshake) -> ReadAhead | None:
        if not self.claims(credential):
            return None
        try:
            payload = self.validate(credential.secret)
        except Exception:  # refused later, by authenticate(), with its reason
            return None
        owner = self.owner_of(payload)
        if owner is None:
            return None
        handshake.verified = _Verified(credential.secret, payload)
        from rest_framework_simplejwt.settings import api_settings

        pk_claim = api_settings.USER_ID_FIELD in ("pk", get_user_model()._meta.pk.attname)
        return ReadAhead(fetch=cache.key(USER_KIND, digest(owner)),
                         owner=owner if pk_claim else None,
                         identifier=self.identifier_of(credential.secret, payload))

    async def authenticate(self, credential: Credential,
                           handshake: Handshake) -> Authenticated | None:
        if not self.claims(credential):
            return None
        ahead, handshake.verified = handshake.verified, None
        if isinstance(ahead, _Verified) and ahead.secret == credential.secret:
            payload = ahead.payload
        else:
            try:
                payload = self.validate(credential.secret)
            except SynchronousOnlyOperation:
                payload = await database_sync_to_async(self.validate)(credential.secret)
        owner = self.owner_of(payload)
        identifier = self.identifier_of(credential.secret, payload)
        if owner is None:
            raise AuthenticationFailed("invalid_jwt", identifier)
        exp = payload.get("exp")
        jti = payload.get(_jti_claim())
        token = TokenInfo(jti if isinstance(jti, str) else None, identifier,
                          self.scopes_of(payload),
                          float(exp) if isinstance(exp, (int, float)) else None, self.kind)
        fetched, handshake.cached_token = handshake.cached_token, NOT_FETCHED
        found = await cache.read(USER_KIND, digest(owner), fetched)
        if found is not None:  # only with Redis, where the blacklist is a ban
            return found[0], token
        user, blacklisted = await database_sync_to_async(self._load)(owner, token.id)
        if blacklisted:
            raise AuthenticationFailed("blacklisted", identifier)
        if user is None:
            raise AuthenticationFailed("inactive_user", identifier)
        await cache.remember(USER_KIND, digest(owner), user, None)
        return user, token

    def _load(self, owner: str, jti: Any) -> tuple[Any, bool]:
        """The owner (None unless simplejwt's user rule admits them), and, without Redis
        (no ban to mirror the blacklist into), whether the token is blacklisted."""
        from rest_framework_simplejwt.settings import api_settings

        blacklisted = False
        if self.blacklist and not store.redis_url():
            from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken

            blacklisted = BlacklistedToken.objects.filter(token__jti=jti).exists()
        model = get_user_model()
        try:  # the claim is signed, but its type is whatever the issuer put there
            value = model._meta.get_field(api_settings.USER_ID_FIELD).to_python(owner)
            user = model._default_manager.filter(**{api_settings.USER_ID_FIELD: value}).first()
        except (ValidationError, ValueError, TypeError, OverflowError, DataError):
            user = None
        if user is None or not api_settings.USER_AUTHENTICATION_RULE(user):
            return None, blacklisted
        return user, blacklisted

    # --- live sockets -----------------------------------------------------------------

    async def revoked(self, live: list[TokenInfo]) -> set[str]:
        if not self.blacklist:
            return set()
        from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken

        by_jti = {token.id: token.prefix for token in live}

        def load() -> set[str]:
            found = BlacklistedToken.objects.filter(token__jti__in=list(by_jti))
            return {by_jti[jti] for jti in found.values_list("token__jti", flat=True)}

        return await database_sync_to_async(load)()

    def connect_signals(self) -> None:
        from rest_framework_simplejwt.settings import api_settings

        def owner_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
            owner = getattr(instance, api_settings.USER_ID_FIELD, None)
            if owner is not None:
                cache.forget(USER_KIND, [digest(str(owner))])

        for signal in (post_save, post_delete):
            signal.connect(owner_changed, sender=get_user_model(), weak=False,
                           dispatch_uid=f"wsops.jwt.owner_changed.{id(signal)}")
        if not self.blacklist:
            return
        from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken

        def blacklisted(sender: Any, instance: Any, **kwargs: Any) -> None:
            outstanding = instance.token
            identifier = self.identifier_of("", {_jti_claim(): outstanding.jti})
            revocation.ban_until(identifier, outstanding.expires_at.timestamp(), "blacklisted")
            revocation.close_live(identifier, "blacklisted")

        def unblacklisted(sender: Any, instance: Any, **kwargs: Any) -> None:
            revocation.unban(self.identifier_of("", {_jti_claim(): instance.token.jti}))

        post_save.connect(blacklisted, sender=BlacklistedToken, weak=False,
                          dispatch_uid="wsops.jwt.blacklisted")
        post_delete.connect(unblacklisted, sender=BlacklistedToken, weak=False,
                            dispatch_uid="wsops.jwt.unblacklisted")


def _jti_claim() -> str:
    from rest_framework_simplejwt.settings import api_settings

    return api_settings.JTI_CLAIM
