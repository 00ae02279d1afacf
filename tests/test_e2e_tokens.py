"""Tokens and tickets across two real daphne workers sharing one Redis."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command

from wsops import tickets, tokens
from wsops.testing import LiveSocket

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def two_workers(daphne_server, use_redis):
    return daphne_server(redis=use_redis), daphne_server(redis=use_redis)


async def test_one_ticket_raced_on_two_workers_admits_exactly_one(two_workers, make_user):
    first, second = two_workers
    user = await database_sync_to_async(make_user)("racer")
    for _ in range(5):
        ticket = await database_sync_to_async(tickets.issue)(user)
        results = await asyncio.gather(
            LiveSocket.open(first.url(), ticket=ticket[0]),
            LiveSocket.open(second.url(), ticket=ticket[0]),
        )
        assert sorted(s.accepted for s in results) == [False, True]
        assert [s.status for s in results if not s.accepted] == [403]
        for socket in results:
            await socket.close()


async def test_revoke_disconnect_reaches_another_worker_within_a_second(two_workers,
                                                                        make_user):
    _, second = two_workers
    user = await database_sync_to_async(make_user)("svc")
    token, secret = await database_sync_to_async(tokens.issue)(user)
    socket = await LiveSocket.open(second.url(), token=secret)
    assert socket.accepted
    await database_sync_to_async(call_command)("wstokens", "revoke", token.prefix,
                                               "--disconnect")
    # The push closes it: the periodic re-check would wait TOKEN_CACHE_SECONDS (30 s).
    assert await socket.receive_close(timeout=10) == 4401


async def test_revoked_token_is_refused_on_every_worker_despite_the_cache(two_workers,
                                                                          make_user):
    first, second = two_workers
    user = await database_sync_to_async(make_user)("svc")
    token, secret = await database_sync_to_async(tokens.issue)(user)
    for worker in (first, second):  # both verify it, so it is in the shared cache
        socket = await LiveSocket.open(worker.url(), token=secret)
        assert socket.accepted
        await socket.close()
    await database_sync_to_async(tokens.revoke)([token])
    for worker in (first, second):
        assert (await LiveSocket.open(worker.url(), token=secret)).status == 403


async def test_revoke_disconnect_with_the_channel_layer_down_still_revokes(settings, make_user,
                                                                          private_redis):
    from io import StringIO

    from tests.helpers import configure_redis
    from wsops.models import WebSocketToken

    configure_redis(settings, private_redis)
    user = await database_sync_to_async(make_user)("svc")
    token, _ = await database_sync_to_async(tokens.issue)(user)
    private_redis.kill()
    err = StringIO()
    with pytest.raises(SystemExit) as exit_info:
        await database_sync_to_async(call_command)("wstokens", "revoke", token.prefix,
                                                   "--disconnect", stdout=StringIO(), stderr=err)
    assert exit_info.value.code == 1
    assert "live sockets could not be closed" in err.getvalue()
    revoked = await database_sync_to_async(WebSocketToken.objects.get)(pk=token.pk)
    assert revoked.revoked_at is not None
