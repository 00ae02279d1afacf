"""An echo consumer behind Channels' own origin check; every frame it receives is
printed (``RECEIVED``), so the tests can count what the server saw."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bare_settings")
http = get_asgi_application()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

urlpatterns: list = []


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        print("RECEIVED", len(text_data or bytes_data or ""), flush=True)
        await self.send(text_data=text_data, bytes_data=bytes_data)


application = ProtocolTypeRouter({
    "http": http,
    "websocket": AllowedHostsOriginValidator(URLRouter([path("ws/echo/", Echo.as_asgi())])),
})
