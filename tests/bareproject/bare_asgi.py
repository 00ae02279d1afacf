"""An echo consumer behind Channels' own origin check (``/ws/echo/``) and behind a naive
one (``/ws/naive/``); every frame it receives is printed (``RECEIVED``), so the tests
can count what the server saw."""

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


class NaiveOriginCheck:
    """A home-made origin check, as seen in the wild: a suffix match (``/ws/naive/``)."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        origin = dict(scope["headers"]).get(b"origin", b"").decode("latin-1")
        if not origin.endswith("app.example.com"):
            return await send({"type": "websocket.close"})
        return await self.inner(scope, receive, send)


application = ProtocolTypeRouter({
    "http": http,
    "websocket": URLRouter([
        path("ws/echo/", AllowedHostsOriginValidator(Echo.as_asgi())),
        path("ws/naive/", NaiveOriginCheck(Echo.as_asgi())),
    ]),
})
