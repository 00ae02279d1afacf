"""The ASGI types wsops' runtime passes around, and the scope readers it shares.

A Channels scope is a mutable dict that middleware adds keys to (``user``,
``session``, ``url_route``, ``wsops``), so it is typed as one ``Scope`` alias
rather than asgiref's closed ``WebSocketScope``; ``receive``/``send`` are
asgiref's callables.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable

Scope = dict[str, Any]
Receive = ASGIReceiveCallable
Send = ASGISendCallable
Application = Callable[[Scope, Receive, Send], Awaitable[Any]]

__all__ = ["Application", "Receive", "Scope", "Send", "header", "require_websocket",
           "signed_in_user"]


def header(scope: Scope, name: bytes) -> bytes | None:
    """The last value of a request header (names are lower-case bytes in ASGI).

    The last, because a proxy that adds a header appends it: a value a client sent
    ahead of it is the forgeable one.
    """
    found = None
    for key, value in scope.get("headers") or ():
        if key == name:
            found = value
    return found


def require_websocket(scope: Scope, component: object) -> None:
    """Refuse to run a websocket-only component on another protocol, with the fix."""
    if scope.get("type") != "websocket":
        name = type(component).__name__
        raise ValueError(
            f"{name} only handles websocket connections, not {scope.get('type')!r}: wrap the "
            f'websocket router (ProtocolTypeRouter({{"websocket": SecureWebsocketStack(...)}})), '
            "not the whole application."
        )


def signed_in_user(scope: Scope) -> Any | None:
    """The scope's user when it is a real, logged-in one; None for none or Anonymous."""
    user = scope.get("user")
    return user if user is not None and user.is_authenticated else None
