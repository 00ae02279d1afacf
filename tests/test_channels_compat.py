"""Coming from Channels: its consumer and middleware contract, kept by wsops.

Each test is one of the breaks found when Channels' own suite was pointed at wsops
(issue 22): JSON hooks, Channels' exceptions, handler errors, the session in the
scope, application subprotocols, the worker's listener, OriginValidator patterns.
"""

import asyncio
import datetime
import decimal
import json
import logging
import uuid

import pytest
from channels.auth import get_user, login
from channels.db import database_sync_to_async
from channels.exceptions import AcceptConnection, DenyConnection, InvalidChannelLayerError
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.urls import path

from wsops import connections, remote, tokens
from wsops.consumers import SecureJsonWebsocketConsumer, action
from wsops.middleware import OriginGuard, SecureWebsocketStack
from wsops.testing import SecureCommunicator

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def token_of(make_user, username="alice"):
    return tokens.issue(make_user(username))[1]


def stack(consumer, route="ws/"):
    return SecureWebsocketStack(URLRouter([path(route, consumer.as_asgi())]))


class Dated(SecureJsonWebsocketConsumer):
    """A project's own JSON hooks: a datetime, Decimal and UUID go out, Decimals come in."""

    @classmethod
    async def encode_json(cls, content):
        return json.dumps(content, cls=DjangoJSONEncoder)

    @classmethod
    async def decode_json(cls, text_data):
        return json.loads(text_data, parse_float=decimal.Decimal)

    @action("when")
    async def when(self, data):
        return {"at": datetime.datetime(2026, 12, 1, 12, 0), "price": data["price"] * 2,
                "id_": uuid.UUID(int=7)}


async def test_encode_json_and_decode_json_are_honoured(make_user):
    async with SecureCommunicator(stack(Dated), "/ws/", token=await token_of(make_user)) as s:
        await s.send_json({"action": "when", "price": 1.1})
        reply = await s.receive_json()
    assert reply == {"at": "2026-12-01T12:00:00", "price": "2.2",
                     "id_": "00000000-0000-0000-0000-000000000007"}


def test_it_is_an_async_json_websocket_consumer():
    assert issubclass(SecureJsonWebsocketConsumer, AsyncJsonWebsocketConsumer)


class Plain(SecureJsonWebsocketConsumer):
    """Migrated code: frames without an action go to receive_json."""

    async def receive_json(self, content, **kwargs):
        await self.send_json({"echo": content})

    @action("ping")
    async def ping(self, data):
        return {"type": "pong"}


async def test_frames_without_an_action_reach_receive_json_behind_the_guard(make_user,
                                                                            settings):
    settings.WSOPS = {**settings.WSOPS, "MAX_MESSAGE_BYTES": 100,
                      "RATES": {"message": "3/m"}, "THROTTLE_CLOSE_AFTER": 100}
    async with SecureCommunicator(stack(Plain), "/ws/", token=await token_of(make_user)) as s:
        await s.send_json({"text": "hi"})
        assert await s.receive_json() == {"echo": {"text": "hi"}}
        await s.send_json({"action": "ping"})
        assert (await s.receive_json())["type"] == "pong"
        await s.send_json({"action": "nope"})  # an action key still means an action
        assert (await s.receive_json())["code"] == "unknown_action"
        await s.send_json({"text": "over the rate"})  # the 4th frame at 3/m
        assert (await s.receive_json())["code"] == "rate_limited"
    async with SecureCommunicator(stack(Plain), "/ws/", token=await token_of(make_user, "b"))\
            as s:
        await s.send_json({"text": "x" * 200})  # the size cap applies too
        assert await s.receive_close() == 1009


def test_overriding_receive_is_refused_at_class_creation():
    with pytest.raises(TypeError, match="receive_json"):
        type("Raw", (SecureJsonWebsocketConsumer,), {"receive": lambda self, **kw: None})


class Denying(SecureJsonWebsocketConsumer):
    async def connect(self):
        if self.scope["url_route"]["kwargs"]["how"] == "deny":
            raise DenyConnection
        raise AcceptConnection


async def test_deny_and_accept_connection_behave_as_in_channels(make_user, events):
    app = SecureWebsocketStack(URLRouter([path("ws/<how>/", Denying.as_asgi())]))
    secret = await token_of(make_user)
    denied = await SecureCommunicator(app, "/ws/deny/", token=secret).outcome()
    assert denied.refused_before_accept and denied.status == 403
    accepted = await SecureCommunicator(app, "/ws/accept/", token=secret).outcome()
    assert accepted.accepted and accepted.close_code is None


class Grouped(SecureJsonWebsocketConsumer):
    groups = ["lobby"]


async def test_groups_without_a_channel_layer_raise_invalid_channel_layer_error(settings):
    settings.CHANNEL_LAYERS = {}
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    communicator = WebsocketCommunicator(stack(Grouped), "/ws/")
    with pytest.raises(InvalidChannelLayerError):
        await communicator.connect()


class Failing(SecureJsonWebsocketConsumer):
    @action("boom")
    async def boom(self, data):
        raise ValueError("a bug in the handler, with internals: /srv/app/secret.py")


async def test_a_handler_exception_is_a_server_error_not_the_clients(make_user, caplog,
                                                                   events, settings):
    settings.WSOPS = {**settings.WSOPS, "INVALID_MESSAGE_LIMIT": 3}
    caplog.set_level(logging.ERROR, logger="wsops")
    async with SecureCommunicator(stack(Failing), "/ws/", token=await token_of(make_user)) as s:
        for attempt in range(8):  # well past INVALID_MESSAGE_LIMIT: never closed for it
            await s.send_json({"action": "boom", "id": attempt})
            frame = await s.receive_json()
            assert frame["code"] == "server_error" and frame["id"] == attempt
            assert "secret.py" not in json.dumps(frame)
    assert s.close_code is None
    assert "ValueError: a bug in the handler" in caplog.text  # the traceback is logged
    assert [e for e in events if e["kind"] == "invalid_input"] == []


class Sessions(SecureJsonWebsocketConsumer):
    @action("login")
    async def log_in(self, data):
        user = self.scope["user"]
        await login(self.scope, user)
        await database_sync_to_async(self.scope["session"].save)()
        return {"session": bool(self.scope["session"].session_key)}

    @action("whoami")
    async def whoami(self, data):
        user = await get_user(self.scope)
        return {"user": user.username or None}


async def test_every_socket_has_a_session_so_login_works(make_user):
    app = stack(Sessions)
    async with SecureCommunicator(app, "/ws/", token=await token_of(make_user)) as socket:
        await socket.send_json({"action": "login"})
        assert await socket.receive_json() == {"session": True}
    alice = await database_sync_to_async(make_user)("carol")
    async with SecureCommunicator(app, "/ws/", user=alice,
                                  origin="https://app.example.com") as socket:
        await socket.send_json({"action": "whoami"})  # a cookie socket: Channels' get_user
        assert await socket.receive_json() == {"user": "carol"}
    async with SecureCommunicator(app, "/ws/", token=await token_of(make_user, "dave")) as s:
        await s.send_json({"action": "whoami"})  # as README says: read scope["user"] here
        assert await s.receive_json() == {"user": None}


class Graphish(SecureJsonWebsocketConsumer):
    async def connect(self):
        offered = self.scope["subprotocols"]
        await self.accept("graphql-transport-ws" if "graphql-transport-ws" in offered else None)

    @action("offered")
    async def offered(self, data):
        return {"subprotocols": self.scope["subprotocols"]}


@pytest.mark.parametrize("offer", [
    ["graphql-transport-ws", "wsops", "SECRET"],
    ["wsops", "SECRET", "graphql-transport-ws"],
])
async def test_application_subprotocols_stand_beside_the_token(make_user, offer):
    secret = await token_of(make_user)
    offer = [secret if p == "SECRET" else p for p in offer]
    async with SecureCommunicator(stack(Graphish), "/ws/", subprotocols=offer) as socket:
        assert socket.subprotocol == "graphql-transport-ws"  # the application's choice
        await socket.send_json({"action": "offered"})
        seen = (await socket.receive_json())["subprotocols"]
    assert sorted(seen) == ["graphql-transport-ws", "wsops"] and secret not in seen


async def test_without_an_application_choice_wsops_is_answered(make_user):
    async with SecureCommunicator(stack(Graphish), "/ws/",
                                  token=await token_of(make_user)) as socket:
        assert socket.subprotocol == "wsops"


async def test_a_second_secret_in_the_offer_is_refused(make_user, events):
    offer = ["wsops", await token_of(make_user), tokens.generate_secret()]
    outcome = await SecureCommunicator(stack(Graphish), "/ws/", subprotocols=offer).outcome()
    assert outcome.refused_before_accept
    assert [e["reason"] for e in events] == ["malformed_credential"]


async def test_the_workers_listener_ends_with_its_last_socket_and_starts_again(make_user):
    layer = get_channel_layer()
    registry = connections.live_connections()
    secret = await token_of(make_user)
    app = stack(Plain)
    for _ in range(2):  # and again: the next socket starts it anew
        async with SecureCommunicator(app, "/ws/", token=secret):
            assert layer.groups.get(connections.WORKERS_GROUP)
            assert registry.listener is not None and registry.ticker is not None
        assert registry.ticker is None
        for _ in range(1000):  # the woken listener leaves the group and ends
            if registry.listener is None and not layer.groups.get(connections.WORKERS_GROUP):
                break
            await asyncio.sleep(0.01)
        assert registry.listener is None
        assert not layer.groups.get(connections.WORKERS_GROUP)
    async with SecureCommunicator(app, "/ws/", token=secret) as socket:
        assert await remote.disconnect({"token": secret[:12]}, reason="revoked") is None
        assert await socket.receive_close(timeout=10) == 4401  # the new listener hears it


@pytest.mark.parametrize(("patterns", "origin", "allowed"), [
    (["allowed-domain.com"], "http://allowed-domain.com", True),
    (["allowed-domain.com"], "https://allowed-domain.com:8443", True),
    (["allowed-domain.com"], "https://sub.allowed-domain.com", False),
    (["allowed-domain.com"], "https://allowed-domain.com.evil.test", False),
    ([".allowed-domain.com"], "https://allowed-domain.com", True),
    ([".allowed-domain.com"], "https://a.b.allowed-domain.com", True),
    ([".allowed-domain.com"], "https://evilallowed-domain.com", False),
    (["https://.allowed-domain.com"], "http://www.allowed-domain.com", False),
    (["https://.allowed-domain.com"], "https://www.allowed-domain.com", True),
    (["*"], "https://anything.test", True),
    (["*"], "null", False),
])
async def test_origin_guard_takes_channels_origin_validator_patterns(make_user, patterns,
                                                                   origin, allowed):
    alice = await database_sync_to_async(make_user)("erin")
    app = OriginGuard(URLRouter([path("ws/", Plain.as_asgi())]), patterns)
    outcome = await SecureCommunicator(app, "/ws/", user=alice, origin=origin).outcome()
    assert outcome.accepted is allowed


@pytest.mark.parametrize("bad", ["", "ftp://allowed-domain.com", "http://exa mple.com",
                                 "https://example.com/path", "https://user@example.com",
                                 "https://example.com:99999", "*.*.example.com"])
def test_origin_guard_refuses_a_bad_pattern_when_built(bad):
    with pytest.raises(ImproperlyConfigured, match="OriginGuard"):
        OriginGuard(None, [bad])
    with pytest.raises(ImproperlyConfigured, match="list"):
        OriginGuard(None, "allowed-domain.com")  # a string, not a list
