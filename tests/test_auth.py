"""TokenAuthMiddleware in process: transports, refusals, events, lifetime on live sockets."""

import asyncio
import logging
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command

from wsops import tickets, tokens
from wsops.testing import SecureCommunicator

pytestmark = pytest.mark.django_db(transaction=True)
PATH = "/ws/chat/lobby/"
ORIGIN = "https://app.example.com"


@pytest.fixture
def alice(make_user):
    return make_user("alice", perms=("chat.send_message",))


@database_sync_to_async
def issue(user, **kwargs):
    return tokens.issue(user, **kwargs)


@database_sync_to_async
def ticket_for(user, origin=None):
    return tickets.issue(user, origin=origin)[0]


async def whoami(socket):
    await socket.send_json({"action": "whoami"})
    return await socket.receive_json()


async def test_token_in_subprotocol_is_answered_with_wsops(app, alice):
    _, secret = await issue(alice, scopes=["chat:write"])
    async with SecureCommunicator(app, PATH, token=secret) as socket:
        assert socket.accepted and socket.subprotocol == "wsops"
        me = await whoami(socket)
        assert me["user"] == "alice" and me["auth_method"] == "subprotocol"


async def test_bearer_header_without_origin(app, alice):
    _, secret = await issue(alice)
    async with SecureCommunicator(app, PATH, bearer=secret) as socket:
        assert socket.accepted
        assert (await whoami(socket))["auth_method"] == "header"


async def test_ticket_in_subprotocol_and_in_query_string(app, alice):
    async with SecureCommunicator(app, PATH, ticket=await ticket_for(alice),
                                  origin=ORIGIN) as socket:
        assert socket.accepted and (await whoami(socket))["auth_method"] == "subprotocol"
    ticket = await ticket_for(alice)
    async with SecureCommunicator(app, f"{PATH}?ticket={ticket}&room=x",
                                  origin=ORIGIN) as socket:
        assert socket.accepted and (await whoami(socket))["auth_method"] == "query"


async def test_ticket_is_single_use(app, alice, events):
    ticket = await ticket_for(alice)
    assert (await SecureCommunicator(app, PATH, ticket=ticket).outcome()).accepted
    second = await SecureCommunicator(app, PATH, ticket=ticket).outcome()
    assert second.refused_before_accept
    assert events[-1]["reason"] == "unknown_or_used_ticket"


async def test_ticket_is_bound_to_the_origin_that_asked(app, alice, events):
    ticket = await ticket_for(alice, origin="https://app.example.com")
    outcome = await SecureCommunicator(app, PATH, ticket=ticket,
                                       origin="https://chat.example.org").outcome()
    assert outcome.refused_before_accept and events[-1]["reason"] == "ticket_origin_mismatch"


async def test_long_lived_token_in_query_string_is_refused_unless_allowed(app, alice, settings):
    _, secret = await issue(alice)
    outcome = await SecureCommunicator(app, f"{PATH}?token={secret}").outcome()
    assert outcome.refused_before_accept
    settings.WSOPS = {**settings.WSOPS,
                      "TOKEN_TRANSPORTS": ["subprotocol", "header", "query", "query_token"]}
    assert (await SecureCommunicator(app, f"{PATH}?token={secret}").outcome()).accepted


async def test_session_cookie_with_allowed_origin(app, alice):
    async with SecureCommunicator(app, PATH, user=alice, origin=ORIGIN) as socket:
        assert socket.accepted
        assert (await whoami(socket))["auth_method"] == "session"


@pytest.mark.parametrize("case", ["malformed", "unknown", "revoked", "expired", "inactive",
                                  "ticket_garbage", "many_subprotocols"])
@pytest.mark.parametrize("reject_with", ["handshake", "close_code"])
async def test_bad_credentials_are_refused_never_anonymous(app, alice, settings, events, caplog,
                                                           case, reject_with):
    settings.WSOPS = {**settings.WSOPS, "REJECT_WITH": reject_with}
    token, secret = await issue(alice)
    subprotocols = None
    if case == "malformed":
        secret = "wst_" + "!" * 10
    elif case == "unknown":
        secret = tokens.generate_secret()
    elif case == "revoked":
        await database_sync_to_async(tokens.revoke)([token])
    elif case == "expired":
        token.expires_at = tokens.now() - timedelta(seconds=1)
        await database_sync_to_async(token.save)()
    elif case == "inactive":
        alice.is_active = False
        await database_sync_to_async(alice.save)()
    elif case == "ticket_garbage":
        secret = "wstkt_" + "x" * 43
    elif case == "many_subprotocols":
        subprotocols = ["wsops", secret, tokens.generate_secret()]  # a second secret
    caplog.set_level(logging.WARNING, logger="wsops.security")
    communicator = SecureCommunicator(app, PATH, token=None if subprotocols else secret,
                                      subprotocols=subprotocols)
    outcome = await communicator.outcome()
    if reject_with == "handshake":
        assert outcome.refused_before_accept
    else:
        assert outcome.accepted and outcome.close_code == 4401
    auth_events = [e for e in events if e["kind"] == "auth"]
    assert len(auth_events) == 1
    assert "wsops auth refused" in caplog.text  # the log line exists...
    assert secret not in repr(events) and secret not in caplog.text  # ...without the secret
    if case in ("revoked", "expired", "inactive"):
        assert auth_events[0]["token_prefix"] == secret[:12]


async def test_garbage_headers_never_raise(app):
    for headers in ({"authorization": "Bearer"}, {"authorization": "Bearer " + "x" * 5000},
                    {"authorization": "Basic Zm9vOmJhcg=="}, {"origin": "\u00ff\u00fe"},
                    {"authorization": "Bearer \u00e9\u00e9"}):
        outcome = await SecureCommunicator(app, PATH, headers=headers).outcome()
        assert outcome.refused_before_accept


async def test_secret_is_stripped_from_the_scope(app, alice, monkeypatch):
    from chat.consumers import ChatConsumer

    seen = {}

    async def capture(self, data):
        seen.update(subprotocols=self.scope["subprotocols"], headers=self.scope["headers"],
                    query=self.scope["query_string"], token=self.scope["wsops"].token,
                    everything=repr(self.scope))
        return {"type": "ok"}

    from wsops.consumers import ActionSpec

    monkeypatch.setitem(ChatConsumer.actions, "whoami", ActionSpec("whoami", capture))
    _, secret = await issue(alice, scopes=["chat:write"])
    async with SecureCommunicator(app, PATH, token=secret) as socket:
        await whoami(socket)
    assert seen["subprotocols"] == ["wsops"]
    assert secret not in repr(seen)
    assert seen["token"].prefix == secret[:12] and seen["token"].scopes == ["chat:write"]


async def test_live_socket_closes_when_its_token_expires(app, alice, events):
    _, secret = await issue(alice, ttl=1)
    async with SecureCommunicator(app, PATH, token=secret, timeout=4) as socket:
        assert socket.accepted
        assert await socket.receive_close() == 4401
    assert events[-1]["reason"] == "expired"


async def test_revoked_token_socket_closes_at_its_next_check(app, alice, settings):
    settings.WSOPS = {**settings.WSOPS, "TOKEN_CACHE_SECONDS": 1}
    token, secret = await issue(alice)
    async with SecureCommunicator(app, PATH, token=secret, timeout=4) as socket:
        await database_sync_to_async(tokens.revoke)([token])
        assert await socket.receive_close() == 4401


async def test_revoke_disconnect_closes_live_socket_at_once(app, alice):
    token, secret = await issue(alice)
    async with SecureCommunicator(app, PATH, token=secret, timeout=1) as socket:
        assert socket.accepted
        await database_sync_to_async(call_command)("wstokens", "revoke", token.prefix,
                                                   "--disconnect")
        assert await socket.receive_close() == 4401


async def test_revoke_user_all_disconnect(app, alice):
    _, first = await issue(alice)
    _, second = await issue(alice)
    async with SecureCommunicator(app, PATH, token=first, timeout=1) as one, \
            SecureCommunicator(app, PATH, token=second, timeout=1) as two:
        await database_sync_to_async(call_command)("wstokens", "revoke", "--user", "alice",
                                                   "--all", "--disconnect")
        assert await one.receive_close() == 4401
        assert await two.receive_close() == 4401


@pytest.fixture
def message_transport(settings):
    settings.WSOPS = {**settings.WSOPS, "AUTH_TIMEOUT": 1,
                      "TOKEN_TRANSPORTS": ["subprotocol", "header", "query", "cookie", "message"]}


async def test_first_message_transport(app, alice, message_transport):
    _, secret = await issue(alice)
    async with SecureCommunicator(app, PATH, origin=ORIGIN) as socket:
        assert socket.accepted
        await socket.send_json({"action": "authenticate", "token": secret})
        assert await socket.receive_json() == {"type": "authenticated"}
        assert (await whoami(socket))["auth_method"] == "message"


@pytest.mark.parametrize("first", [{"action": "whoami"}, {"action": "authenticate", "token": 5},
                                   {"action": "authenticate", "token": "wst_nope"}, "garbage"])
async def test_first_message_transport_refuses_anything_else(app, message_transport, first):
    async with SecureCommunicator(app, PATH, origin=ORIGIN) as socket:
        if isinstance(first, str):
            await socket.send_text(first)
        else:
            await socket.send_json(first)
        assert await socket.receive_close() == 4401


async def test_first_message_transport_times_out(app, message_transport):
    async with SecureCommunicator(app, PATH, origin=ORIGIN, timeout=3) as socket:
        assert socket.accepted
        assert await socket.receive_close() == 4401


async def test_last_used_is_written_at_most_once_a_minute(app, alice):
    from wsops.models import WebSocketToken

    token, secret = await issue(alice)
    for _ in range(3):
        assert (await SecureCommunicator(app, PATH, token=secret).outcome()).accepted
    await asyncio.sleep(0.2)
    first = (await database_sync_to_async(WebSocketToken.objects.get)(pk=token.pk)).last_used_at
    assert first is not None
    assert (await SecureCommunicator(app, PATH, token=secret).outcome()).accepted
    await asyncio.sleep(0.2)
    again = (await database_sync_to_async(WebSocketToken.objects.get)(pk=token.pk)).last_used_at
    assert again == first


async def test_a_cached_token_handshake_makes_one_redis_round_trip(app, alice, settings,
                                                                   private_redis, monkeypatch):
    """IP checks, the token cache read and the identity's bans, rate and caps: one trip."""
    from tests.helpers import configure_redis
    from wsops import store

    configure_redis(settings, private_redis)
    # 10/h: the user's counter lives 6 minutes, however slow this machine is right now.
    settings.WSOPS = {**settings.WSOPS, "RATES": {"connect": "10/h"}}
    _, secret = await issue(alice)
    assert (await SecureCommunicator(app, PATH, token=secret).outcome()).accepted  # warms cache
    trips = []
    real_call = store.call

    async def counted(coroutine, *operation):
        trips.append(1)
        return await real_call(coroutine, *operation)

    monkeypatch.setattr(store, "call", counted)
    async with SecureCommunicator(app, PATH, token=secret) as socket:
        assert socket.accepted
        assert len(trips) == 1
        assert (await whoami(socket))["user"] == "alice"
    client = private_redis.client()
    assert client.zcard(f"wsops:conn:user:{alice.pk}") == 0  # released at close
    assert "|" in client.get(f"wsops:rl:connect:user:{alice.pk}")  # the user rate was charged
