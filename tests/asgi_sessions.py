"""ASGI applications whose sockets authenticate by session through Channels' own middleware.

The cookie rules (wsops.E004, wsops.W003) must see these without wsops' cookie
transport: each app wraps the same chat routes in one way of reading the session.
"""

from channels.auth import AuthMiddleware, AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from channels.sessions import SessionMiddleware, SessionMiddlewareStack
from django.urls import path

from tests.asgi_variants import HomeMadeMiddleware, routes
from wsops.middleware import SecureWebsocketStack


def guarded(stack):
    return ProtocolTypeRouter({"websocket": AllowedHostsOriginValidator(stack)})


auth_stack = guarded(AuthMiddlewareStack(URLRouter(routes)))
session_stack = guarded(SessionMiddlewareStack(URLRouter(routes)))
session_middleware = guarded(HomeMadeMiddleware(SessionMiddleware(URLRouter(routes))))
auth_middleware = guarded(HomeMadeMiddleware(AuthMiddleware(URLRouter(routes))))
# Only one of two routes reads the session: the rule names that one.
mixed = ProtocolTypeRouter({"websocket": URLRouter([
    path("api/", SecureWebsocketStack(URLRouter(routes))),
    path("web/", AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(routes)))),
])})
