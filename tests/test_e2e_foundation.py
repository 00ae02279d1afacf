"""The harness end to end: the example project on a real daphne echoes a message."""

import pytest
from channels.db import database_sync_to_async

from wsops import tokens
from wsops.testing import LiveSocket

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


async def _echo_roundtrip(server, secret):
    socket = await LiveSocket.open(server.url(), token=secret)
    assert socket.accepted, socket.status
    assert socket.subprotocol == "wsops"
    await socket.send_json({"action": "echo", "text": "hello, daphne"})
    assert await socket.recv_json() == {"type": "echo", "text": "hello, daphne"}
    await socket.close()


def _token(make_user):
    user = make_user("echoer")
    return tokens.issue(user, name="e2e")[1]


async def test_echo_with_in_memory_channel_layer(daphne_server, make_user):
    secret = await database_sync_to_async(_token)(make_user)
    server = daphne_server()
    await _echo_roundtrip(server, secret)


async def test_echo_with_redis_channel_layer(daphne_server, make_user, redis_server):
    secret = await database_sync_to_async(_token)(make_user)
    server = daphne_server(redis=redis_server)
    await _echo_roundtrip(server, secret)
    client = redis_server.client()
    # channels-redis and wsops' token cache really used this Redis, under our prefix
    assert list(client.scan_iter(match=redis_server.prefix + "wsops:tok:*"))
