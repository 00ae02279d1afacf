"""The limits engine on a real Redis: GCRA, one round trip, caps, bans, and wsoperators."""

import asyncio
import io
import json
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.helpers import configure_redis
from wsops import store
from wsops.limits import operators
from wsops.limits.engine import (
    BANNED,
    OVER_CAP,
    OVER_RATE,
    Cap,
    Limit,
    LocalLimiter,
    RedisLimiter,
)
from wsops.limits.keys import ban_key, cap_key, rate_key
from wsops.limits.operators import Identity
from wsops.units import Rate


@pytest.fixture
def redis(settings, private_redis):
    """A private Redis (clean command statistics), wired into this process."""
    configure_redis(settings, private_redis)
    return private_redis


def commandstats(client):
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}


async def test_a_shared_decision_is_one_round_trip(redis, monkeypatch):
    from redis.asyncio.connection import Connection

    limiter = RedisLimiter()
    limits = (Limit(rate_key("connect", "ip", "1.1.1.1"), Rate(10, 60)),
              Limit(rate_key("connect", "user", "7"), Rate(10, 60)))
    await limiter.admit(limits=limits)  # loads the script once
    replies = []
    original = Connection.read_response

    async def counted(self, *args, **kwargs):
        replies.append(1)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(Connection, "read_response", counted)
    client = redis.client()
    before = commandstats(client)
    for _ in range(5):
        assert (await limiter.admit(bans=(ban_key("ip", "1.1.1.1"),), limits=limits,
                                    caps=(Cap(cap_key("ip", "1.1.1.1"), 100),),
                                    member="m1", ttl=30)).allowed
    assert len(replies) == 5  # one request/response per decision
    assert commandstats(client)["evalsha"] - before["evalsha"] == 5


async def test_script_is_reloaded_after_script_flush(redis):
    limiter = RedisLimiter()
    limit = (Limit(rate_key("connect", "ip", "2.2.2.2"), Rate(10, 60)),)
    assert (await limiter.admit(limits=limit)).allowed
    redis.client().script_flush()
    assert (await limiter.admit(limits=limit)).allowed


@pytest.mark.parametrize("limiter_class", [RedisLimiter, LocalLimiter])
async def test_gcra_burst_then_sustained_rate(redis, limiter_class):
    limiter = limiter_class()
    limit = (Limit(rate_key("message", "user", "1"), Rate(5, 2)),)  # 5 per 2 s, 0.4 s apart
    results = [await limiter.admit(limits=limit) for _ in range(6)]
    assert [r.allowed for r in results] == [True] * 5 + [False]
    assert results[-1].outcome == OVER_RATE and 0.3 < results[-1].retry_after <= 0.41
    await asyncio.sleep(0.45)
    assert (await limiter.admit(limits=limit)).allowed
    assert not (await limiter.admit(limits=limit)).allowed


@pytest.mark.parametrize("limiter_class", [RedisLimiter, LocalLimiter])
async def test_no_doubling_at_a_window_edge(redis, limiter_class):
    """A fixed window admits 2x at its edge; GCRA admits the burst and one more interval."""
    limiter = limiter_class()
    limit = (Limit(rate_key("connect", "ip", "3.3.3.3"), Rate(20, 1)),)
    await asyncio.sleep(1 - (time.time() % 1) + 0.9)  # 0.9 s into a second
    before_edge = [(await limiter.admit(limits=limit)).allowed for _ in range(20)]
    await asyncio.sleep(1 - (time.time() % 1) + 0.02)  # just past the next second
    after_edge = [(await limiter.admit(limits=limit)).allowed for _ in range(20)]
    assert all(before_edge)
    assert sum(after_edge) <= 3  # ~0.12 s elapsed: at most 2-3 intervals of 50 ms


async def test_refused_events_are_not_charged(redis):
    limiter = RedisLimiter()
    ip_limit = Limit(rate_key("connect", "ip", "4.4.4.4"), Rate(100, 60))
    user_limit = Limit(rate_key("connect", "user", "4"), Rate(1, 60))
    assert (await limiter.admit(limits=(ip_limit, user_limit))).allowed
    for _ in range(5):
        assert not (await limiter.admit(limits=(ip_limit, user_limit))).allowed
    raw = redis.client().get(ip_limit.key)
    tat, count, period = raw.split("|")
    assert (count, period) == ("100", "60000")
    # only the one allowed event moved the IP's TAT: 0.6 s of 60 s
    assert float(tat) - time.time() * 1000 < 700


@pytest.mark.parametrize("limiter_class", [RedisLimiter, LocalLimiter])
async def test_caps_release_and_expiry(redis, limiter_class):
    limiter = limiter_class()
    cap = (Cap(cap_key("user", "9"), 2),)
    assert (await limiter.admit(caps=cap, member="a", ttl=1)).allowed
    assert (await limiter.admit(caps=cap, member="b", ttl=1)).allowed
    assert (await limiter.admit(caps=cap, member="c", ttl=1)).outcome == OVER_CAP
    await limiter.release(cap, "a")
    assert (await limiter.admit(caps=cap, member="c", ttl=1)).allowed
    await asyncio.sleep(0.6)
    await limiter.refresh([(cap[0].key, "c")], ttl=1)  # c is alive, b is not refreshed
    await asyncio.sleep(0.6)
    assert (await limiter.admit(caps=cap, member="d", ttl=1)).allowed  # b expired
    assert (await limiter.admit(caps=cap, member="e", ttl=1)).outcome == OVER_CAP


async def test_ban_is_refused_with_its_reason(redis):
    operators.ban(redis.client(), Identity("ip", "5.5.5.5"), 60, "scraping")
    decision = await RedisLimiter().admit(bans=(ban_key("ip", "5.5.5.5"),))
    assert decision.outcome == BANNED and decision.ban["reason"] == "scraping"
    assert operators.unban(redis.client(), Identity("ip", "5.5.5.5"))
    assert (await RedisLimiter().admit(bans=(ban_key("ip", "5.5.5.5"),))).allowed


async def test_unreachable_redis_is_store_unavailable_quickly(redis):
    redis.kill()
    started = time.monotonic()
    with pytest.raises(store.StoreUnavailable):
        await RedisLimiter().admit(limits=(Limit(rate_key("connect", "ip", "x"), Rate(1, 1)),))
    assert time.monotonic() - started < 1


# --- wsratelimit ----------------------------------------------------------------------


def wsratelimit(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("wsratelimit", *args, stdout=out, stderr=err)
    return out.getvalue()


@pytest.mark.django_db
async def test_show_matches_the_counters_in_text_and_json(redis, make_user):
    limiter = RedisLimiter()
    for _ in range(3):
        await limiter.admit(limits=(Limit(rate_key("connect", "ip", "6.6.6.6"), Rate(10, 60)),))
    await limiter.admit(limits=(Limit(rate_key("user_message", "user", "42"), Rate(5, 60)),))
    await limiter.admit(caps=(Cap(cap_key("user", "42"), 20),), member="w:1", ttl=30)
    await limiter.admit(caps=(Cap(cap_key("user", "42"), 20),), member="w:2", ttl=30)
    client = redis.client()
    operators.ban(client, Identity("ip", "7.7.7.7"), 3600, "abuse")

    from asgiref.sync import sync_to_async

    data = json.loads(await sync_to_async(wsratelimit)("show", "--json"))
    counters = {(c["scope"], c["kind"], c["id"]): c for c in data["counters"]}
    assert counters[("connect", "ip", "6.6.6.6")]["used"] == 3
    assert counters[("connect", "ip", "6.6.6.6")]["limit"] == 10
    assert 17 < counters[("connect", "ip", "6.6.6.6")]["reset_in"] <= 18
    assert counters[("user_message", "user", "42")]["used"] == 1
    assert data["connections"] == [{"kind": "user", "id": "42", "live": 2, "cap": 50}]
    assert data["bans"][0]["id"] == "7.7.7.7" and data["bans"][0]["reason"] == "abuse"
    assert 3590 < data["bans"][0]["expires_in"] <= 3600

    text = await sync_to_async(wsratelimit)("show")
    assert "connect" in text and "ip:6.6.6.6" in text and "3" in text
    assert "user:42" in text and "abuse" in text
    only = json.loads(await sync_to_async(wsratelimit)("show", "--ident", "ip:6.6.6.6",
                                                       "--json"))
    assert [c["id"] for c in only["counters"]] == ["6.6.6.6"]

    top = json.loads(await sync_to_async(wsratelimit)("top", "--json", "-n", "1"))
    assert top[0]["identity"] == "ip:6.6.6.6"
    assert "Reset 1 counter(s) of ip:6.6.6.6" in await sync_to_async(wsratelimit)(
        "reset", "ip:6.6.6.6")
    assert not json.loads(await sync_to_async(wsratelimit)(
        "show", "--ident", "ip:6.6.6.6", "--json"))["counters"]


@pytest.mark.django_db
def test_block_unblock_and_mistakes(redis, make_user):
    user = make_user("mallory")
    assert "Blocked user:" in wsratelimit("block", "user:mallory", "--for", "1h",
                                          "--reason", "spam")
    assert redis.client().exists(ban_key("user", user.pk))
    assert "Unblocked" in wsratelimit("unblock", f"user:{user.pk}")
    assert "was not blocked" in wsratelimit("unblock", f"user:{user.pk}")
    for args in (["block", "ip:999.1.1.1", "--for", "1h"], ["block", "ip:1.1.1.1", "--for", "x"],
                 ["block", "host:x", "--for", "1h"], ["reset", "user:ghost"]):
        with pytest.raises(CommandError) as error:
            wsratelimit(*args)
        assert error.value.returncode == 2


@pytest.mark.django_db
def test_unreachable_redis_is_one_line_exit_2_with_masked_password(settings):
    settings.WSOPS = {**settings.WSOPS, "REDIS_URL": "redis://:hunter2@127.0.0.1:1/0"}
    with pytest.raises(CommandError) as error:
        wsratelimit("show")
    message = str(error.value)
    assert error.value.returncode == 2 and "\n" not in message
    assert "hunter2" not in message and "redis://:***@127.0.0.1:1/0" in message


def test_scan_on_a_redis_with_many_unrelated_keys(redis):
    client = redis.client()
    with client.pipeline(transaction=False) as pipe:
        for index in range(200_000):
            pipe.set(f"unrelated:{index}", 1)
        pipe.execute()
    client.set(rate_key("connect", "ip", "8.8.8.8"), f"{time.time() * 1000 + 5000}|10|60000",
               px=5000)
    started = time.monotonic()
    data = operators.snapshot(client)
    assert time.monotonic() - started < 5
    assert [c["id"] for c in data["counters"]] == ["8.8.8.8"]


def test_top_watch_redraws_in_place(redis):
    client = redis.client()
    client.set(rate_key("connect", "ip", "9.9.9.9"), f"{time.time() * 1000 + 9000}|10|60000",
               px=9000)
    out = wsratelimit("top", "--watch", "--interval", "0.1", "--count", "2")
    assert out.count("\033[H\033[J") == 2 and out.count("ip:9.9.9.9") == 2
    assert "wsratelimit top (every 0.1s" in out


@pytest.mark.django_db
def test_show_refuses_a_scope_no_counter_can_have(redis):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="unknown scope 'nope'"):
        wsratelimit("show", "--scope", "nope")
    for scope in ("connect", "user_message", "action.send_message", "connections", "bans"):
        wsratelimit("show", "--scope", scope)
