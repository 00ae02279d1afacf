"""The outside review of the redesigned runtime: each hole it found, closed.

1. A token this worker verified before has its owner's identity decided in the IP
   checks' trip; a revoked or re-owned token must not charge, cap or ban its old owner.
2. wsops steps behind Channels' own middleware, and a step nested twice.
3. The workers listener leaves channels-redis clean when its last socket goes.
4-5. Secrets in other query forms and Authorization forms: refused and stripped.
6-7. Frames without an action pay the per-user rate; a decode_json error is the client's.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.layers import channel_layers, get_channel_layer
from channels.routing import URLRouter
from django.urls import path

from tests.helpers import configure_redis
from wsops import connections, tokens
from wsops.consumers import SecureJsonWebsocketConsumer, action
from wsops.limits.operators import Identity, ban
from wsops.middleware import OriginGuard, SecureWebsocketStack, TokenAuthMiddleware
from wsops.testing import SecureCommunicator

pytestmark = pytest.mark.django_db(transaction=True)
PATH = "/ws/chat/lobby/"
ORIGIN = "https://app.example.com"


@database_sync_to_async
def db(function, *args, **kwargs):
    return function(*args, **kwargs)


@pytest.fixture
def redis(settings, private_redis):
    return configure_redis(settings, private_redis)


def from_ip(address: str) -> tuple[str, int]:
    return (address, 40000)


async def test_a_revoked_token_never_charges_its_former_owner(app, make_user, redis, settings):
    settings.WSOPS = {**settings.WSOPS, "RATES": {"connect": "5/m"}}
    carol = await db(make_user, "carol")
    old, old_secret = await db(tokens.issue, carol)
    _, secret = await db(tokens.issue, carol)
    first = await SecureCommunicator(app, PATH, token=old_secret,
                                     client=from_ip("10.9.0.1")).outcome()
    assert first.accepted  # this worker now knows the token's owner
    await db(tokens.revoke, [old])
    for n in range(6):  # an attacker replays the leaked, revoked token from many addresses
        replay = await SecureCommunicator(app, PATH, token=old_secret,
                                          client=from_ip(f"10.9.1.{n}")).outcome()
        assert replay.refused_before_accept
    # Carol's first handshake took one of her 5; the replays took none.
    for _ in range(4):
        mine = await SecureCommunicator(app, PATH, token=secret,
                                        client=from_ip("10.9.0.1")).outcome()
        assert mine.accepted
    client = redis.client()
    assert client.zcard(f"wsops:conn:{{user:{carol.pk}}}") == 0


async def test_a_revoked_token_leaves_its_owners_caps_alone(app, make_user, redis, settings):
    settings.WSOPS = {**settings.WSOPS, "MAX_CONNECTIONS_PER_USER": 1}
    erin = await db(make_user, "erin")
    old, old_secret = await db(tokens.issue, erin)
    _, secret = await db(tokens.issue, erin)
    assert (await SecureCommunicator(app, PATH, token=old_secret).outcome()).accepted
    await db(tokens.revoke, [old])
    assert (await SecureCommunicator(app, PATH, token=old_secret).outcome()) \
        .refused_before_accept
    async with SecureCommunicator(app, PATH, token=secret) as socket:
        assert socket.accepted  # her one slot is hers
        assert (await SecureCommunicator(app, PATH, token=old_secret).outcome()) \
            .refused_before_accept  # and a replay does not take it for a moment either
        assert redis.client().zcard(f"wsops:conn:{{user:{erin.pk}}}") == 1


async def test_a_reowned_token_is_decided_for_its_new_owner(app, make_user, redis):
    dave, bob = await db(make_user, "dave"), await db(make_user, "bob")
    token, secret = await db(tokens.issue, dave)
    assert (await SecureCommunicator(app, PATH, token=secret).outcome()).accepted
    token.owner = bob
    await db(token.save)  # as the admin's change form does
    await db(ban, redis.client(), Identity("user", str(dave.pk)), 3600, "dave is banned")
    async with SecureCommunicator(app, PATH, token=secret) as socket:
        assert socket.accepted
        await socket.send_json({"action": "whoami"})
        assert (await socket.receive_json())["user"] == "bob"
    # and after bob's ban, his own token is refused though this worker knew it as dave's
    await db(ban, redis.client(), Identity("user", str(bob.pk)), 3600, "bob too")
    assert (await SecureCommunicator(app, PATH, token=secret).outcome()).refused_before_accept


class WhoAmI(SecureJsonWebsocketConsumer):
    @action("whoami")
    async def whoami(self, data):
        user = self.scope["user"]
        return {"user": user.username if user.is_authenticated else None,
                "auth_method": self.scope["wsops"].auth_method}


def routes():
    return URLRouter([path("ws/", WhoAmI.as_asgi())])


@pytest.mark.parametrize("shape", ["behind_channels_stack", "per_route"])
async def test_a_wsops_step_behind_other_middleware_still_authenticates(make_user, shape,
                                                                      events):
    if shape == "behind_channels_stack":  # migrating from OriginValidator(AuthMiddlewareStack(..))
        app = OriginGuard(AuthMiddlewareStack(TokenAuthMiddleware(routes())))
    else:
        app = OriginGuard(URLRouter([path("ws/", TokenAuthMiddleware(WhoAmI.as_asgi()))]))
    alice = await db(make_user, "alice")
    _, secret = await db(tokens.issue, alice)
    async with SecureCommunicator(app, "/ws/", token=secret) as socket:
        await socket.send_json({"action": "whoami"})
        assert await socket.receive_json() == {"user": "alice", "auth_method": "subprotocol"}
    for bad in (tokens.generate_secret(), "wst_" + "!" * 43):
        outcome = await SecureCommunicator(app, "/ws/", token=bad).outcome()
        assert outcome.refused_before_accept, bad  # never anonymous


async def test_a_second_authentication_step_is_not_run(make_user, redis):
    """SecureWebsocketStack(TokenAuthMiddleware(...)): the cookie must not replace the
    token's user after the bans were decided for the token's owner."""
    app = SecureWebsocketStack(TokenAuthMiddleware(routes()))
    alice, bob = await db(make_user, "alice"), await db(make_user, "bob")
    _, secret = await db(tokens.issue, alice)
    await db(ban, redis.client(), Identity("user", str(bob.pk)), 3600, "banned")
    async with SecureCommunicator(app, "/ws/", token=secret, user=bob, origin=ORIGIN) as s:
        await s.send_json({"action": "whoami"})
        assert await s.receive_json() == {"user": "alice", "auth_method": "subprotocol"}


async def test_the_listener_leaves_no_receive_buffer_behind_on_channels_redis(make_user,
                                                                           redis_server,
                                                                           settings):
    configure_redis(settings, redis_server)
    channel_layers.backends.clear()
    layer = get_channel_layer()
    registry = connections.live_connections()
    alice = await db(make_user, "alice")
    _, secret = await db(tokens.issue, alice)
    app = SecureWebsocketStack(routes())
    for _ in range(15):
        async with SecureCommunicator(app, "/ws/", token=secret) as socket:
            assert socket.accepted
        for _ in range(200):  # the woken listener leaves (channels-redis: a round trip)
            if registry.listener is None:
                break
            await asyncio.sleep(0.05)
        assert registry.listener is None
    # The listener left no queue behind (it was one per restart, 3.4 KB each). Queues of
    # the consumers' own channels are channels-redis' business (a receive cancelled while
    # it holds the layer's receive lock keeps its queue), not counted here.
    assert not [c for c in layer.receive_buffer if c.startswith("wsops.worker")]
    channel_layers.backends.clear()


@pytest.mark.parametrize("value", [
    "Token SECRET", "SECRET", "Basic Zm9vOmJhcg==, Bearer SECRET", "Bearer  , SECRET",
])
async def test_a_wsops_secret_in_another_authorization_form_is_refused(make_user, value,
                                                                      events):
    alice = await db(make_user, "alice")
    _, secret = await db(tokens.issue, alice)
    app = SecureWebsocketStack(routes())  # no connect_permission: anonymous would get in
    outcome = await SecureCommunicator(
        app, "/ws/", headers={"authorization": value.replace("SECRET", secret)}).outcome()
    assert outcome.refused_before_accept
    assert secret not in repr(events)


async def test_bearer_with_a_tab_is_a_bearer(app, make_user):
    alice = await db(make_user, "alice")
    _, secret = await db(tokens.issue, alice)
    async with SecureCommunicator(app, PATH, headers={"authorization": f"Bearer\t{secret}"}) \
            as socket:
        await socket.send_json({"action": "whoami"})
        assert (await socket.receive_json())["auth_method"] == "header"


class Plain(SecureJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        await self.send_json({"echo": content})


async def test_frames_without_an_action_pay_the_per_user_rate(make_user, settings):
    settings.WSOPS = {**settings.WSOPS, "THROTTLE_CLOSE_AFTER": 100,
                      "RATES": {"message": "100/s", "user_message": "5/m"}}
    alice = await db(make_user, "alice")
    _, secret = await db(tokens.issue, alice)
    app = SecureWebsocketStack(URLRouter([path("ws/", Plain.as_asgi())]))
    answers = []
    async with SecureCommunicator(app, "/ws/", token=secret) as socket:
        for n in range(8):
            await socket.send_json({"n": n})
            answers.append(await socket.receive_json())
    assert [a.get("echo", {}).get("n") for a in answers[:5]] == [0, 1, 2, 3, 4]
    assert {a.get("code") for a in answers[5:]} == {"rate_limited"}


class StrictCodec(SecureJsonWebsocketConsumer):
    @classmethod
    async def decode_json(cls, text_data):
        if text_data.startswith("{"):
            return json.loads(text_data)
        raise TypeError("not a frame this decoder reads")  # not a ValueError

    @action("ping")
    async def ping(self, data):
        return {"type": "pong"}


async def test_a_decode_json_error_is_invalid_json_and_counted(make_user, settings, events):
    settings.WSOPS = {**settings.WSOPS, "INVALID_MESSAGE_LIMIT": 3}
    alice = await db(make_user, "alice")
    _, secret = await db(tokens.issue, alice)
    app = SecureWebsocketStack(URLRouter([path("ws/", StrictCodec.as_asgi())]))
    async with SecureCommunicator(app, "/ws/", token=secret) as socket:
        for _ in range(4):  # the 4th is past INVALID_MESSAGE_LIMIT
            await socket.send_text("nope")
            assert (await socket.receive_json())["code"] == "invalid_json"
        assert await socket.receive_close() == 4400
    assert [e["reason"] for e in events].count("invalid_json") == 4
