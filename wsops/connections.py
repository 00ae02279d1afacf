"""This worker's live sockets: registry slots, remote close, token lifetime.

Every socket admitted by ``SecureWebsocketStack`` is entered here with its
identity (user, token, IP), the ASGI ``send`` it closes through, and the
connection-cap slots it holds in Redis. One background ticker per worker:

- refreshes the worker's registry slots in Redis every ``CONNECTION_TTL / 3``
  (one round trip), so a killed worker's sockets stop counting within
  ``CONNECTION_TTL`` seconds;
- closes token sockets (4401) when their token expires (checked every second)
  and re-checks all of this worker's sockets against the database every
  ``TOKEN_CACHE_SECONDS`` in two queries: revoked tokens and deactivated or
  deleted users close (4401), token scopes and user fields are refreshed.

Remote close and push: each worker joins the channel-layer group ``wsops.workers``
with one channel. ``wstokens revoke --disconnect`` and ``wsratelimit block
--disconnect`` send one ``wsops.disconnect`` event to that group, and each worker
closes its matching sockets; ``wsops.push`` sends one ``wsops.push`` event, and
each worker hands the message to its matching sockets' consumers, in order per
socket (``attach``). That costs one message per worker instead of a group join
per socket (two Redis round trips on channels-redis, and one more to leave).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
import uuid
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from channels.layers import get_channel_layer

from . import codes, metrics, signals, store
from .conf import get_settings
from .handshake.state import Handshake
from .limits.engine import Cap, get_limiter
from .limits.operators import ip_matches
from .scope import Application, Receive, Scope, Send
from .tokens import now, recheck

logger = logging.getLogger("wsops")
WORKERS_GROUP = "wsops.workers"
TICK = 1.0  # seconds between expiry checks
GROUP_RENEW = 3600  # re-join the workers group well within channels-redis' group_expiry
_member_ids = itertools.count(1)
_worker = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


PUSH_BACKLOG = 1000  # pushes a slow socket may have waiting before new ones are dropped


def new_member() -> str:
    """A connection id unique across workers (the member name in Redis' registry)."""
    return f"{_worker}:{next(_member_ids)}"


def worker_of(connection_id: str) -> str:
    """The id of the worker holding a connection (``new_member``'s prefix)."""
    return connection_id.rpartition(":")[0]


class Inbox:
    """Pushes waiting for one consumer, handed to its ``dispatch`` one at a time, in order."""

    __slots__ = ("dispatch", "queue", "task")

    def __init__(self, dispatch: Callable[[dict[str, Any]], Awaitable[Any]]) -> None:
        self.dispatch = dispatch
        self.queue: deque[dict[str, Any]] = deque()
        self.task: asyncio.Task | None = None

    def put(self, message: dict[str, Any]) -> None:
        if len(self.queue) >= PUSH_BACKLOG:
            logger.warning("wsops: a socket has %d pushes waiting; dropping %r",
                           len(self.queue), message.get("type"))
            return
        self.queue.append(message)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self.queue:
            message = self.queue.popleft()
            try:
                await self.dispatch(message)
            except Exception:  # one bad handler call must not stop later pushes
                logger.exception("wsops: handling the push %r failed", message.get("type"))

    def stop(self) -> None:
        self.queue.clear()
        if self.task is not None:
            self.task.cancel()


@dataclass(eq=False, slots=True)
class Entry:
    scope: Scope  # the socket's scope; its Handshake is shared with the consumer's
    send: Send
    caps: tuple[Cap, ...] = ()
    closed: bool = field(default=False)
    dispatch: Callable[[dict[str, Any]], Awaitable[Any]] | None = None  # set by ``attach``
    inbox: Inbox | None = None  # the pushes waiting for ``dispatch``, made on the first one

    @property
    def handshake(self) -> Handshake:
        return self.scope["wsops"]

    def matches(self, match: dict[str, str]) -> bool:
        """Whether this socket is one a remote close names (``ip`` may be a network)."""
        handshake = self.handshake
        token = handshake.token
        actual = {"user": str(handshake.user_id), "token": token.prefix if token else None,
                  "connection": handshake.connection_id}
        return all(ip_matches(handshake.ip, value) if kind == "ip"
                   else actual.get(kind) == value for kind, value in match.items())

    async def close(self, code: int, kind: str, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        signals.report(kind, self.scope, reason, close_code=code)
        explained = {"reason": reason} if get_settings().explain_refusals else {}
        try:
            await self.send({"type": "websocket.close", "code": code, **explained})
        except Exception:  # the socket is already gone
            pass


class LiveConnections:
    """The live sockets of one worker (one instance per event loop)."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.ticker: asyncio.Task | None = None
        self.listener: asyncio.Task | None = None
        self.channel: str | None = None  # the listener's channel in wsops.workers
        self.joined = asyncio.Event()

    async def add(self, member: str, entry: Entry) -> None:
        """Register a socket; the first one also waits (up to a second) until this worker
        listens for remote closes, so a revoke sent right after the handshake is not lost."""
        self.entries[member] = entry
        loop = asyncio.get_running_loop()
        if self.ticker is None or self.ticker.done():
            self.ticker = loop.create_task(self._tick_forever())
        if self.listener is None or self.listener.done():
            self.joined.clear()
            self.listener = loop.create_task(self._listen_forever())
        if not self.joined.is_set():
            try:
                await asyncio.wait_for(self.joined.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass  # the channel layer is slow or down: serve the socket anyway

    def remove(self, member: str) -> Entry | None:
        """Unregister a socket; the last one also ends the worker's background tasks and
        its ``wsops.workers`` membership (the next socket starts them again)."""
        entry = self.entries.pop(member, None)
        if entry is not None:
            entry.closed = True
            if entry.inbox is not None:
                entry.inbox.stop()
        if not self.entries:
            if self.ticker is not None:
                self.ticker.cancel()  # it only sleeps between ticks
                self.ticker = None
            if self.listener is not None and not self.listener.done() and self.channel:
                # Wake the listener rather than cancel it: a cancelled channels-redis
                # receive can leave its connection stuck. It sees no socket and leaves.
                self._send_soon(self.channel, {"type": "wsops.stop"})
        return entry

    def _send_soon(self, channel: str, event: dict[str, Any]) -> None:
        layer = get_channel_layer()
        if layer is not None:
            task = asyncio.get_running_loop().create_task(layer.send(channel, event))
            _background.add(task)
            task.add_done_callback(_background.discard)

    async def close_matching(self, match: dict[str, str], code: int, kind: str,
                             reason: str) -> int:
        chosen = [e for e in list(self.entries.values()) if not e.closed and e.matches(match)]
        for entry in chosen:
            await entry.close(code, kind, reason)
        return len(chosen)

    def push_matching(self, match: dict[str, str], message: dict[str, Any]) -> int:
        """Hand ``message`` to every matching socket's consumer; return how many."""
        delivered = 0
        for entry in list(self.entries.values()):
            if entry.dispatch is not None and not entry.closed and entry.matches(match):
                if entry.inbox is None:
                    entry.inbox = Inbox(entry.dispatch)
                entry.inbox.put(message)
                delivered += 1
        return delivered

    async def handle(self, event: dict[str, Any]) -> None:
        """One event from the channel layer: a remote close or a push."""
        match = event.get("match")
        if not isinstance(match, dict):
            return
        if event.get("type") == "wsops.disconnect":
            await self.close_matching(match, int(event.get("code", 4401)),
                                      str(event.get("kind", signals.AUTH)),
                                      str(event.get("reason", "disconnected")))
        elif event.get("type") == "wsops.push" and isinstance(event.get("message"), dict):
            self.push_matching(match, event["message"])

    # --- the ticker -----------------------------------------------------------------

    async def _tick_forever(self) -> None:
        last_refresh = last_recheck = time.monotonic()
        while self.entries:
            await asyncio.sleep(TICK)
            conf = get_settings()
            moment = time.monotonic()
            try:
                await self._close_expired()
                if moment - last_recheck >= conf.TOKEN_CACHE_SECONDS:
                    last_recheck = moment
                    await self._recheck_identities()
                if moment - last_refresh >= conf.CONNECTION_TTL / 3:
                    last_refresh = moment
                    await self._refresh_slots(conf.CONNECTION_TTL)
            except Exception:  # never let bookkeeping kill the ticker
                logger.exception("wsops: live connection bookkeeping failed")

    async def _close_expired(self) -> None:
        current = now().timestamp()
        for entry in list(self.entries.values()):
            token = entry.handshake.token
            expires = token.expires_at if token is not None else None
            if expires is not None and expires <= current and not entry.closed:
                await entry.close(codes.UNAUTHENTICATED, signals.AUTH, "expired")

    async def _recheck_identities(self) -> None:
        """Re-read every live socket's token and user from the database.

        A revoked or expired token, and a deactivated or deleted user, closes the
        socket (4401) whatever its transport. Token scopes and the user object's
        fields (``is_superuser``, ``is_staff``, ...) are refreshed in place, so
        nothing a consumer reads is older than ``TOKEN_CACHE_SECONDS``.
        """
        from .auth import revoked_tokens  # wsops.auth imports this module

        live = [e for e in self.entries.values() if not e.closed]
        held = [e.handshake.token for e in live if e.handshake.token is not None]
        token_ids = {t.id for t in held if t.kind == "wsops"}
        user_ids = {e.handshake.user_id for e in live if e.handshake.user_id is not None}
        if not held and not user_ids:
            return
        found = await recheck(token_ids, user_ids)
        foreign = await revoked_tokens([t for t in held if t.kind != "wsops"])
        for entry in live:
            token = entry.handshake.token
            user_id = entry.handshake.user_id
            if token is not None and (token.prefix in foreign if token.kind != "wsops"
                                      else token.id not in found.tokens):
                await entry.close(codes.UNAUTHENTICATED, signals.AUTH, "revoked")
            elif user_id is not None and user_id not in found.users:
                await entry.close(codes.UNAUTHENTICATED, signals.AUTH, "inactive_user")
            else:
                if token is not None and token.kind == "wsops":
                    token.scopes, token.expires_at = found.tokens[token.id]
                if user_id is not None:
                    refresh_user(entry.scope.get("user"), found.users[user_id])

    async def _refresh_slots(self, ttl: float) -> None:
        pairs = [(cap.key, member) for member, entry in list(self.entries.items())
                 for cap in entry.caps]
        if pairs:
            try:
                await get_limiter().refresh(pairs, ttl)
            except store.StoreUnavailable:
                pass  # slots expire, or heal on the next refresh

    # --- remote close ---------------------------------------------------------------

    async def _listen_forever(self) -> None:
        layer = get_channel_layer()
        if layer is None:
            self.joined.set()
            return
        joined: list[str] = []  # this run's channel, once it has one
        try:
            await self._listen(layer, joined)
        finally:  # the last socket closed, or the loop ended
            # Not listening from here on: a socket that arrives while this one leaves
            # waits (add()) for the listener started below to join again.
            self.joined.clear()
            for channel in joined:
                try:
                    await layer.group_discard(WORKERS_GROUP, channel)
                except Exception:
                    pass
            if self.listener is asyncio.current_task():
                self.listener = self.channel = None
                if self.entries:  # a socket arrived while this one was leaving
                    self.joined.clear()
                    self.listener = asyncio.get_running_loop().create_task(
                        self._listen_forever())

    async def _listen(self, layer: Any, joined: list[str]) -> None:
        """Receive remote closes and pushes on one channel in ``wsops.workers``."""
        channel = None
        # None, never 0.0: time.monotonic() counts from boot, so on a host up for less
        # than GROUP_RENEW seconds "now - 0.0 > GROUP_RENEW" would never be true.
        joined_at: float | None = None
        while self.entries:
            try:
                if channel is None:
                    channel = self.channel = await layer.new_channel("wsops.worker.")
                    joined.append(channel)
                if joined_at is None or time.monotonic() - joined_at > GROUP_RENEW:
                    await layer.group_add(WORKERS_GROUP, channel)
                    joined_at = time.monotonic()
                    self.joined.set()
                # Wake up to renew the membership even when no event arrives.
                event = await asyncio.wait_for(layer.receive(channel), timeout=GROUP_RENEW)
            except asyncio.TimeoutError:
                continue
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(1)  # layer unreachable: try again, never crash
                joined_at = None
                continue
            await self.handle(event)


def refresh_user(user: Any, fresh: Any) -> None:
    """Copy a freshly loaded user's fields onto the socket's user object, in place.

    In place because the consumer's scope shares this object (for cookie sockets a
    ``UserLazyObject``, whose attribute writes reach the wrapped user). The
    permission caches ModelBackend keeps on the object are dropped too.
    """
    if user is None or not getattr(user, "is_authenticated", False) or user.pk != fresh.pk:
        return
    target = getattr(user, "_wrapped", user)
    for model_field in type(fresh)._meta.concrete_fields:
        setattr(target, model_field.attname, getattr(fresh, model_field.attname))
    for attribute in ("_perm_cache", "_user_perm_cache", "_group_perm_cache"):
        target.__dict__.pop(attribute, None)


def attach(scope: Scope, dispatch: Callable[[dict[str, Any]], Awaitable[Any]]) -> bool:
    """Deliver pushes for this socket to ``dispatch`` (a consumer's); False outside the stack.

    Pushes are handed over one at a time, in order, by a task of their own: beside
    the consumer's frames, not queued behind them.

    ``SecureJsonWebsocketConsumer`` attaches itself; another Channels consumer behind
    ``SecureWebsocketStack`` calls ``attach(self.scope, self.dispatch)`` in ``connect()``.
    """
    handshake = scope.get("wsops")
    entry = live_connections().entries.get(getattr(handshake, "connection_id", None) or "")
    if entry is None:
        return False
    entry.dispatch = dispatch
    return True


async def serve_registered(handshake: Handshake, scope: Scope, receive: Receive, send: Send,
                           inner: Application) -> Any:
    """Run ``inner`` with the socket in this worker's registry; free its slots after."""
    registry = live_connections()
    member = handshake.connection_id
    admission = handshake.admission
    entry = Entry(scope, send, admission.caps if admission is not None else ())
    handshake.admission = None  # the entry holds the slots from now on
    await registry.add(member, entry)
    try:
        return await metrics.observed(inner, scope, receive, send)
    finally:
        registry.remove(member)
        if entry.caps:  # a first-frame login may have added slots
            try:
                await get_limiter().release(entry.caps, member)
            except store.StoreUnavailable:
                pass  # they expire within CONNECTION_TTL


_background: set[asyncio.Task] = set()  # fire-and-forget sends, kept until done
_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LiveConnections] = (
    weakref.WeakKeyDictionary()
)


def live_connections() -> LiveConnections:
    """This event loop's registry (a worker runs one loop; tests run many)."""
    loop = asyncio.get_running_loop()
    registry = _per_loop.get(loop)
    if registry is None:
        registry = _per_loop[loop] = LiveConnections()
    return registry
