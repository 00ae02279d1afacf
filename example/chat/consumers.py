"""The example chat: every message is an action, validated by a form."""

from wsops.consumers import SecureJsonWebsocketConsumer, action
from wsops.permissions import HasPerm, HasScope, IsAuthenticated

from .forms import EchoForm, SendMessageForm


class ChatConsumer(SecureJsonWebsocketConsumer):
    connect_permission = IsAuthenticated()

    async def connect(self):
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.room_group = f"chat.{self.room}"
        await self.channel_layer.group_add(self.room_group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.room_group, self.channel_name)

    @action("send_message", permission=HasPerm("chat.send_message") & HasScope("chat:write"),
            form=SendMessageForm, rate="30/m")
    async def send_message(self, data):
        user = self.scope["user"]
        await self.channel_layer.group_send(
            self.room_group, {"type": "chat.message", "text": data["text"], "user": user.username}
        )
        return {"type": "sent"}

    @action("echo", form=EchoForm)
    async def echo(self, data):
        return {"type": "echo", "text": data["text"]}

    @action("whoami")
    async def whoami(self, data):
        handshake = self.scope["wsops"]
        return {
            "type": "whoami",
            "user": self.scope["user"].username,
            "auth_method": handshake.auth_method,
            "ip": handshake.ip,
        }

    async def chat_message(self, event):
        await self.send_json({"type": "message", "text": event["text"], "user": event["user"]})
