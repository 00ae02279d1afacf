"""wsops.push and wsops.presence in process, the registry read in one round trip on
Redis, and the rate keys of @action (key=, group=)."""

import hashlib

import pytest
from channels.db import database_sync_to_async
from django.core.exceptions import ImproperlyConfigured

from tests.helpers import configure_redis
from wsops import presence, push, tokens
from wsops.consumers import action
from wsops.limits.keys import action_key, cap_key

pytestmark = pytest.mark.django_db(transaction=True)
PATH = "/ws/chat/lobby/"


@pytest.fixture
def token_for(make_user):
    @database_sync_to_async
    def make(username="alice"):
        user = make_user(username, perms=("chat.send_message",))
        row, secret = tokens.issue(user, scopes=["chat:write"])
        return user, row, secret

    return make


def notice(text):
    return {"type": "chat.message", "text": text, "user": "server"}


async def test_push_reaches_each_socket_of_the_user_in_order_and_no_one_else(app, token_for):
    from wsops.testing import SecureCommunicator

    alice, _, secret = await token_for("alice")
    _, _, other = await token_for("bob")
    async with SecureCommunicator(app, PATH, token=secret) as one, \
            SecureCommunicator(app, PATH, token=secret) as two, \
            SecureCommunicator(app, PATH, token=other) as bob:
        assert await presence.aconnection_count(alice.pk) == 2
        for n in range(5):
            assert await push.asend_to_user(alice.pk, notice(f"n{n}")) == 1  # one worker
        for socket in (one, two):
            texts = [(await socket.receive_json())["text"] for _ in range(5)]
            assert texts == [f"n{n}" for n in range(5)]
        await bob.send_json({"action": "echo", "text": "next"})
        assert (await bob.receive_json())["type"] == "echo"  # no push came first
    assert not await presence.ais_online(alice.pk)
    assert await push.asend_to_user(alice.pk, notice("gone")) == 0  # no socket: no message
    assert await push.asend_to_user(987654, notice("nobody")) == 0


async def test_push_to_a_token_and_to_one_connection(app, token_for):
    from wsops.testing import SecureCommunicator

    alice, row, secret = await token_for("alice")
    _, second = await database_sync_to_async(tokens.issue)(alice, scopes=["chat:write"])
    async with SecureCommunicator(app, PATH, token=secret) as first, \
            SecureCommunicator(app, PATH, token=second) as other:
        assert await push.asend_to_token(row.prefix, notice("to the token")) == 1
        assert (await first.receive_json())["text"] == "to the token"
        await other.send_json({"action": "whoami"})
        whoami = await other.receive_json()
        assert whoami["type"] == "whoami"  # the other token's socket got nothing
        _, second_id = registered(alice.pk)  # in the order the sockets connected
        assert await push.asend_to_connection(second_id, notice("just you")) == 1
        assert (await other.receive_json())["text"] == "just you"
        await first.send_json({"action": "whoami"})
        assert (await first.receive_json())["type"] == "whoami"
    assert await push.asend_to_token("wst_unknown0", notice("x")) == 0


def registered(user_id):
    """The user's connection ids in this process' registry (no Redis here)."""
    from wsops.limits.engine import get_limiter

    return list(get_limiter().registry[cap_key("user", user_id)])


async def test_a_push_is_refused_at_the_sender(settings):
    settings.WSOPS = {**settings.WSOPS, "MAX_MESSAGE_BYTES": 1024}
    with pytest.raises(push.PushRefused, match=r"push of \d+ bytes refused: more than "
                                                r'WSOPS\["MAX_MESSAGE_BYTES"\] \(1024 bytes\)'):
        await push.asend_to_user(1, notice("x" * 2000))
    for bad in ({"text": "no type"}, "chat.message", {"type": "websocket.close"},
                {"type": "wsops.disconnect"}, {"type": "x", "data": {1, 2}}):
        with pytest.raises(push.PushRefused):
            push.send_to_user(1, bad)
    with pytest.raises(push.PushRefused, match="not a wsops connection id"):
        push.send_to_connection("nonsense", notice("x"))


def test_presence_and_push_need_the_per_user_registry(settings):
    settings.WSOPS = {**settings.WSOPS, "MAX_CONNECTIONS_PER_USER": None}
    with pytest.raises(ImproperlyConfigured, match="MAX_CONNECTIONS_PER_USER"):
        presence.is_online(1)
    with pytest.raises(ImproperlyConfigured, match="MAX_CONNECTIONS_PER_USER"):
        push.send_to_user(1, notice("x"))


@pytest.fixture
def redis(settings, private_redis):
    return configure_redis(settings, private_redis)


def commandstats(client):
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}


def test_a_thousand_users_are_checked_in_one_round_trip(redis, monkeypatch):
    from redis.connection import Connection

    client = redis.client()
    seconds, _ = client.time()
    live, dead = (int(seconds) + 600) * 1000, (int(seconds) - 5) * 1000
    for user_id in range(1000):
        if user_id % 3 == 0:
            client.zadd(cap_key("user", user_id), {f"w1:{user_id}": live, f"w2:{user_id}": live})
        elif user_id % 3 == 1:
            client.zadd(cap_key("user", user_id), {f"w9:{user_id}": dead})  # a dead worker's
    presence.online_users([0])  # loads the script once
    replies = []
    original = Connection.read_response

    def counted(self, *args, **kwargs):
        replies.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Connection, "read_response", counted)
    before = commandstats(client)
    replies.clear()
    online = presence.online_users(range(1000))
    trips = len(replies)
    after = commandstats(client)
    assert online == set(range(0, 1000, 3))
    assert trips == 1  # one request/response for the batch
    assert after["evalsha"] - before["evalsha"] == 1
    assert after["zcount"] - before["zcount"] == 1000  # inside the script, no trip each
    assert presence.connection_count(3) == 2 and presence.connection_count(4) == 0


async def test_async_presence_on_redis(redis):
    client = redis.client()
    seconds, _ = client.time()
    client.zadd(cap_key("user", 7), {"w1:1": (int(seconds) + 600) * 1000})
    assert await presence.aonline_users([7, 8, 7]) == {7}
    assert await presence.ais_online(7) and not await presence.ais_online(8)
    assert await presence.aconnection_count(7) == 1


# --- rate keys --------------------------------------------------------------------------

def test_rate_keys_are_readable_and_callables_hashed():
    # {…}: the identity's Redis Cluster hash tag (wsops.limits.keys)
    assert action_key("posts", "ip", "1.2.3.4").endswith("wsops:rl:action.posts:{ip:1.2.3.4}")
    hashed = action_key("search", "key", "room-42")
    assert hashed.endswith(f"wsops:rl:action.search:{{key:"
                           f"{hashlib.sha256(b'room-42').hexdigest()[:32]}}}")
    assert "room-42" not in hashed


def test_action_refuses_an_unknown_key_or_a_group_unfit_for_a_key():
    with pytest.raises(ValueError, match="expected one of user, ip, token, connection"):
        action("x", rate="1/m", key="session")
    with pytest.raises(ValueError, match="group='a b'"):
        action("x", rate="1/m", group="a b")
