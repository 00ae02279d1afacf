"""Issue #13: the worker machinery on a host booted a second ago.

``time.monotonic()`` counts from boot. A worker that started its group-join
timestamp at 0.0 never joined ``wsops.workers`` in its host's first hour, so
``revoke --disconnect`` closed nothing there. The ``fresh_clock`` fixture makes
the clock read 1 s, and these tests drive the real registry under it: the join
happens when the first socket is added, and a remote close sent through the
channel layer group reaches the socket.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from channels.layers import channel_layers, get_channel_layer

from tests.helpers import configure_redis
from wsops import codes, connections, remote
from wsops.handshake import Handshake, TokenInfo

TOKEN_PREFIX = "wst_abcdefgh"


@pytest.fixture(params=["memory", "redis"])
def layer(request, settings):
    """The channel layer the workers group lives on: in memory, or channels-redis.

    Without the per-user registry a remote close goes to the whole workers group: these
    sockets are registered with this worker only, not in Redis."""
    settings.WSOPS = {**settings.WSOPS, "MAX_CONNECTIONS_PER_USER": None}
    if request.param == "redis":
        configure_redis(settings, request.getfixturevalue("redis_server"))
    else:
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
        channel_layers.backends.clear()
    yield get_channel_layer()
    channel_layers.backends.clear()


@pytest.fixture
async def registry():
    """This event loop's registry of live sockets, emptied afterwards."""
    registry = connections.live_connections()
    yield registry
    for member in list(registry.entries):
        registry.remove(member)
    if registry.ticker is not None:
        registry.ticker.cancel()
    # Cancelling a channels-redis receive mid-flight can hang; with no socket left, the
    # listener leaves the group and ends when its next event arrives: send one.
    listener = registry.listener
    if listener is not None and not listener.done():
        await remote.disconnect({"user": "nobody"}, reason="teardown")
        _, pending = await asyncio.wait([listener], timeout=10)
        if pending:  # it never joined the group (the bug this file is about)
            listener.cancel()


def socket_handshake(user_id: int, ip: str, token: TokenInfo | None = None) -> Handshake:
    return Handshake(ip=ip, ip_key=ip, origin=None, has_cookie=False, offers_marker=False,
                     presents_credential=token is not None, user_id=user_id, token=token)


class FakeSocket:
    """What the registry needs of a socket: its scope and the ASGI ``send``."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.closed = asyncio.Event()
        self.scope = {"type": "websocket", "path": "/ws/chat/lobby/",
                      "client": ["10.0.0.1", 50000], "headers": [],
                      "wsops": socket_handshake(42, "10.0.0.1",
                                                TokenInfo(1, TOKEN_PREFIX, [], None))}

    async def send(self, message: dict) -> None:
        self.sent.append(message)
        if message["type"] == "websocket.close":
            self.closed.set()


async def test_the_fixture_makes_a_freshly_booted_clock(fresh_clock):
    assert fresh_clock > 0  # the shift: how long the real clock has been running, minus 1 s
    assert 1.0 <= time.monotonic() < 60
    assert asyncio.get_running_loop().time() < 60  # asyncio reads the same clock
    before = time.monotonic()
    await asyncio.sleep(0.01)  # timers still fire: the shift is a constant
    assert time.monotonic() > before


async def test_first_socket_joins_the_workers_group_and_a_remote_close_reaches_it(
        fresh_clock, layer, registry):
    socket = FakeSocket()
    # add() waits until the worker listens (at most a second, then serves anyway):
    # the join must have happened when it returns, not be put off for an hour.
    await registry.add("member-1", connections.Entry(socket.scope, socket.send))
    assert registry.joined.is_set(), "the worker did not join wsops.workers"
    assert time.monotonic() < 60  # still a freshly booted host
    if hasattr(layer, "groups"):  # the in-memory layer shows its members
        assert len(layer.groups[connections.WORKERS_GROUP]) == 1

    assert await remote.disconnect({"token": TOKEN_PREFIX}, reason="revoked") is None
    await asyncio.wait_for(socket.closed.wait(), timeout=10)
    assert socket.sent == [{"type": "websocket.close", "code": codes.UNAUTHENTICATED}]


async def test_a_remote_close_for_someone_else_leaves_the_socket_open(fresh_clock, layer,
                                                                      registry):
    socket, other = FakeSocket(), FakeSocket()
    other.scope["wsops"] = socket_handshake(7, "10.0.0.2")
    await registry.add("member-1", connections.Entry(socket.scope, socket.send))
    await registry.add("member-2", connections.Entry(other.scope, other.send))
    assert await remote.disconnect({"user": "7"}, reason="blocked") is None
    await asyncio.wait_for(other.closed.wait(), timeout=10)
    assert socket.sent == []  # the close for user 7 left user 42's socket alone
