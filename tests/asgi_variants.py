"""ASGI applications with different stacks, for the audit's walker."""

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from chat.consumers import ChatConsumer
from django.core.asgi import get_asgi_application
from django.urls import path, re_path

from wsops.middleware import SecureWebsocketStack

routes = [re_path(r"^ws/chat/(?P<room>\w+)/$", ChatConsumer.as_asgi())]
http = get_asgi_application()


class HomeMadeMiddleware:
    """Unknown to the audit: walked through and reported as unknown."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        return await self.inner(scope, receive, send)


channels_only = ProtocolTypeRouter({
    "http": http,
    "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(routes))),
})
no_origin_check = ProtocolTypeRouter({"websocket": AuthMiddlewareStack(URLRouter(routes))})
secure = ProtocolTypeRouter({"websocket": SecureWebsocketStack(URLRouter(routes))})
custom = ProtocolTypeRouter({
    "websocket": HomeMadeMiddleware(SecureWebsocketStack(URLRouter([
        path("api/", URLRouter(routes)),
    ]))),
})
http_only = ProtocolTypeRouter({"http": http})

from wsops.middleware import ConnectThrottle, OriginGuard  # noqa: E402

no_auth = ProtocolTypeRouter({"websocket": ConnectThrottle(OriginGuard(URLRouter(routes)))})
