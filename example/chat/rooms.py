"""Rooms only members may join: object permissions, checked at connect and per action."""

from wsops.consumers import SecureJsonWebsocketConsumer, action
from wsops.permissions import HasObjectPerm, IsAuthenticated

from .forms import PostForm, SendMessageForm
from .models import Room


def room_of_socket(scope):
    """Connect time: the room in the URL (a missing room is refused like a forbidden one)."""
    return Room.objects.get(name=scope["url_route"]["kwargs"]["room"])


def room_in_payload(scope, data):
    """Action time: the room the validated payload names."""
    return Room.objects.filter(name=data["room"]).first()


is_member = HasObjectPerm("chat.join_room", get_object=room_of_socket)


class RoomConsumer(SecureJsonWebsocketConsumer):
    connect_permission = IsAuthenticated() & is_member  # 4401 anonymous, 4403 not a member

    async def connect(self):
        await self.accept()

    # Re-checked per message (cached PERMISSION_CACHE_SECONDS): a member removed from
    # the room has their next message refused within that window.
    @action("say", permission=is_member, form=SendMessageForm, rate="30/m")
    async def say(self, data):
        return {"type": "said", "text": data["text"]}

    @action("post", permission=HasObjectPerm("chat.join_room", get_object=room_in_payload),
            form=PostForm, rate="10/m", key="user", group="posts")
    async def post(self, data):
        return {"type": "posted", "room": data["room"], "text": data["text"]}

    async def chat_message(self, event):
        await self.send_json({"type": "message", "text": event["text"], "user": event["user"]})
