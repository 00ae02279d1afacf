"""SecureJsonWebsocketConsumer under attack and under outages (issues #12, #13).

- First-frame logins (``TOKEN_TRANSPORTS`` with ``"message"``): nothing but the
  authenticate frame is handled before login, and a login passes the identity
  admission the handshake transports get (bans, per-user connect rate, cap).
- Shared message rates fall back to per-connection limits under fail-closed.
- Close reasons reach the client only when refusals are explained.
"""

import asyncio
import io
import json

import pytest
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from django import forms
from django.core.management import call_command
from django.urls import re_path

from tests.helpers import configure_redis
from wsops import store, tokens
from wsops.consumers import SecureJsonWebsocketConsumer, action
from wsops.limits.operators import Identity, ban
from wsops.middleware import SecureWebsocketStack
from wsops.permissions import IsAuthenticated
from wsops.testing import LiveSocket, SecureCommunicator

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = "https://app.example.com"
TRANSPORTS = ["subprotocol", "header", "query", "cookie", "message"]


class Text(forms.Form):
    text = forms.CharField(max_length=100)


class Guarded(SecureJsonWebsocketConsumer):
    """Binary opted in, login required: what the first-frame gate must protect."""

    connect_permission = IsAuthenticated()
    accept_binary = True

    async def receive_bytes(self, data):
        await self.send(bytes_data=data[::-1])

    @action("ping", rate="30/m")
    async def ping(self, data):
        return {"type": "pong"}

    @action("echo", form=Text)
    async def echo(self, data):
        return {"type": "echo", "text": data["text"]}

    @action("whoami")
    async def whoami(self, data):
        return {"type": "whoami", "user": self.scope["user"].username}


@pytest.fixture
def guarded():
    return SecureWebsocketStack(URLRouter([re_path(r"^ws/g/$", Guarded.as_asgi())]))


@pytest.fixture
def message_transport(settings):
    settings.WSOPS = {**settings.WSOPS, "AUTH_TIMEOUT": 1, "TOKEN_TRANSPORTS": TRANSPORTS}


@pytest.fixture
def issue(make_user):
    @database_sync_to_async
    def make(username="alice"):
        user = make_user(username)
        return user, tokens.issue(user)[1]

    return make


async def next_output(socket):
    """The next thing the application sends: a frame or the close (with its reason)."""
    return await socket.communicator.receive_output(timeout=socket.timeout)


async def close_message(socket):
    """Skip frames; the ``websocket.close`` message itself (code and reason)."""
    message = await next_output(socket)
    while message["type"] == "websocket.send":
        message = await next_output(socket)
    return message


# --- 12.2 (a): nothing but the authenticate frame before login ---------------------


async def test_binary_frame_before_first_frame_login_closes_4401(guarded, message_transport,
                                                                 events):
    async with SecureCommunicator(guarded, "/ws/g/", origin=ORIGIN) as socket:
        assert socket.accepted
        await socket.communicator.send_to(bytes_data=b"abc")
        message = await next_output(socket)
        assert message["type"] == "websocket.close", "receive_bytes ran before login"
        assert message["code"] == 4401
    assert [(e["kind"], e["reason"]) for e in events] == [("auth",
                                                            "expected_authenticate_message")]


@pytest.mark.parametrize("first", [
    json.dumps({"action": "echo", "text": "hi"}),
    json.dumps({"action": "authenticate", "token": ["wst_x"]}),
    json.dumps({"token": "wst_x"}),
    "[" * 5000,  # too deep for json: a RecursionError must not crash the consumer
    "null",
])
async def test_any_other_first_frame_closes_4401_with_one_event(guarded, message_transport,
                                                                events, first):
    async with SecureCommunicator(guarded, "/ws/g/", origin=ORIGIN) as socket:
        await socket.send_text(first)
        message = await next_output(socket)
        assert (message["type"], message.get("code")) == ("websocket.close", 4401)
        assert await socket.communicator.receive_nothing(0.1)
    assert len(events) == 1 and events[0]["kind"] == "auth"


async def test_frames_sent_right_after_the_authenticate_frame_are_handled_after_login(
        guarded, message_transport, issue):
    _, secret = await issue()
    async with SecureCommunicator(guarded, "/ws/g/", origin=ORIGIN) as socket:
        await socket.send_json({"action": "authenticate", "token": secret})
        await socket.communicator.send_to(bytes_data=b"abc")
        await socket.send_json({"action": "whoami", "id": 1})
        assert await socket.receive_json() == {"type": "authenticated"}
        assert await socket.communicator.receive_from() == b"cba"
        assert await socket.receive_json() == {"type": "whoami", "user": "alice", "id": 1}


# --- 12.2 (b): a first-frame login passes the identity admission -------------------


@pytest.fixture
def redis(settings, private_redis):
    return configure_redis(settings, private_redis)


async def login_by_first_frame(app, secret, **options):
    """Open an anonymous socket, send the authenticate frame; return (socket, first output)."""
    socket = SecureCommunicator(app, "/ws/g/", origin=ORIGIN, **options)
    await socket.connect()
    assert socket.accepted
    await socket.send_json({"action": "authenticate", "token": secret})
    return socket, await next_output(socket)


@pytest.mark.parametrize("banned", ["user", "token"])
async def test_first_frame_login_of_a_banned_identity_closes_4403(guarded, message_transport,
                                                                  redis, issue, events, banned):
    user, secret = await issue("mallory")
    ident = str(user.pk) if banned == "user" else secret[:12]
    ban(redis.client(), Identity(banned, ident), 3600, "spam")
    socket, output = await login_by_first_frame(guarded, secret)
    assert (output["type"], output.get("code")) == ("websocket.close", 4403)  # no "authenticated"
    await socket.disconnect()
    assert [(e["kind"], e["reason"]) for e in events] == [("banned", "spam")]
    assert events[0]["user_id"] == user.pk


async def test_first_frame_login_counts_against_the_users_connect_rate(
        guarded, message_transport, redis, issue, settings, events):
    settings.WSOPS = {**settings.WSOPS, "RATES": {"connect": "2/m"}}
    _, secret = await issue()
    for port in (1, 2):  # two handshakes with the token use up alice's rate...
        outcome = await SecureCommunicator(guarded, "/ws/g/", token=secret,
                                           client=(f"10.0.0.{port}", 1)).outcome()
        assert outcome.accepted and outcome.close_code is None
    # ...so a first-frame login from a third address is refused by the user's rate
    socket, output = await login_by_first_frame(guarded, secret, client=("10.0.0.3", 1))
    assert (output["type"], output.get("code")) == ("websocket.close", 4429)
    await socket.disconnect()
    assert events[-1]["reason"] == "connect_rate"


async def test_first_frame_login_takes_and_frees_a_slot_of_the_users_cap(
        guarded, message_transport, redis, issue, settings, events):
    settings.WSOPS = {**settings.WSOPS, "MAX_CONNECTIONS_PER_USER": 1}
    user, secret = await issue()
    cap = f"wsops:conn:{{user:{user.pk}}}"
    async with SecureCommunicator(guarded, "/ws/g/", token=secret) as held:
        assert held.accepted
        socket, output = await login_by_first_frame(guarded, secret)
        assert (output["type"], output.get("code")) == ("websocket.close", 4429)
        await socket.disconnect()
        assert events[-1]["kind"] == "connection_cap"
    await asyncio.sleep(0.1)
    socket, output = await login_by_first_frame(guarded, secret)
    assert json.loads(output["text"]) == {"type": "authenticated"}
    assert redis.client().zcard(cap) == 1  # the first-frame socket holds the slot
    async with SecureCommunicator(guarded, "/ws/g/", token=secret) as third:
        assert not third.accepted  # and it counts for handshakes too
    await socket.disconnect()
    await asyncio.sleep(0.1)
    assert redis.client().zcard(cap) == 0  # released when it closed


@pytest.mark.e2e
async def test_wsratelimit_block_holds_for_first_frame_logins_on_daphne(daphne_server, redis,
                                                                       issue):
    server = daphne_server(redis=redis, wsops={"TOKEN_TRANSPORTS": TRANSPORTS,
                                               "EXPLAIN_REFUSALS": True})
    _, secret = await issue("mallory")
    out = io.StringIO()
    await database_sync_to_async(call_command)("wsratelimit", "block", "user:mallory", "--for",
                                               "1h", "--reason", "spam", stdout=out)
    socket = await LiveSocket.open(server.url(), origin=ORIGIN)
    assert socket.accepted
    await socket.send_json({"action": "authenticate", "token": secret})
    assert await socket.receive_close() == 4403
    assert socket.connection.close_reason == "spam"  # EXPLAIN_REFUSALS: the reason reaches us
    assert "banned refused: spam" in server.output()


# --- 12.7: shared message rates under fail-closed ----------------------------------


@pytest.mark.parametrize(("fail_mode", "answered"), [("closed", 30), ("open", 60)])
async def test_action_rate_falls_back_per_connection_when_redis_dies(
        guarded, redis, issue, settings, fail_mode, answered):
    configure = {"FAIL_MODE": fail_mode, "THROTTLE_CLOSE_AFTER": 100,
                 "RATES": {"message": "1000/s", "user_message": None}}
    settings.WSOPS = {**settings.WSOPS, **configure}
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    _, secret = await issue()
    async with SecureCommunicator(guarded, "/ws/g/", token=secret) as socket:
        assert socket.accepted
        redis.kill()
        replies = []
        for number in range(60):  # ping is rate="30/m"
            await socket.send_json({"action": "ping", "id": number})
            replies.append(await socket.receive_json())
    pongs = [r for r in replies if r["type"] == "pong"]
    refused = [r for r in replies if r["type"] == "error"]
    assert len(pongs) == answered and replies[:answered] == pongs
    assert all(r["code"] == "rate_limited" and r["errors"]["__all__"][0]["code"] == "action_rate"
               for r in refused)


class Unavailable:
    """A limiter whose Redis is too slow: every decision times out."""

    async def admit(self, **admission):
        raise store.StoreUnavailable("TimeoutError")


@pytest.mark.parametrize(("fail_mode", "answered"), [("closed", 5), ("open", 10)])
async def test_user_message_rate_falls_back_per_connection_when_redis_is_slow(
        guarded, issue, settings, monkeypatch, fail_mode, answered):
    from wsops.messages import rates

    settings.WSOPS = {**settings.WSOPS, "FAIL_MODE": fail_mode, "THROTTLE_CLOSE_AFTER": 100,
                      "RATES": {"message": "1000/s", "user_message": "5/m"}}
    _, secret = await issue()
    async with SecureCommunicator(guarded, "/ws/g/", token=secret) as socket:
        monkeypatch.setattr(rates, "get_limiter", Unavailable)
        replies = []
        for _ in range(10):
            await socket.send_json({"action": "whoami"})
            replies.append(await socket.receive_json())
    kinds = [r["type"] for r in replies]
    assert kinds == ["whoami"] * answered + ["error"] * (10 - answered)
    assert all(r["errors"]["__all__"][0]["code"] == "user_message_rate"
               for r in replies[answered:])


async def test_fallback_charges_nothing_for_a_refused_message(guarded, issue, settings,
                                                              monkeypatch):
    """A message refused by one rate is not counted against the other (as in Redis)."""
    from wsops.messages import rates

    settings.WSOPS = {**settings.WSOPS, "THROTTLE_CLOSE_AFTER": 100,
                      "RATES": {"message": "1000/s", "user_message": "31/m"}}
    _, secret = await issue()
    async with SecureCommunicator(guarded, "/ws/g/", token=secret) as socket:
        monkeypatch.setattr(rates, "get_limiter", Unavailable)
        for expected in ["pong"] * 30 + ["error"] * 5:  # ping's own 30/m refuses these
            await socket.send_json({"action": "ping"})
            assert (await socket.receive_json())["type"] == expected
        await socket.send_json({"action": "whoami"})  # 31st message the user rate counted
        assert (await socket.receive_json())["type"] == "whoami"
        await socket.send_json({"action": "whoami"})
        assert (await socket.receive_json())["errors"]["__all__"][0]["code"] == \
            "user_message_rate"


# --- 13.9: close reasons, only when refusals are explained -------------------------


@pytest.fixture(params=[True, False], ids=["explained", "silent"])
def explain(request, settings):
    settings.WSOPS = {**settings.WSOPS, "EXPLAIN_REFUSALS": request.param}
    return request.param


async def closed_with(socket, code, reason, explain):
    message = await close_message(socket)
    assert message["code"] == code
    assert message.get("reason") == (reason if explain else None)


async def test_size_binary_invalid_and_flood_closes_carry_their_reason(guarded, issue, settings,
                                                                      explain):
    settings.WSOPS = {**settings.WSOPS, "MAX_MESSAGE_BYTES": 100, "INVALID_MESSAGE_LIMIT": 1,
                      "THROTTLE_CLOSE_AFTER": 1}
    _, secret = await issue()
    async with SecureCommunicator(guarded, "/ws/g/", token=secret) as socket:
        await socket.send_text("x" * 101)
        await closed_with(socket, 1009, "message_too_big", explain)
    async with SecureCommunicator(guarded, "/ws/g/", token=secret) as socket:
        await socket.send_text("{bad json")  # the one invalid message allowed per window
        assert (await socket.receive_json())["code"] == "invalid_json"
        await socket.send_text("{bad json")
        await closed_with(socket, 4400, "too_many_invalid_messages", explain)
    settings.WSOPS = {**settings.WSOPS, "RATES": {"message": "1/m"}}
    async with SecureCommunicator(guarded, "/ws/g/", token=secret) as socket:
        await socket.send_json({"action": "whoami"})
        await socket.receive_json()
        await socket.send_json({"action": "whoami"})
        await closed_with(socket, 4429, "flood", explain)


async def test_binary_close_carries_its_reason(app, issue, explain):
    _, secret = await issue()
    async with SecureCommunicator(app, "/ws/chat/lobby/", token=secret) as socket:
        await socket.communicator.send_to(bytes_data=b"\x00")
        await closed_with(socket, 1003, "binary_frame", explain)


async def test_first_frame_and_connect_permission_closes_carry_their_reason(
        guarded, message_transport, settings, make_user, explain):
    async with SecureCommunicator(guarded, "/ws/g/", origin=ORIGIN) as socket:
        await socket.send_json({"action": "whoami"})
        await closed_with(socket, 4401, "expected_authenticate_message", explain)
    async with SecureCommunicator(guarded, "/ws/g/", origin=ORIGIN, timeout=4) as socket:
        await closed_with(socket, 4401, "auth_timeout", explain)
    settings.WSOPS = {**settings.WSOPS, "TOKEN_TRANSPORTS": TRANSPORTS[:-1],
                      "REJECT_WITH": "close_code"}
    async with SecureCommunicator(guarded, "/ws/g/", origin=ORIGIN) as socket:
        await closed_with(socket, 4401, "connect_permission", explain)


async def test_connect_permission_refused_at_the_handshake_passes_the_reason(guarded, explain):
    """Before accept the refusal is HTTP 403; the ASGI close still names the reason, which
    wsops' daphne patch puts in the status line."""
    from asgiref.testing import ApplicationCommunicator

    communicator = ApplicationCommunicator(guarded, {
        "type": "websocket", "path": "/ws/g/", "query_string": b"", "subprotocols": [],
        "headers": [(b"origin", ORIGIN.encode())], "client": ["127.0.0.1", 5000],
    })
    await communicator.send_input({"type": "websocket.connect"})
    message = await communicator.receive_output(3)
    assert message["type"] == "websocket.close" and "code" not in message
    assert message.get("reason") == ("connect_permission" if explain else None)
    await communicator.wait(3)


def test_close_reasons_are_cut_to_a_close_frame_on_a_character_boundary(settings):
    from wsops.messages.lifecycle import explained_reason as _explained

    settings.WSOPS = {**settings.WSOPS, "EXPLAIN_REFUSALS": True}
    reason = _explained("é" * 100)  # 200 bytes
    assert len(reason.encode()) <= 123 and set(reason) == {"é"}
    settings.WSOPS = {**settings.WSOPS, "EXPLAIN_REFUSALS": None}
    settings.DEBUG = True
    assert _explained("flood") == "flood"
    settings.DEBUG = False
    assert _explained("flood") is None
