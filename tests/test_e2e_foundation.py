"""The harness end to end: the example project on a real daphne echoes a message, on a
worker whose monotonic clock starts near zero (as on a freshly booted host)."""

import re

import pytest
from channels.db import database_sync_to_async

from tests import fresh_clock
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


def test_daphne_workers_run_on_a_freshly_booted_clock(daphne_server):
    server = daphne_server()
    started = re.search(r"fresh_clock: time\.monotonic\(\)=([\d.]+)", server.output())
    assert started, server.output()
    if fresh_clock.SETTING != "real":  # 1 s, as on a host up for a second, unless told
        assert 0 <= float(started.group(1)) - float(fresh_clock.SETTING or 1.0) < 5
