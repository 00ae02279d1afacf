"""strawberry-graphql's Channels integration behind SecureWebsocketStack (graphql-transport-ws).

The subscription ``whoami`` (logged-in sockets only) yields the socket's user, how it
authenticated and the subprotocols, as the GraphQL consumer sees them in its scope.
"""

from collections.abc import AsyncGenerator

from django.core.asgi import get_asgi_application

http = get_asgi_application()  # first: it sets Django up for what follows

import strawberry  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402
from strawberry.channels import GraphQLWSConsumer  # noqa: E402
from strawberry.permission import BasePermission  # noqa: E402
from strawberry.types import Info  # noqa: E402

from wsops.middleware import SecureWebsocketStack  # noqa: E402


@strawberry.type
class Query:
    ping: str = "pong"


class SignedIn(BasePermission):
    """Subscriptions for logged-in sockets only (the user wsops put in the scope)."""

    message = "authentication required"

    def has_permission(self, source, info: Info, **kwargs) -> bool:
        return info.context["request"].scope["user"].is_authenticated


@strawberry.type
class Subscription:
    @strawberry.subscription(permission_classes=[SignedIn])
    async def whoami(self, info: Info) -> AsyncGenerator[str, None]:
        scope = info.context["request"].scope
        handshake = scope["wsops"]
        user = scope["user"].username if scope["user"].is_authenticated else ""
        yield f"{user}|{handshake.auth_method}|{','.join(scope['subprotocols'])}"


schema = strawberry.Schema(query=Query, subscription=Subscription)

application = ProtocolTypeRouter({
    "http": http,
    "websocket": SecureWebsocketStack(URLRouter([
        path("graphql/", GraphQLWSConsumer.as_asgi(schema=schema)),
    ])),
})
