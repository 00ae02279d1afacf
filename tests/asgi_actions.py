"""The example chat plus actions rated by every kind of key, for the rate-key tests."""

from django.core.asgi import get_asgi_application

http = get_asgi_application()  # sets Django up before the consumers are imported

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from chat.consumers import ChatConsumer  # noqa: E402
from django.urls import re_path  # noqa: E402

from wsops.consumers import action  # noqa: E402
from wsops.middleware import SecureWebsocketStack  # noqa: E402


def topic(scope, data):
    return data.get("topic")


class RatedConsumer(ChatConsumer):
    @action("by_ip", rate="3/m", key="ip")
    async def by_ip(self, data):
        return {"type": "ok"}

    @action("by_user", rate="3/m", key="user")
    async def by_user(self, data):
        return {"type": "ok"}

    @action("by_token", rate="3/m", key="token")
    async def by_token(self, data):
        return {"type": "ok"}

    @action("by_connection", rate="3/m", key="connection")
    async def by_connection(self, data):
        return {"type": "ok"}

    @action("by_topic", rate="3/m", key=topic)
    async def by_topic(self, data):
        return {"type": "ok"}

    @action("first", rate="4/m", group="shared")
    async def first(self, data):
        return {"type": "ok"}

    @action("second", rate="4/m", group="shared")
    async def second(self, data):
        return {"type": "ok"}


application = ProtocolTypeRouter({"http": http, "websocket": SecureWebsocketStack(URLRouter([
    re_path(r"^ws/chat/(?P<room>[\w-]{1,50})/$", RatedConsumer.as_asgi()),
]))})
