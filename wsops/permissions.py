"""Permissions for connections and actions, composable with ``&``, ``|`` and ``~``.

    @action("send_message", permission=HasPerm("chat.send_message") & HasScope("chat:write"))

Each permission answers ``await perm.has_permission(scope)``. Checks that need
the database (``HasPerm``, ``InGroup``) run in a thread via
``database_sync_to_async``, so the event loop never blocks; the consumer
caches each answer per connection for ``PERMISSION_CACHE_SECONDS``.

Why the database checks reload the user: the user object in the scope was
loaded when the socket connected, and may be hours old. For cookie sockets it
is Channels' ``UserLazyObject``, whose wrapped user keeps ModelBackend's
permission cache for the socket's whole life; ``is_superuser`` and
``is_active`` on it never change. So every uncached answer is computed on a
user freshly read from the database: a removed permission or group, a
superuser demotion or a deactivation takes effect within
``PERMISSION_CACHE_SECONDS`` on every socket, whatever its transport. (Token
scopes and deactivations are also re-read for all live sockets every
``TOKEN_CACHE_SECONDS`` by ``wsops.connections``.)
"""

from __future__ import annotations

import time
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model

from .conf import get_settings
from .scope import Scope, signed_in_user

Answers = dict[int, tuple[float, bool]]  # id(permission) -> (valid until, answer)


class BasePermission:
    """Subclass and implement ``has_permission``; combine with ``&``, ``|``, ``~``."""

    #: Whether the answer may be cached per connection (False for pure in-memory checks).
    cacheable = False

    async def has_permission(self, scope: Scope) -> bool:
        raise NotImplementedError

    async def allows(self, scope: Scope, cache: Answers | None) -> bool:
        """``has_permission``, with a cacheable answer kept in ``cache`` (the connection's)
        for ``PERMISSION_CACHE_SECONDS``. Composites pass the cache down to their parts, so
        only the parts that asked the database are cached: ``HasPerm(...) & HasScope(...)``
        still sees a token scope removed a second ago."""
        if cache is None or not self.cacheable:
            return await self.has_permission(scope)
        now = time.monotonic()
        hit = cache.get(id(self))
        if hit is not None and hit[0] > now:
            return hit[1]
        answer = await self.has_permission(scope)
        cache[id(self)] = (now + get_settings().PERMISSION_CACHE_SECONDS, answer)
        return answer

    def __and__(self, other: BasePermission) -> BasePermission:
        return AllOf(self, other)

    def __or__(self, other: BasePermission) -> BasePermission:
        return AnyOf(self, other)

    def __invert__(self) -> BasePermission:
        return Not(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class AllOf(BasePermission):
    def __init__(self, *parts: BasePermission) -> None:
        self.parts = parts
        self.cacheable = any(p.cacheable for p in parts)

    async def has_permission(self, scope: Scope) -> bool:
        return await self.allows(scope, None)

    async def allows(self, scope: Scope, cache: Answers | None) -> bool:
        for part in self.parts:
            if not await part.allows(scope, cache):
                return False
        return True

    def __repr__(self) -> str:
        return " & ".join(map(repr, self.parts))


class AnyOf(AllOf):
    async def allows(self, scope: Scope, cache: Answers | None) -> bool:
        for part in self.parts:
            if await part.allows(scope, cache):
                return True
        return False

    def __repr__(self) -> str:
        return "(" + " | ".join(map(repr, self.parts)) + ")"


class Not(BasePermission):
    def __init__(self, inner: BasePermission) -> None:
        self.inner = inner
        self.cacheable = inner.cacheable

    async def has_permission(self, scope: Scope) -> bool:
        return await self.allows(scope, None)

    async def allows(self, scope: Scope, cache: Answers | None) -> bool:
        return not await self.inner.allows(scope, cache)

    def __repr__(self) -> str:
        return f"~{self.inner!r}"


class AllowAny(BasePermission):
    async def has_permission(self, scope: Scope) -> bool:
        return True


def fresh_user(user: Any) -> Any:
    """The active user with ``user``'s primary key, read from the database now, or None.

    Never the scope's object (see the module docstring); runs in a thread.
    """
    return get_user_model()._default_manager.filter(pk=user.pk, is_active=True).first()


class IsAuthenticated(BasePermission):
    async def has_permission(self, scope: Scope) -> bool:
        user = signed_in_user(scope)
        return bool(user is not None and user.is_active)


class HasPerm(BasePermission):
    """The user has a Django permission (``"app_label.codename"``)."""

    cacheable = True

    def __init__(self, *perms: str) -> None:
        self.perms = perms

    async def has_permission(self, scope: Scope) -> bool:
        user = signed_in_user(scope)
        if user is None:
            return False

        def check() -> bool:
            current = fresh_user(user)
            return current is not None and current.has_perms(self.perms)

        return await database_sync_to_async(check)()

    def __repr__(self) -> str:
        return f"HasPerm({', '.join(map(repr, self.perms))})"


class InGroup(BasePermission):
    """The user belongs to a Django auth group."""

    cacheable = True

    def __init__(self, name: str) -> None:
        self.name = name

    async def has_permission(self, scope: Scope) -> bool:
        user = signed_in_user(scope)
        if user is None:
            return False
        return await database_sync_to_async(
            lambda: get_user_model()._default_manager.filter(
                pk=user.pk, is_active=True, groups__name=self.name).exists()
        )()

    def __repr__(self) -> str:
        return f"InGroup({self.name!r})"


class HasScope(BasePermission):
    """The connection's token carries a scope (``"chat:write"``).

    Session and ticket connections carry no token: they pass unless
    ``WSOPS["SESSION_SCOPES"]`` lists the scopes such connections get.
    """

    def __init__(self, *scopes: str) -> None:
        self.scopes = scopes

    async def has_permission(self, scope: Scope) -> bool:
        handshake = scope.get("wsops")
        token = handshake.token if handshake is not None else None
        if token is None:
            if signed_in_user(scope) is None:
                return False
            granted = get_settings().SESSION_SCOPES
            return granted is None or all(s in granted for s in self.scopes)
        return all(s in token.scopes for s in self.scopes)

    def __repr__(self) -> str:
        return f"HasScope({', '.join(map(repr, self.scopes))})"


class PermissionCache:
    """One connection's cached permission answers, for ``PERMISSION_CACHE_SECONDS``.

    Created on first use: most sockets never need one (memory per idle socket).
    """

    __slots__ = ("answers",)

    def __init__(self) -> None:
        self.answers: Answers = {}

    async def allows(self, permission: BasePermission, scope: Scope) -> bool:
        return await permission.allows(scope, self.answers)
