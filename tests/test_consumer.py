"""SecureJsonWebsocketConsumer: size cap, error codes, permissions, throttles, DB hygiene."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from django import forms
from django.urls import re_path

from wsops import tokens
from wsops.consumers import SecureJsonWebsocketConsumer, action
from wsops.middleware import SecureWebsocketStack
from wsops.permissions import HasPerm, HasScope, InGroup, IsAuthenticated
from wsops.testing import LiveSocket, SecureCommunicator

pytestmark = pytest.mark.django_db(transaction=True)
PATH = "/ws/chat/lobby/"


@pytest.fixture
def token_for(make_user):
    @database_sync_to_async
    def make(username="alice", perms=("chat.send_message",), scopes=("chat:write",), **kw):
        user = make_user(username, perms=perms, **kw)
        return tokens.issue(user, scopes=list(scopes))[1]

    return make


async def exchange(socket, message):
    await socket.send_json(message)
    return await socket.receive_json()


async def test_error_codes_are_stable(app, token_for):
    async with SecureCommunicator(app, PATH, token=await token_for()) as socket:
        await socket.send_text("{not json")
        assert (await socket.receive_json())["code"] == "invalid_json"
        await socket.send_text("[1, 2]")
        assert (await socket.receive_json())["code"] == "invalid_json"
        assert (await exchange(socket, {"text": "no action"}))["code"] == "unknown_action"
        assert (await exchange(socket, {"action": "nope"}))["code"] == "unknown_action"
        assert (await exchange(socket, {"action": ["echo"]}))["code"] == "unknown_action"
        error = await exchange(socket, {"action": "echo", "id": 9})
        assert error["code"] == "invalid" and "text" in error["errors"] and error["id"] == 9
        error = await exchange(socket, {"action": "echo", "text": {"nested": 1}})
        assert error["errors"] == {"text": [{"message": "Expected a string, number, boolean "
                                             "or null.", "code": "invalid_type"}]}
        error = await exchange(socket, {"action": "send_message", "text": "x" * 501})
        assert error["code"] == "invalid"  # the form bounds string length
        assert error["errors"]["text"][0]["code"] == "max_length"
        reply = await exchange(socket, {"action": "echo", "text": "ok", "id": "a1"})
        assert reply == {"type": "echo", "text": "ok", "id": "a1"}


def assert_error_shape(frame):
    """One shape for every error frame (see wsops.consumers' docstring)."""
    extra = {"retry_after"} if frame["code"] == "rate_limited" else set()
    assert set(frame) == {"type", "code", "errors", "action", "id"} | extra
    assert frame["type"] == "error"
    assert frame["errors"] and all(
        isinstance(entries, list) and entries and all(
            set(entry) == {"message", "code"} and isinstance(entry["message"], str)
            and entry["message"] and isinstance(entry["code"], str) for entry in entries)
        for entries in frame["errors"].values())


async def test_every_error_frame_has_one_shape_and_echoes_action_and_id(app, token_for,
                                                                       settings):
    settings.WSOPS = {**settings.WSOPS, "RATES": {"message": "8/m"}, "THROTTLE_CLOSE_AFTER": 5}
    async with SecureCommunicator(app, PATH, token=await token_for(perms=())) as socket:
        cases = [
            ({"action": "echo", "id": 1}, "invalid", "echo", "text"),
            ({"action": "nope", "id": "two"}, "unknown_action", "nope", "action"),
            ({"id": 3}, "unknown_action", None, "action"),
            ({"action": "x" * 65, "id": 4}, "unknown_action", None, "action"),  # not echoed
            ({"action": "send_message", "text": "hi", "id": 5}, "forbidden", "send_message",
             "__all__"),
            ({"action": "echo", "text": [1], "id": 6}, "invalid", "echo", "text"),
            ({"action": "echo", "text": "ok", "id": 7.5}, "invalid", "echo", "id"),
        ]
        for message, code, action_name, field in cases:
            error = await exchange(socket, message)
            assert_error_shape(error)
            expected_id = message["id"] if field != "id" else None
            assert (error["code"], error["action"], error["id"]) == (code, action_name,
                                                                    expected_id)
            assert field in error["errors"]
        await socket.send_text('{"action": "echo", "id": 8')  # cut short: nothing to read
        error = await socket.receive_json()
        assert_error_shape(error)
        assert (error["code"], error["action"], error["id"]) == ("invalid_json", None, None)
        error = await exchange(socket, {"action": "echo", "text": "over", "id": "flood-1"})
        assert_error_shape(error)  # the 9th message in a minute: refused before parsing...
        assert (error["code"], error["action"], error["id"]) == ("rate_limited", "echo",
                                                                "flood-1")  # ...yet echoed
        assert error["errors"]["__all__"][0]["code"] == "message_rate"


@pytest.mark.parametrize("bad_id", [{"a": 1}, [1], 1.5, True, False, "x" * 65, 10 ** 64,
                                    -(10 ** 64)])
async def test_ids_that_cannot_be_echoed_are_refused_not_dropped(app, token_for, bad_id):
    async with SecureCommunicator(app, PATH, token=await token_for()) as socket:
        error = await exchange(socket, {"action": "echo", "text": "hi", "id": bad_id})
        assert_error_shape(error)
        assert (error["code"], error["id"]) == ("invalid", None)
        assert error["errors"]["id"][0]["code"] == "invalid_id"
        assert await socket.communicator.receive_nothing(0.05)  # the handler did not run


@pytest.mark.parametrize("good_id", ["x" * 64, 10 ** 64 - 1, -(10 ** 64) + 1, 0, "", None])
async def test_ids_up_to_64_characters_or_digits_are_echoed(app, token_for, good_id):
    async with SecureCommunicator(app, PATH, token=await token_for()) as socket:
        reply = await exchange(socket, {"action": "echo", "text": "hi", "id": good_id})
        assert reply["type"] == "echo" and reply.get("id") == good_id


@pytest.mark.parametrize("text", ['{"action": "echo", "text": NaN}',
                                  '{"action": "echo", "text": -Infinity}',
                                  '{"action": "echo", "text": 1e400}'])
async def test_non_json_numbers_are_invalid_json(app, token_for, text):
    async with SecureCommunicator(app, PATH, token=await token_for()) as socket:
        await socket.send_text(text)
        assert (await socket.receive_json())["code"] == "invalid_json"


class TagForm(forms.Form):
    meta = forms.JSONField(required=False)
    tags = forms.MultipleChoiceField(choices=[("a", "A"), ("b", "B")], required=False)
    title = forms.CharField(required=False)


class PayloadConsumer(SecureJsonWebsocketConsumer):
    @action("raw")
    async def raw(self, data):
        return {"type": "raw", "data": data}

    @action("tag", form=TagForm)
    async def tag(self, data):
        return {"type": "tag", "meta": data["meta"], "meta_type": type(data["meta"]).__name__,
                "tags": data["tags"], "title": data["title"]}


@pytest.fixture
def payloads():
    return SecureWebsocketStack(URLRouter([re_path(r"^ws/p/$", PayloadConsumer.as_asgi())]))


async def test_actions_without_a_form_receive_the_payload(payloads, token_for):
    async with SecureCommunicator(payloads, "/ws/p/", token=await token_for()) as socket:
        payload = {"text": "hi", "nested": {"list": [1, {"a": None}]}}
        reply = await exchange(socket, {"action": "raw", "id": 1, **payload})
        assert reply == {"type": "raw", "data": payload, "id": 1}  # without action and id


async def test_nested_values_reach_the_form_fields_that_take_them(payloads, token_for):
    async with SecureCommunicator(payloads, "/ws/p/", token=await token_for()) as socket:
        reply = await exchange(socket, {"action": "tag", "meta": {"k": [1, 2, {"x": True}]},
                                        "tags": ["a", "b"], "title": "t"})
        assert reply == {"type": "tag", "meta": {"k": [1, 2, {"x": True}]}, "meta_type": "dict",
                         "tags": ["a", "b"], "title": "t"}
        reply = await exchange(socket, {"action": "tag", "meta": "[1, 2]"})
        assert (reply["meta"], reply["meta_type"]) == ("[1, 2]", "JSONString")  # not decoded
        error = await exchange(socket, {"action": "tag", "tags": ["a", "c"]})
        assert error["errors"]["tags"][0]["code"] == "invalid_choice"
        error = await exchange(socket, {"action": "tag", "tags": [["a"]], "title": {"x": 1},
                                        "unknown": [1]})
        assert_error_shape(error)
        assert {field: entries[0]["code"] for field, entries in error["errors"].items()} == \
            {"tags": "invalid_type", "title": "invalid_type", "unknown": "invalid_type"}


async def test_handler_receives_cleaned_data_only(app, token_for):
    async with SecureCommunicator(app, PATH, token=await token_for()) as socket:
        reply = await exchange(socket, {"action": "send_message", "text": "  hi  ",
                                        "is_admin": True})
        assert reply == {"type": "sent"}
        broadcast = await socket.receive_json()
        assert broadcast == {"type": "message", "text": "hi", "user": "alice"}


async def test_missing_permission_answers_forbidden(app, token_for, events):
    secret = await token_for("bob", perms=())
    async with SecureCommunicator(app, PATH, token=secret) as socket:
        error = await exchange(socket, {"action": "send_message", "text": "hi"})
        assert error["code"] == "forbidden" and error["action"] == "send_message"
        assert await socket.communicator.receive_nothing(0.1)  # the handler did not run
    assert [e["kind"] for e in events] == ["permission"]


async def test_missing_token_scope_answers_forbidden(app, token_for):
    async with SecureCommunicator(app, PATH, token=await token_for(scopes=())) as socket:
        assert (await exchange(socket, {"action": "send_message", "text": "hi"}))["code"] == \
            "forbidden"


async def test_invalid_messages_past_the_limit_close_4400(app, token_for, settings, events):
    settings.WSOPS = {**settings.WSOPS, "INVALID_MESSAGE_LIMIT": 3}
    async with SecureCommunicator(app, PATH, token=await token_for()) as socket:
        for _ in range(3):
            assert (await exchange(socket, {"action": "nope"}))["code"] == "unknown_action"
        await socket.send_json({"action": "nope"})
        assert await socket.receive_close() == 4400
    assert events[-1]["reason"] == "too_many_invalid_messages"


async def test_message_flood_gets_retry_after_then_4429(app, token_for, settings):
    settings.WSOPS = {**settings.WSOPS, "RATES": {"message": "3/m"}, "THROTTLE_CLOSE_AFTER": 2}
    async with SecureCommunicator(app, PATH, token=await token_for()) as socket:
        for _ in range(3):
            assert (await exchange(socket, {"action": "echo", "text": "x"}))["type"] == "echo"
        error = await exchange(socket, {"action": "echo", "text": "x"})
        assert error["code"] == "rate_limited" and 0 < error["retry_after"] <= 20
        await socket.send_json({"action": "echo", "text": "x"})
        assert await socket.receive_close() == 4429


async def test_action_rate(app, token_for, settings):
    settings.WSOPS = {**settings.WSOPS, "THROTTLE_CLOSE_AFTER": 100}
    async with SecureCommunicator(app, PATH, token=await token_for()) as socket:
        for _ in range(30):  # send_message is rate="30/m"
            assert (await exchange(socket, {"action": "send_message", "text": "x"})) == \
                {"type": "sent"}
            await socket.receive_json()  # the broadcast
        error = await exchange(socket, {"action": "send_message", "text": "x"})
        assert error["code"] == "rate_limited" and error["retry_after"] > 1


async def test_oversize_frame_closes_1009_before_parsing(app, token_for, settings, events):
    settings.WSOPS = {**settings.WSOPS, "MAX_MESSAGE_BYTES": 100}
    async with SecureCommunicator(app, PATH, token=await token_for()) as socket:
        await socket.send_text("é" * 60)  # 60 characters, 120 bytes
        assert await socket.receive_close() == 1009
    assert events[-1]["kind"] == "size" and events[-1]["size"] == 120


async def test_binary_frames_are_refused(app, token_for):
    async with SecureCommunicator(app, PATH, token=await token_for()) as socket:
        await socket.communicator.send_to(bytes_data=b"\x00\x01")
        assert await socket.receive_close() == 1003


async def test_class_level_groups_are_joined_like_channels_does(make_user):
    from channels.layers import get_channel_layer

    class Announcements(SecureJsonWebsocketConsumer):
        groups = ["announcements"]

        async def announce(self, event):
            await self.send_json({"type": "announcement", "text": event["text"]})

    app = SecureWebsocketStack(URLRouter([re_path(r"^ws/a/$", Announcements.as_asgi())]))
    user = await database_sync_to_async(make_user)("listener")
    secret = (await database_sync_to_async(tokens.issue)(user))[1]
    async with SecureCommunicator(app, "/ws/a/", token=secret) as socket:
        await get_channel_layer().group_send("announcements", {"type": "announce",
                                                               "text": "hello"})
        assert await socket.receive_json() == {"type": "announcement", "text": "hello"}


class Members(forms.Form):
    text = forms.CharField(max_length=10)


class GuardedConsumer(SecureJsonWebsocketConsumer):
    connect_permission = IsAuthenticated() & HasPerm("chat.send_message")
    accept_binary = True

    async def receive_bytes(self, data):
        await self.send(bytes_data=data[::-1])

    @action("staff", permission=InGroup("staff"))
    async def staff(self, data):
        return {"type": "staff"}

    @action("scoped", permission=HasScope("a:b") | HasPerm("chat.send_message"))
    async def scoped(self, data):
        return {"type": "scoped"}

    @action("stale")
    async def stale(self, data):
        from asgiref.sync import sync_to_async
        from django.db import connection

        def make_stale():
            connection.ensure_connection()
            connection.close_at = 0  # CONN_MAX_AGE elapsed long ago
            return connection.connection

        self.stale_connection = await sync_to_async(make_stale)()
        return {"type": "stale"}

    @action("same")
    async def same(self, data):
        from asgiref.sync import sync_to_async
        from django.db import connection

        current = await sync_to_async(lambda: connection.connection)()
        return {"type": "same", "same": current is self.stale_connection}

    @action("orm", form=Members, uses_db=True)
    async def orm(self, data):
        from django.contrib.auth.models import User

        return {"type": "orm", "users": await User.objects.acount()}


@pytest.fixture
def guarded():
    return SecureWebsocketStack(URLRouter([re_path(r"^ws/g/$", GuardedConsumer.as_asgi())]))


@pytest.mark.parametrize("reject_with", ["handshake", "close_code"])
async def test_connect_permission(guarded, make_user, settings, reject_with):
    settings.WSOPS = {**settings.WSOPS, "REJECT_WITH": reject_with,
                      "TOKEN_TRANSPORTS": ["subprotocol", "header", "query", "cookie"]}
    anonymous = await SecureCommunicator(guarded, "/ws/g/", origin="https://app.example.com"
                                         ).outcome()
    plain = await database_sync_to_async(make_user)("plain")
    no_perm = await SecureCommunicator(
        guarded, "/ws/g/", token=(await database_sync_to_async(tokens.issue)(plain))[1]
    ).outcome()
    if reject_with == "handshake":
        assert anonymous.refused_before_accept and no_perm.refused_before_accept
    else:
        assert (anonymous.close_code, no_perm.close_code) == (4401, 4403)


async def test_binary_opt_in_and_composed_permissions(guarded, make_user):
    user = await database_sync_to_async(make_user)("p", perms=("chat.send_message",))
    secret = (await database_sync_to_async(tokens.issue)(user))[1]
    async with SecureCommunicator(guarded, "/ws/g/", token=secret) as socket:
        await socket.communicator.send_to(bytes_data=b"abc")
        assert await socket.communicator.receive_from() == b"cba"
        assert (await exchange(socket, {"action": "staff"}))["code"] == "forbidden"
        assert (await exchange(socket, {"action": "scoped"}))["type"] == "scoped"


async def test_permission_cache_expires(guarded, make_user, settings):
    settings.WSOPS = {**settings.WSOPS, "PERMISSION_CACHE_SECONDS": 1}
    user = await database_sync_to_async(make_user)("p", perms=("chat.send_message",))
    secret = (await database_sync_to_async(tokens.issue)(user))[1]
    async with SecureCommunicator(guarded, "/ws/g/", token=secret, timeout=3) as socket:
        assert (await exchange(socket, {"action": "staff"}))["code"] == "forbidden"

        @database_sync_to_async
        def join_staff():
            from django.contrib.auth.models import Group

            user.groups.add(Group.objects.create(name="staff"))

        await join_staff()
        assert (await exchange(socket, {"action": "staff"}))["code"] == "forbidden"  # cached
        await asyncio.sleep(1.1)
        assert (await exchange(socket, {"action": "staff"}))["type"] == "staff"


class RawSocket:
    """asgiref's plain communicator: Channels' own test communicator replaces
    close_old_connections with a no-op while a message is handled, which would
    hide exactly what these tests look at."""

    def __init__(self, app, path, secret):
        from asgiref.testing import ApplicationCommunicator

        self.communicator = ApplicationCommunicator(app, {
            "type": "websocket", "path": path, "query_string": b"", "headers": [],
            "subprotocols": ["wsops", secret], "client": ["127.0.0.1", 5000],
        })

    async def __aenter__(self):
        await self.communicator.send_input({"type": "websocket.connect"})
        assert (await self.communicator.receive_output(3))["type"] == "websocket.accept"
        return self

    async def exchange(self, message):
        import json

        await self.communicator.send_input({"type": "websocket.receive",
                                            "text": json.dumps(message)})
        return json.loads((await self.communicator.receive_output(3))["text"])

    async def __aexit__(self, *exc):
        await self.communicator.send_input({"type": "websocket.disconnect", "code": 1000})
        await self.communicator.wait(3)


async def test_revoked_django_permission_stops_working_within_the_cache_time(app, token_for,
                                                                             settings):
    settings.WSOPS = {**settings.WSOPS, "PERMISSION_CACHE_SECONDS": 1}
    async with SecureCommunicator(app, PATH, token=await token_for(), timeout=3) as socket:
        assert (await exchange(socket, {"action": "send_message", "text": "a"}))["type"] == "sent"
        await socket.receive_json()

        @database_sync_to_async
        def revoke_permission():
            from django.contrib.auth import get_user_model

            get_user_model().objects.get(username="alice").user_permissions.clear()

        await revoke_permission()
        await asyncio.sleep(1.1)
        assert (await exchange(socket, {"action": "send_message", "text": "b"}))["code"] == \
            "forbidden"


async def test_uses_db_action_closes_a_stale_connection_first(guarded, make_user, monkeypatch):
    """The per-message thread hop is gone, but a stale connection is still closed."""
    from wsops.messages import hygiene

    user = await database_sync_to_async(make_user)("p", perms=("chat.send_message",))
    secret = (await database_sync_to_async(tokens.issue)(user))[1]
    async with RawSocket(guarded, "/ws/g/", secret) as socket:
        monkeypatch.setattr(hygiene.db_hygiene, "last", 1e18)  # no interval cleanup here
        await socket.exchange({"action": "stale"})
        assert (await socket.exchange({"action": "same"}))["same"] is True  # no hop
        reply = await socket.exchange({"action": "orm", "text": "x"})
        assert reply["type"] == "orm" and reply["users"] == 1
        assert (await socket.exchange({"action": "same"}))["same"] is False  # closed first


async def test_plain_messages_hop_at_most_once_per_interval(app, token_for, monkeypatch):
    import channels.db

    from wsops.messages import hygiene

    calls = []
    original = channels.db.close_old_connections
    monkeypatch.setattr(channels.db, "close_old_connections",
                        lambda: (calls.append(1), original())[1])
    monkeypatch.setattr(hygiene.db_hygiene, "last", float("-inf"))  # never 0.0: fresh clocks
    async with RawSocket(app, PATH, await token_for()) as socket:
        before = len(calls)
        for _ in range(20):
            assert (await socket.exchange({"action": "echo", "text": "x"}))["type"] == "echo"
        assert len(calls) - before == 1  # the interval cleanup ran once, not 20 times
        monkeypatch.setattr(hygiene.db_hygiene, "last", float("-inf"))  # interval elapsed
        await socket.exchange({"action": "echo", "text": "x"})
        assert len(calls) - before == 2


@pytest.mark.e2e
async def test_oversize_frame_on_real_daphne_leaves_other_sockets_served(daphne_server,
                                                                         token_for):
    server = daphne_server(wsops={"MAX_MESSAGE_BYTES": 1024})
    good = await LiveSocket.open(server.url(), token=await token_for("good"))
    bad = await LiveSocket.open(server.url(), token=await token_for("bad"))
    await bad.send("x" * 5000)
    assert await bad.receive_close() == 1009
    await good.send_json({"action": "echo", "text": "still here"})
    assert (await good.recv_json())["text"] == "still here"
    await good.close()
    fresh = await LiveSocket.open(server.url(), token=await token_for("fresh"))
    assert fresh.accepted
    await fresh.close()
