"""wsops.testing: SecureCommunicator (in process) and LiveSocket (real daphne) are one
interface, so a test written against one runs against the other; the packaging offers
LiveSocket's client as the ``wsops[testing]`` extra."""

from __future__ import annotations

import asyncio
import configparser

import pytest
from channels.db import database_sync_to_async

from tests.helpers import ROOT
from wsops import tokens
from wsops.testing import LiveSocket, SecureCommunicator, SocketClosed

pytestmark = pytest.mark.django_db(transaction=True)
PATH = "/ws/chat/lobby/"
SURFACE = {"accepted", "refused_before_accept", "status", "subprotocol", "close_code",
           "open", "connect", "outcome", "send", "send_text", "send_bytes", "send_json",
           "receive", "receive_json", "receive_close", "disconnect", "close",
           "__aenter__", "__aexit__"}


def public(obj) -> set[str]:
    return {name for name in dir(obj) if not name.startswith("_") or name in SURFACE}


def test_both_sockets_offer_the_same_names():
    in_process = SecureCommunicator(object(), PATH)
    live = LiveSocket("ws://127.0.0.1:1" + PATH)
    assert not SURFACE - public(in_process) and not SURFACE - public(live)
    assert (in_process.accepted, in_process.refused_before_accept, in_process.status,
            in_process.close_code) == (live.accepted, live.refused_before_accept, live.status,
                                       live.close_code) == (False, False, None, None)


class Sockets:
    """``sockets(**options)`` builds a socket of one kind; ``sockets.open(**options)``
    builds and connects it."""

    def __init__(self, kind: type, *where: object) -> None:
        self.kind, self.where = kind, where

    def __call__(self, **options):
        return self.kind(*self.where, **options)

    async def open(self, **options):
        return await self.kind.open(*self.where, **options)


@pytest.fixture(params=["in_process", "live"])
def connect(request, app) -> Sockets:
    """Sockets of either kind on the example chat. The live worker's channel layer is the
    test Redis, shared with this process, so `wstokens revoke --disconnect` reaches it;
    in process the in-memory layer does the same."""
    if request.param == "in_process":
        return Sockets(SecureCommunicator, app, PATH)
    redis = request.getfixturevalue("use_redis")
    server = request.getfixturevalue("daphne_server")(redis=redis)
    return Sockets(LiveSocket, server.url(PATH))


@pytest.fixture
def secret(make_user):
    user = make_user("tester", perms=("chat.send_message",))
    return tokens.issue(user, name="testing", scopes=["chat:write"])[1]


async def test_an_accepted_socket_exchanges_frames_and_sees_the_close(connect, secret):
    async with connect(token=secret) as socket:
        assert socket.accepted and not socket.refused_before_accept
        assert socket.subprotocol == "wsops" and socket.status is None
        await socket.send_json({"action": "echo", "text": "one", "id": 1})
        assert await socket.receive_json() == {"type": "echo", "text": "one", "id": 1}
        await socket.send_text("{not json")
        assert (await socket.receive_json())["code"] == "invalid_json"
        await socket.send("x" * 70_000)  # past MAX_MESSAGE_BYTES
        assert await socket.receive_close() == 1009
        assert socket.close_code == 1009
        with pytest.raises(SocketClosed):
            await socket.receive(timeout=5)


async def test_a_refused_handshake_looks_the_same(connect):
    socket = connect()  # anonymous, no Origin: refused before accept (403)
    outcome = await socket.connect()
    assert socket.refused_before_accept and not socket.accepted
    assert socket.status == outcome.status == 403 and socket.close_code is None
    assert outcome.refused_before_accept
    await socket.disconnect()


async def test_open_and_outcome(connect, secret):
    accepted = await connect(token=secret).outcome()
    assert accepted.accepted and accepted.close_code is None and accepted.subprotocol == "wsops"
    socket = await connect.open(token=secret)
    assert socket.accepted
    await socket.send_bytes(b"binary")  # the chat is text only: 1003
    assert await socket.receive_close() == 1003
    await socket.close()


async def test_receive_times_out_when_nothing_comes(connect, secret):
    async with connect(token=secret, timeout=10) as socket:
        with pytest.raises(asyncio.TimeoutError):
            await socket.receive_json(timeout=0.5)  # nothing is sent: the timeout is the point


async def test_a_revoked_token_closes_both_kinds(connect, make_user):
    """The remote close path: wstokens revoke --disconnect."""
    from django.core.management import call_command

    user = await database_sync_to_async(make_user)("revoked")
    token, secret = await database_sync_to_async(tokens.issue)(user)
    async with connect(token=secret) as socket:
        assert socket.accepted
        await database_sync_to_async(call_command)("wstokens", "revoke", token.prefix,
                                                   "--disconnect")
        assert await socket.receive_close() == 4401


def test_setup_cfg_offers_the_testing_extra_and_says_asgi():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    extras = config["options.extras_require"]
    assert "websockets" in extras["testing"]
    classifiers = config["metadata"]["classifiers"].split("\n")
    assert "Topic :: Internet :: WWW/HTTP :: HTTP Servers" in classifiers
    assert "Environment :: Web Environment" in classifiers
    assert "Framework :: Django :: 5.2" in classifiers
    assert not [c for c in classifiers if "WSGI" in c]
