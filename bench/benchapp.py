"""The applications the benchmark serves, one per daphne process.

- ``bare``: an ``AsyncJsonWebsocketConsumer`` echo with no middleware.
- ``channels_stack``: the same echo behind Channels' own
  ``AllowedHostsOriginValidator(AuthMiddlewareStack(...))`` (session cookie).
- ``secure``: ``SecureWebsocketStack`` around a ``SecureJsonWebsocketConsumer``
  whose ``echo`` action validates a form (size cap, per-connection and per-user
  throttles on); its ``bench_push`` handler receives the push fan-out's events.

Each also answers ``GET /bench/stats`` with the number of Redis round trips the
process made (counted where redis-py sends a command or a pipeline), so the
runner can report round trips per handshake and per message.
"""

import json
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
django_http = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django import forms  # noqa: E402
from django.urls import path  # noqa: E402
from redis.asyncio.connection import AbstractConnection  # noqa: E402

from wsops.consumers import SecureJsonWebsocketConsumer, action  # noqa: E402
from wsops.middleware import SecureWebsocketStack  # noqa: E402
from wsops.permissions import IsAuthenticated  # noqa: E402

ROUND_TRIPS = {"redis": 0}
_send_packed = AbstractConnection.send_packed_command


async def _counted_send(self, command, check_health=True):
    ROUND_TRIPS["redis"] += 1
    return await _send_packed(self, command, check_health)


AbstractConnection.send_packed_command = _counted_send


class BareEcho(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        await self.send_json({"type": "echo", "text": content.get("text")})


class EchoForm(forms.Form):
    text = forms.CharField(max_length=2000, strip=False)


class SecureEcho(SecureJsonWebsocketConsumer):
    connect_permission = IsAuthenticated()

    @action("echo", form=EchoForm)
    async def echo(self, data):
        return {"type": "echo", "text": data["text"]}

    async def bench_push(self, event):
        """Where ``wsops.push`` delivers the push fan-out's events."""
        await self.send(text_data=event["text"])


async def stats(scope, receive, send):
    """HTTP: the Redis round-trip counter; everything else goes to Django."""
    if scope["type"] == "http" and scope["path"] == "/bench/stats":
        body = json.dumps(ROUND_TRIPS).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return None
    return await django_http(scope, receive, send)


routes = [path("ws/echo/", BareEcho.as_asgi())]
secure_routes = [path("ws/echo/", SecureEcho.as_asgi())]

bare = ProtocolTypeRouter({"http": stats, "websocket": URLRouter(routes)})
channels_stack = ProtocolTypeRouter({
    "http": stats,
    "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(routes))),
})
secure = ProtocolTypeRouter({"http": stats,
                             "websocket": SecureWebsocketStack(URLRouter(secure_routes))})
