"""Metrics of two real daphne workers sharing a multiprocess directory, scraped through one.

The test drives accepted and refused handshakes, good and bad messages and a Redis
outage on both workers, then scrapes ``/ws/metrics`` through the first worker and
checks every total against what it did (the second worker's counts included).
"""

import asyncio
import urllib.error
import urllib.request

import pytest
from channels.db import database_sync_to_async
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import configure_redis
from wsops import tokens
from wsops.testing import LiveSocket

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def scrape(server, headers=None):
    """``(status, samples)``: samples map ``(name, frozenset(labels))`` to values."""
    request = urllib.request.Request(server.http_url("/ws/metrics"), headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, {}
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return 200, samples


def total(samples, name, **labels):
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (sample, found), value in samples.items()
               if sample == name and wanted <= found)


async def test_two_workers_one_scrape_sees_everything(daphne_server, settings, private_redis,
                                                      make_user, tmp_path):
    redis = configure_redis(settings, private_redis)
    shared = tmp_path / "metrics"
    shared.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared), "WSOPS_TEST_LAYER": "memory"}
    one = daphne_server(redis=redis, env=env)
    two = daphne_server(redis=redis, env=env, extra_args=["--proxy-headers"])
    secret = await database_sync_to_async(
        lambda: tokens.issue(make_user("alice", perms=("chat.send_message",)),
                             scopes=["chat:write"])[1])()
    forged = "wst_" + "Z" * 43

    # Accepted: three token sockets, two on the second worker. One stays open.
    sockets = [await LiveSocket.open(worker.url(), token=secret) for worker in (one, two, two)]
    assert all(socket.accepted for socket in sockets)
    # Good and bad messages, on both workers.
    for socket in sockets[:2]:
        await socket.send_json({"action": "echo", "text": "hi"})
        assert (await socket.recv_json())["type"] == "echo"
    await sockets[0].send_text("{not json")
    assert (await sockets[0].recv_json())["code"] == "invalid_json"
    await sockets[1].send_json({"action": "nope"})
    assert (await sockets[1].recv_json())["code"] == "unknown_action"
    await sockets[1].send_json({"action": "echo"})
    assert (await sockets[1].recv_json())["code"] == "invalid"
    for socket in sockets[1:]:
        await socket.close()
    # Refused: an unknown token on each worker, an anonymous socket, a hostile page.
    for worker in (one, two):
        assert (await LiveSocket.open(worker.url(), token=forged)).refused_before_accept
    assert (await LiveSocket.open(one.url())).refused_before_accept
    hostile = await LiveSocket.open(two.url(), origin="https://evil.example",
                                    cookies={"sessionid": "x"})
    assert hostile.refused_before_accept
    # A Redis outage: new sockets on both workers are told to come back later (1013).
    redis.kill()
    for worker in (one, two):
        attempt = await LiveSocket.open(worker.url(), token=secret)
        assert attempt.accepted and await attempt.receive_close() == 1013

    status, samples = await asyncio.to_thread(scrape, one)
    assert status == 200
    handshakes = "wsops_handshakes_total"
    assert total(samples, handshakes, outcome="accepted", transport="subprotocol") == 3
    assert total(samples, handshakes, outcome="refused", reason="unknown_token",
                 transport="subprotocol") == 2
    assert total(samples, handshakes, outcome="refused", reason="connect_permission",
                 transport="none") == 1
    assert total(samples, handshakes, outcome="refused", reason="origin_not_allowed") == 1
    assert total(samples, handshakes, outcome="refused", reason="redis_unavailable") == 2
    assert total(samples, handshakes) == 9
    assert total(samples, "wsops_open_sockets") == 1  # summed over both workers
    assert total(samples, "wsops_closes_total", code="1000") == 2
    assert total(samples, "wsops_messages_total", outcome="ok") == 2
    assert total(samples, "wsops_messages_total", outcome="refused", code="invalid_json") == 1
    assert total(samples, "wsops_messages_total", outcome="refused", code="unknown_action") == 1
    assert total(samples, "wsops_messages_total", outcome="refused", code="invalid") == 1
    # One verification from the database, two from the shared cache; the forged token
    # was looked up in the cache on each worker (misses) before the database refused it.
    assert total(samples, "wsops_token_cache_total", result="miss") == 3
    assert total(samples, "wsops_token_cache_total", result="hit") == 2
    up = {dict(labels)["pid"]: value for (name, labels), value in samples.items()
          if name == "wsops_redis_up"}
    assert sorted(up) == sorted(str(w.process.pid) for w in (one, two))
    assert set(up.values()) == {0.0}  # each worker saw the outage
    admits = total(samples, "wsops_redis_seconds_count", operation="admit")
    assert admits >= 9  # every handshake asked the limiter at least once
    # Through the second worker the same totals, and a client from outside gets a 404.
    status, again = await asyncio.to_thread(scrape, two)
    assert status == 200 and total(again, handshakes) == 9
    status, _ = await asyncio.to_thread(scrape, two, {"X-Forwarded-For": "203.0.113.9"})
    assert status == 404
    one.kill()  # dies with its socket open: that socket stops counting at the next scrape
    status, after = await asyncio.to_thread(scrape, two)
    assert status == 200 and total(after, "wsops_open_sockets") == 0
    assert total(after, handshakes) == 9  # its counters stay in the sums
    assert [dict(labels)["pid"] for (name, labels) in after if name == "wsops_redis_up"] == [
        str(two.process.pid)]
