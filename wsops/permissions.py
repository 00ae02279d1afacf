"""Permissions for connections and actions, composable with ``&``, ``|`` and ``~``.

    @action("send_message", permission=HasPerm("chat.send_message") & HasScope("chat:write"))
    connect_permission = HasObjectPerm("chat.join_room", get_object=room_from_url)

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

Object permissions, as DRF has them: a permission with a ``get_object`` asks
``has_object_permission(scope, obj)`` about the object it loads.
``get_object(scope)`` is read at connect time (``scope["url_route"]``);
``get_object(scope, data)`` at action time, from the validated payload. Either may
be sync (run in a thread) or async. A missing object (None, ``DoesNotExist``,
``Http404``) is refused exactly like a forbidden one, so a refusal never tells a
client whether the object exists. ``HasObjectPerm`` answers with Django's
``user.has_perm(perm, obj)``, so any object-permission backend works
(django-guardian, django-rules). Answers are cached per connection and per
object; a ``get_object(scope)`` object is loaded once per cache window.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Hashable
from functools import cached_property
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.core.exceptions import ObjectDoesNotExist
from django.http import Http404

from .conf import get_settings
from .scope import Scope, signed_in_user

#: (id(permission),) or (id(permission), object key) -> (valid until, answer)
Answers = dict[tuple[Hashable, ...], tuple[float, bool]]
MAX_CACHED_ANSWERS = 512  # per connection: a client touching many objects cannot grow it


class BasePermission:
    """Subclass and implement ``has_permission``; combine with ``&``, ``|``, ``~``.

    An object permission sets ``get_object`` instead (a function, or a method taking
    ``scope`` or ``scope, data``) and implements ``has_object_permission(scope, obj)``.
    """

    #: Whether the answer may be cached per connection (False for pure in-memory checks).
    cacheable = False
    #: Loads the object a check is about: ``(scope)`` or ``(scope, data)``, sync or async.
    get_object: Callable[..., Any] | None = None

    async def has_permission(self, scope: Scope) -> bool:
        if self.get_object is None:
            raise NotImplementedError
        return await self.allows(scope, None)

    async def has_object_permission(self, scope: Scope, obj: Any) -> bool:
        """Whether the connection may act on ``obj`` (DRF's hook); True unless overridden."""
        return True

    @cached_property
    def uses_data(self) -> bool:
        """Whether the check reads the action's validated payload (so runs after the form)."""
        return self.get_object is not None and _takes_data(self.get_object)

    async def allows(self, scope: Scope, cache: Answers | None, data: Any = None) -> bool:
        """``has_permission``, with a cacheable answer kept in ``cache`` (the connection's)
        for ``PERMISSION_CACHE_SECONDS``. Composites pass the cache down to their parts, so
        only the parts that asked the database are cached: ``HasPerm(...) & HasScope(...)``
        still sees a token scope removed a second ago."""
        if self.get_object is not None:
            return await self._allows_object(scope, cache if self.cacheable else None, data)
        if cache is None or not self.cacheable:
            return await self.has_permission(scope)
        key = (id(self),)
        hit = _cached(cache, key)
        if hit is not None:
            return hit
        return _remember(cache, key, await self.has_permission(scope))

    async def _allows_object(self, scope: Scope, cache: Answers | None, data: Any) -> bool:
        """Load the object, then ``has_object_permission``; missing is refused like forbidden.

        A ``get_object(scope)`` answer is cached before loading (the object depends only
        on the connection); a ``get_object(scope, data)`` one per object loaded.
        """
        takes_data = self.uses_data
        key: tuple[Hashable, ...] = (id(self),)
        if cache is not None and not takes_data and (hit := _cached(cache, key)) is not None:
            return hit
        obj = await load_object(self.get_object, scope, data, takes_data)
        if obj is None:
            return False
        if cache is None:
            return await self.has_object_permission(scope, obj)
        if takes_data:
            ident = object_key(obj)
            if ident is None:  # unhashable and not a model: never cached
                return await self.has_object_permission(scope, obj)
            key = (id(self), ident)
            if (hit := _cached(cache, key)) is not None:
                return hit
        return _remember(cache, key, await self.has_object_permission(scope, obj))

    def __and__(self, other: BasePermission) -> BasePermission:
        return AllOf(self, other)

    def __or__(self, other: BasePermission) -> BasePermission:
        return AnyOf(self, other)

    def __invert__(self) -> BasePermission:
        return Not(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _cached(cache: Answers, key: tuple[Hashable, ...]) -> bool | None:
    hit = cache.get(key)
    return hit[1] if hit is not None and hit[0] > time.monotonic() else None


def _remember(cache: Answers, key: tuple[Hashable, ...], answer: bool) -> bool:
    now = time.monotonic()
    if len(cache) >= MAX_CACHED_ANSWERS:  # drop what expired; if nothing did, start over
        for stale in [k for k, (until, _) in cache.items() if until <= now]:
            del cache[stale]
        if len(cache) >= MAX_CACHED_ANSWERS:
            cache.clear()
    cache[key] = (now + get_settings().PERMISSION_CACHE_SECONDS, answer)
    return answer


def _takes_data(get_object: Callable[..., Any]) -> bool:
    """Whether ``get_object`` takes ``(scope, data)`` rather than ``(scope)``."""
    try:
        parameters = inspect.signature(get_object).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in parameters)


async def load_object(get_object: Callable[..., Any], scope: Scope, data: Any,
                      takes_data: bool) -> Any:
    """Call ``get_object`` (async as is, sync in a thread); None when there is no object."""
    args = (scope, data) if takes_data else (scope,)
    try:
        if inspect.iscoroutinefunction(get_object):
            return await get_object(*args)
        return await database_sync_to_async(get_object)(*args)
    except (ObjectDoesNotExist, Http404):
        return None


def object_key(obj: Any) -> Hashable | None:
    """What an object's cached answer is keyed by: a model instance by label and pk."""
    meta = getattr(obj, "_meta", None)
    if meta is not None and getattr(obj, "pk", None) is not None:
        return (meta.label, obj.pk)
    try:
        hash(obj)
    except TypeError:
        return None
    return (type(obj).__qualname__, obj)


class AllOf(BasePermission):
    def __init__(self, *parts: BasePermission) -> None:
        self.parts = parts
        self.cacheable = any(p.cacheable for p in parts)

    async def has_permission(self, scope: Scope) -> bool:
        return await self.allows(scope, None)

    @property
    def uses_data(self) -> bool:
        return any(p.uses_data for p in self.parts)

    async def allows(self, scope: Scope, cache: Answers | None, data: Any = None) -> bool:
        for part in self.parts:
            if not await part.allows(scope, cache, data):
                return False
        return True

    def __repr__(self) -> str:
        return " & ".join(map(repr, self.parts))


class AnyOf(AllOf):
    async def allows(self, scope: Scope, cache: Answers | None, data: Any = None) -> bool:
        for part in self.parts:
            if await part.allows(scope, cache, data):
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

    @property
    def uses_data(self) -> bool:
        return self.inner.uses_data

    async def allows(self, scope: Scope, cache: Answers | None, data: Any = None) -> bool:
        return not await self.inner.allows(scope, cache, data)

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


async def fresh_has_perms(scope: Scope, perms: tuple[str, ...], obj: Any = None) -> bool:
    """``user.has_perms(perms, obj)`` on the scope's user freshly read (in a thread)."""
    user = signed_in_user(scope)
    if user is None:
        return False

    def check() -> bool:
        current = fresh_user(user)
        return current is not None and current.has_perms(perms, obj)

    return await database_sync_to_async(check)()


class HasPerm(BasePermission):
    """The user has a Django permission (``"app_label.codename"``)."""

    cacheable = True

    def __init__(self, *perms: str) -> None:
        self.perms = perms

    async def has_permission(self, scope: Scope) -> bool:
        return await fresh_has_perms(scope, self.perms)

    def __repr__(self) -> str:
        return f"HasPerm({', '.join(map(repr, self.perms))})"


class HasObjectPerm(BasePermission):
    """The user has a Django permission on one object: ``user.has_perm(perm, obj)``.

    ``get_object(scope)`` (connect time) or ``get_object(scope, data)`` (action time,
    the validated payload), sync or async, returns the object or None.
    """

    cacheable = True

    def __init__(self, perm: str, *, get_object: Callable[..., Any]) -> None:
        if not callable(get_object):
            raise TypeError("HasObjectPerm(get_object=...) needs a callable")
        self.perm = perm
        self.get_object = get_object

    async def has_object_permission(self, scope: Scope, obj: Any) -> bool:
        return await fresh_has_perms(scope, (self.perm,), obj)

    def __repr__(self) -> str:
        name = getattr(self.get_object, "__qualname__", repr(self.get_object))
        return f"HasObjectPerm({self.perm!r}, get_object={name})"


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

    async def allows(self, permission: BasePermission, scope: Scope, data: Any = None) -> bool:
        return await permission.allows(scope, self.answers, data)
