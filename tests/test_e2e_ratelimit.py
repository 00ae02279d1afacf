"""Rate limits, caps, bans and fail modes on real daphne workers and a real Redis."""

import asyncio
import io
import time

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command

from tests.helpers import configure_redis, echoes_in_turn, handshakes_in_turn
from wsops.testing import LiveSocket

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def redis(settings, private_redis):
    return configure_redis(settings, private_redis)


async def test_connect_rate_holds_across_two_workers(daphne_server, redis, secret_for):
    wsops = {"RATES": {"connect": "5/m"}}
    workers = [daphne_server(redis=redis, wsops=wsops) for _ in range(2)]
    secret = await secret_for()
    assert await handshakes_in_turn(workers, secret, 8) == [True] * 5 + [False] * 3
    assert "throttle refused: connect_rate" in workers[0].output() + workers[1].output()


async def test_throttled_connect_with_close_code(daphne_server, redis, secret_for):
    server = daphne_server(redis=redis, wsops={"RATES": {"connect": "1/m"},
                                               "REJECT_WITH": "close_code"})
    secret = await secret_for()
    first = await LiveSocket.open(server.url(), token=secret)
    second = await LiveSocket.open(server.url(), token=secret)
    assert first.accepted and second.accepted
    assert await second.receive_close() == 4429
    await first.close()


async def test_user_message_rate_spans_sockets_on_two_workers(daphne_server, redis, secret_for):
    wsops = {"RATES": {"user_message": "6/m"}, "THROTTLE_CLOSE_AFTER": 50}
    one, two = (daphne_server(redis=redis, wsops=wsops) for _ in range(2))
    secret = await secret_for()
    sockets = [await LiveSocket.open(one.url(), token=secret),
               await LiveSocket.open(two.url(), token=secret)]
    assert await echoes_in_turn(sockets, 10) == ["echo"] * 6 + ["error"] * 4
    for socket in sockets:
        await socket.close()


async def test_connection_cap_frees_on_close_and_after_a_worker_dies(daphne_server, redis,
                                                                     secret_for):
    wsops = {"MAX_CONNECTIONS_PER_USER": 2, "CONNECTION_TTL": 6}
    one, two = (daphne_server(redis=redis, wsops=wsops) for _ in range(2))
    secret = await secret_for()
    held = await LiveSocket.open(one.url(), token=secret)
    other = await LiveSocket.open(two.url(), token=secret)
    assert held.accepted and other.accepted
    assert (await LiveSocket.open(two.url(), token=secret)).status == 403
    await other.close()

    async def admitted() -> LiveSocket | None:
        """Poll (generous deadline) until a new socket is admitted."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            socket = await LiveSocket.open(two.url(), token=secret)
            if socket.accepted:
                return socket
            await asyncio.sleep(0.5)
        return None

    replacement = await admitted()
    assert replacement is not None  # a normal close frees the slot (at once, modulo the close)
    assert (await LiveSocket.open(two.url(), token=secret)).status == 403
    await asyncio.sleep(8)  # longer than CONNECTION_TTL: held stays counted, being refreshed
    assert (await LiveSocket.open(two.url(), token=secret)).status == 403
    one.kill()  # held's worker dies without closing anything
    freed = await admitted()
    assert freed is not None, "a dead worker's slot must free within the TTL"
    await freed.close()
    await replacement.close()


async def test_block_disconnect_and_unblock(daphne_server, redis, secret_for, make_user):
    server = daphne_server(redis=redis)
    secret = await secret_for("mallory")
    live = await LiveSocket.open(server.url(), token=secret)
    assert live.accepted

    def wsratelimit(*args):
        out = io.StringIO()
        call_command("wsratelimit", *args, stdout=out)
        return out.getvalue()

    await database_sync_to_async(wsratelimit)("block", "user:mallory", "--for", "1h",
                                              "--reason", "spam", "--disconnect")
    assert await live.receive_close() == 4403
    assert (await LiveSocket.open(server.url(), token=secret)).status == 403
    assert "banned refused: spam" in server.output()
    await database_sync_to_async(wsratelimit)("unblock", "user:mallory")
    again = await LiveSocket.open(server.url(), token=secret)
    assert again.accepted
    await again.close()


@pytest.mark.parametrize("fail_mode", ["closed", "open"])
async def test_redis_outage_and_recovery(daphne_server, redis, secret_for, fail_mode):
    server = daphne_server(redis=redis, wsops={"FAIL_MODE": fail_mode},
                           env={"WSOPS_TEST_LAYER": "memory"})
    secret = await secret_for()
    survivor = await LiveSocket.open(server.url(), token=secret)
    assert survivor.accepted
    redis.kill()
    for _ in range(3):
        attempt = await LiveSocket.open(server.url(), token=secret)
        if fail_mode == "closed":
            assert attempt.accepted and await attempt.receive_close() == 1013
        else:
            assert attempt.accepted
            await attempt.send_json({"action": "echo", "text": "degraded"})
            assert (await attempt.recv_json())["text"] == "degraded"
            await attempt.close()
    await survivor.send_json({"action": "echo", "text": "still open"})
    assert (await survivor.recv_json())["text"] == "still open"
    redis.start()
    recovered = await LiveSocket.open(server.url(), token=secret)
    assert recovered.accepted
    await recovered.send_json({"action": "echo", "text": "back"})
    assert (await recovered.recv_json())["text"] == "back"
    await recovered.close()
    await survivor.close()
    log = server.output()
    assert server.process.poll() is None, "the worker must not crash"
    assert log.count("is unreachable") == 1 and log.count("is reachable again") == 1
