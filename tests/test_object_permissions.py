"""HasObjectPerm and has_object_permission: the example's rooms, on three backends.

Backends: the example's own RoomMembershipBackend, django-guardian's and
django-rules' object-permission backends, each answering ``user.has_perm(perm, obj)``.
"""

import pytest
import rules
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from chat.models import Room
from django.contrib.auth.models import AnonymousUser
from guardian.shortcuts import assign_perm, remove_perm

from tests.helpers import poll
from wsops.handshake.state import Handshake
from wsops.permissions import BasePermission, HasObjectPerm, IsAuthenticated, PermissionCache
from wsops.testing import SecureCommunicator

pytestmark = pytest.mark.django_db(transaction=True)
MODEL = "django.contrib.auth.backends.ModelBackend"
BACKENDS = {
    "example": [MODEL, "chat.backends.RoomMembershipBackend"],
    "guardian": [MODEL, "guardian.backends.ObjectPermissionBackend"],
    "rules": ["rules.permissions.ObjectPermissionBackend", MODEL],
}


@rules.predicate
def is_room_member(user, room):
    return room is not None and room.members.filter(pk=user.pk).exists()


rules.set_perm("chat.join_room", is_room_member)


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, settings):
    """Each test runs once per backend; ``grant``/``revoke`` speak that backend's language."""
    settings.AUTHENTICATION_BACKENDS = BACKENDS[request.param]
    return request.param


@pytest.fixture
def rooms(make_user):
    @database_sync_to_async
    def make():
        alice, bob = make_user("alice"), make_user("bob")
        return alice, bob, Room.objects.create(name="ops"), Room.objects.create(name="lobby")

    return make


@database_sync_to_async
def set_access(backend, user, room, allowed):
    """Membership (example, rules) or a guardian object permission, given or taken."""
    if backend == "guardian":
        (assign_perm if allowed else remove_perm)("chat.join_room", user, room)
    elif allowed:
        room.members.add(user)
    else:
        room.members.remove(user)


async def grant(backend, user, room):
    await set_access(backend, user, room, True)


async def revoke(backend, user, room):
    await set_access(backend, user, room, False)


def room_socket(app, room, user):
    """A browser-like socket: session cookie and an allowed Origin."""
    return SecureCommunicator(app, f"/ws/room/{room}/", user=user,
                              origin="https://app.example.com")


async def say(socket, text="hi"):
    await socket.send_json({"action": "say", "text": text})
    return await socket.receive_json()


async def test_only_members_join_and_a_missing_room_is_refused_alike(app, backend, rooms,
                                                                      settings):
    settings.WSOPS = {**settings.WSOPS, "REJECT_WITH": "close_code"}
    alice, bob, ops, _ = await rooms()
    await grant(backend, alice, ops)
    async with room_socket(app, "ops", alice) as member:
        assert member.accepted
        assert await say(member) == {"type": "said", "text": "hi"}
    refusals = []
    for room, user in (("ops", bob), ("nowhere", alice), ("ops", None)):
        socket = room_socket(app, room, user)
        await socket.connect()
        refusals.append((socket.accepted, await socket.receive_close()))
    # An outsider and a missing room read the same (no hint the room exists); anonymous 4401.
    assert refusals == [(True, 4403), (True, 4403), (True, 4401)]


async def test_by_default_a_refused_join_is_a_403(app, rooms):
    _, bob, _, _ = await rooms()
    refused = await room_socket(app, "ops", bob).connect()
    assert refused.refused_before_accept and refused.status == 403


async def test_losing_membership_refuses_the_next_action_within_the_cache_window(
        app, backend, rooms, settings):
    settings.WSOPS = {**settings.WSOPS, "PERMISSION_CACHE_SECONDS": 1}
    alice, _, ops, _ = await rooms()
    await grant(backend, alice, ops)
    async with room_socket(app, "ops", alice) as socket:
        assert (await say(socket))["type"] == "said"
        await revoke(backend, alice, ops)

        async def refused():
            frame = await say(socket)
            return frame.get("code") == "forbidden"

        assert await poll(refused, deadline=30), "a removed member must be refused"


async def test_answers_are_cached_per_connection(app, rooms, settings):
    settings.AUTHENTICATION_BACKENDS = BACKENDS["example"]
    settings.WSOPS = {**settings.WSOPS, "PERMISSION_CACHE_SECONDS": 3600}
    alice, _, ops, _ = await rooms()
    await grant("example", alice, ops)
    async with room_socket(app, "ops", alice) as socket:
        assert (await say(socket))["type"] == "said"
        await revoke("example", alice, ops)
        assert (await say(socket))["type"] == "said"  # the connection's answer, kept
    refused = await room_socket(app, "ops", alice).connect()
    assert refused.refused_before_accept  # a new connection asks again


async def test_action_time_object_comes_from_the_validated_payload(app, backend, rooms):
    alice, _, ops, _ = await rooms()
    await grant(backend, alice, ops)
    async with room_socket(app, "ops", alice) as socket:
        async def post(room):
            await socket.send_json({"action": "post", "room": room, "text": "t"})
            return await socket.receive_json()

        assert (await post("ops")) == {"type": "posted", "room": "ops", "text": "t"}
        denied, missing = await post("lobby"), await post("nowhere")
        # Each object has its own answer; a missing one reads exactly like a forbidden one.
        assert denied == missing == {
            "type": "error", "code": "forbidden", "action": "post", "id": None,
            "errors": {"__all__": [{"message": "You do not have permission for this action.",
                                    "code": "permission_denied"}]}}
        assert (await post("not a slug"))["code"] == "invalid"  # validated before loading


# --- the permission classes on their own ----------------------------------------------

def scope_of(user, **kwargs):
    handshake = Handshake(ip="127.0.0.1", ip_key="127.0.0.1", origin=None, has_cookie=False,
                          offers_marker=False, presents_credential=False)
    return {"type": "websocket", "user": user, "wsops": handshake,
            "url_route": {"kwargs": kwargs}}


async def test_async_get_object_composition_and_caching_per_object(rooms, settings):
    settings.AUTHENTICATION_BACKENDS = BACKENDS["example"]
    alice, _, ops, _ = await rooms()
    await grant("example", alice, ops)

    async def by_name(scope, data):
        return await Room.objects.filter(name=data["room"]).afirst()

    member = HasObjectPerm("chat.join_room", get_object=by_name)
    scope, cache = scope_of(alice), PermissionCache()
    assert member.uses_data and (IsAuthenticated() & member).uses_data
    assert await cache.allows(member, scope, {"room": "ops"})
    assert not await cache.allows(member, scope, {"room": "lobby"})
    assert not await cache.allows(member, scope, {"room": "nowhere"})
    assert await cache.allows(~member, scope, {"room": "lobby"})
    assert await cache.allows(member | IsAuthenticated(), scope, {"room": "lobby"})
    assert not await cache.allows(member & IsAuthenticated(), scope, {"room": "lobby"})
    await revoke("example", alice, ops)
    assert await cache.allows(member, scope, {"room": "ops"})  # cached for this object
    assert not await PermissionCache().allows(member, scope, {"room": "ops"})
    anonymous = scope_of(AnonymousUser())
    assert not await PermissionCache().allows(member, anonymous, {"room": "lobby"})


async def test_hand_written_object_check_as_in_drf(rooms):
    alice, bob, ops, _ = await rooms()
    await sync_to_async(ops.members.add)(alice)

    class IsRoomMember(BasePermission):
        cacheable = True

        def get_object(self, scope):
            return Room.objects.filter(name=scope["url_route"]["kwargs"]["room"]).first()

        async def has_object_permission(self, scope, obj):
            return await obj.members.filter(pk=scope["user"].pk).aexists()

    check = IsRoomMember()
    assert not check.uses_data
    assert await check.has_permission(scope_of(alice, room="ops"))
    assert not await check.has_permission(scope_of(bob, room="ops"))
    assert not await check.has_permission(scope_of(alice, room="nowhere"))
    assert await BasePermission().has_object_permission(scope_of(alice), ops)  # DRF's default
    with pytest.raises(TypeError):
        HasObjectPerm("chat.join_room", get_object="not callable")
