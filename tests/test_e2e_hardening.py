"""The security review's attacks, replayed against real daphne workers and a real Redis.

In-process variants of each are in ``test_hardening.py``; these prove the same
on the wire: what daphne really reports as the peer (``::ffff:127.0.0.1`` when
bound to ``::``), what it really decodes into the path, and what a client
rotating through one IPv6 /64 behind a trusted proxy really gets.
"""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command

from tests.helpers import configure_redis
from wsops import tokens
from wsops.testing import LiveSocket

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def redis(settings, private_redis):
    return configure_redis(settings, private_redis)


@pytest.fixture
def secrets_for(make_user):
    @database_sync_to_async
    def make(count: int, prefix: str = "u") -> list[str]:
        return [tokens.issue(make_user(f"{prefix}{n}"))[1] for n in range(count)]

    return make


async def test_ipv4_ban_holds_for_a_dual_stack_daphne(daphne_server, redis, secrets_for):
    """Bound to ``::``, daphne reports IPv4 clients as ``::ffff:127.0.0.1``."""
    server = daphne_server(redis=redis, extra_args=["-b", "::"])
    [secret] = await secrets_for(1)
    before = await LiveSocket.open(server.url(), token=secret)
    assert before.accepted
    await before.close()
    await database_sync_to_async(call_command)("wsratelimit", "block", "ip:127.0.0.1",
                                               "--for", "1h", "--reason", "test")
    after = await LiveSocket.open(server.url(), token=secret)
    assert not after.accepted and after.status == 403
    assert "wsops banned refused: test (ip=127.0.0.1 " in server.output()


async def test_rotating_through_one_ipv6_64_does_not_escape_the_connect_rate(
        daphne_server, redis, secrets_for):
    """The review's case: a 3/m rate admitted 12 of 12 from one /64."""
    server = daphne_server(redis=redis, wsops={"RATES": {"connect": "3/m"},
                                               "TRUSTED_PROXIES": ["127.0.0.1"]})
    secrets = await secrets_for(13)
    accepted = []
    for n, secret in enumerate(secrets[:12]):
        socket = await LiveSocket.open(
            server.url(), token=secret, headers={"x-forwarded-for": f"2001:db8:1:2::{n + 1:x}"})
        accepted.append(socket.accepted)
        await socket.close()
    assert accepted.count(True) == 3, accepted
    elsewhere = await LiveSocket.open(server.url(), token=secrets[12],
                                      headers={"x-forwarded-for": "2001:db8:1:3::1"})
    assert elsewhere.accepted  # another /64 is another client
    await elsewhere.close()


async def test_cidr_ban_on_a_live_worker(daphne_server, redis, secrets_for):
    server = daphne_server(redis=redis, wsops={"TRUSTED_PROXIES": ["127.0.0.1"]})
    inside, outside = await secrets_for(2)
    await database_sync_to_async(call_command)("wsratelimit", "block", "ip:2001:db8::/48",
                                               "--for", "1h")
    refused = await LiveSocket.open(server.url(), token=inside,
                                    headers={"x-forwarded-for": "2001:db8:0:abcd::7"})
    assert not refused.accepted and refused.status == 403
    admitted = await LiveSocket.open(server.url(), token=outside,
                                     headers={"x-forwarded-for": "2001:db8:1::7"})
    assert admitted.accepted
    await admitted.close()


async def test_a_percent_encoded_newline_cannot_forge_a_log_line(daphne_server):
    server = daphne_server()
    forged = "2026-11-23 12:00:00 WARNING wsops banned refused: forged"
    socket = await LiveSocket.open(
        server.url("/ws/chat/x%0a" + forged.replace(" ", "%20") + "/"),
        origin="https://evil.example")
    assert not socket.accepted and socket.status == 403
    lines = server.output().splitlines()
    assert not any(line.startswith(forged) for line in lines)
    refused = [line for line in lines if "wsops origin refused" in line]
    assert len(refused) == 1 and "\\n2026-11-23" in refused[0]


async def test_explained_refusals_reach_the_client_through_daphne(daphne_server):
    """The reason is in the 403 status line before accept, and in the close frame after."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    before = daphne_server(wsops={"EXPLAIN_REFUSALS": True})
    with pytest.raises(InvalidStatus) as refused:
        await connect(before.url(), origin="https://evil.example", open_timeout=10, proxy=None)
    assert refused.value.response.status_code == 403
    assert refused.value.response.reason_phrase == "origin_not_allowed"

    after = daphne_server(wsops={"EXPLAIN_REFUSALS": True, "REJECT_WITH": "close_code"})
    async with connect(after.url(), origin="https://evil.example", open_timeout=10,
                       proxy=None) as socket:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), timeout=10)
    assert closed.value.rcvd.code == 4403 and closed.value.rcvd.reason == "origin_not_allowed"

    quiet = daphne_server(wsops={"EXPLAIN_REFUSALS": False})
    with pytest.raises(InvalidStatus) as refused:
        await connect(quiet.url(), origin="https://evil.example", open_timeout=10, proxy=None)
    assert refused.value.response.reason_phrase == "Access denied"  # daphne's own


async def test_a_non_ascii_subprotocol_header_is_refused_with_one_event(daphne_server):
    """daphne itself decodes the header as ASCII: without wsops it answers 500."""
    server = daphne_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /ws/chat/lobby/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n"
                 b"Sec-WebSocket-Protocol: wsops, wst_\xc3\xa9\r\n\r\n")
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), timeout=10)
    writer.close()
    assert status.startswith(b"HTTP/1.1 400")
    output = server.output()
    assert "Traceback" not in output
    assert output.count("wsops invalid_input refused: non_ascii_handshake") == 1
