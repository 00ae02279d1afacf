"""Test helpers for projects that use wsops (and for wsops' own suite).

In process, with Channels' communicator::

    from wsops.testing import SecureCommunicator

    async def test_chat(user):
        async with SecureCommunicator(application, "/ws/chat/lobby/", user=user,
                                      origin="https://app.example.com") as socket:
            assert socket.accepted
            await socket.send_json({"action": "echo", "text": "hi"})
            assert (await socket.receive_json())["text"] == "hi"

    outcome = await SecureCommunicator(application, "/ws/chat/lobby/", token="wst_bad").outcome()
    assert outcome.refused_before_accept        # HTTP 403 at the handshake
    # or: outcome.close_code == 4401            # accepted, then closed

Against a real server, with the ``websockets`` library: ``LiveSocket.open(url, ...)``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

from .credentials import SUBPROTOCOL


@dataclass
class Outcome:
    """How a connection attempt ended."""

    accepted: bool
    subprotocol: str | None = None
    close_code: int | None = None  # when closed (before or after accept)
    status: int | None = None  # HTTP status when refused before accept (live sockets)
    frames: list[Any] = field(default_factory=list)

    @property
    def refused_before_accept(self) -> bool:
        return not self.accepted

    @property
    def closed_after_accept(self) -> bool:
        return self.accepted and self.close_code is not None


def _handshake_headers(
    origin: str | None, headers: dict[str, str] | None,
    cookies: dict[str, str] | None, bearer: str | None,
) -> list[tuple[bytes, bytes]]:
    raw: list[tuple[bytes, bytes]] = []
    if origin is not None:
        raw.append((b"origin", origin.encode("latin-1")))
    if bearer is not None:
        raw.append((b"authorization", f"Bearer {bearer}".encode("latin-1")))
    if cookies:
        cookie = SimpleCookie()
        for name, value in cookies.items():
            cookie[name] = value
        raw.append((b"cookie", cookie.output(header="", sep=";").strip().encode("latin-1")))
    for name, value in (headers or {}).items():
        raw.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    return raw


class SecureCommunicator:
    """Channels' ``WebsocketCommunicator`` preset for wsops stacks.

    ``user`` logs that user in through a real session cookie (so the session
    path of ``TokenAuthMiddleware`` runs); ``token``/``ticket`` go in the
    subprotocol offer; ``client`` sets the peer address.
    """

    def __init__(self, application: Any, path: str, *, user: Any = None, token: str | None = None,
                 ticket: str | None = None, bearer: str | None = None, origin: str | None = None,
                 client: tuple[str, int] = ("127.0.0.1", 50000),
                 headers: dict[str, str] | None = None, subprotocols: list[str] | None = None,
                 timeout: float = 3) -> None:
        self.application = application
        self.path = path
        self.user = user
        self.secret = token or ticket
        self.bearer = bearer
        self.origin = origin
        self.client = client
        self.headers = headers
        self.subprotocols = subprotocols
        self.timeout = timeout
        self.communicator: Any = None
        self.accepted = False
        self.subprotocol: str | None = None
        self.close_code: int | None = None

    async def _session_cookie(self) -> dict[str, str]:
        if self.user is None:
            return {}
        from channels.db import database_sync_to_async
        from django.conf import settings
        from django.test import Client

        def login() -> str:
            client = Client()
            client.force_login(self.user)
            return client.cookies[settings.SESSION_COOKIE_NAME].value

        return {settings.SESSION_COOKIE_NAME: await database_sync_to_async(login)()}

    async def connect(self) -> Outcome:
        from channels.testing import WebsocketCommunicator

        subprotocols = list(self.subprotocols or [])
        if self.secret:
            subprotocols = [SUBPROTOCOL, self.secret]
        headers = _handshake_headers(self.origin, self.headers, await self._session_cookie(),
                                     self.bearer)
        self.communicator = WebsocketCommunicator(
            self.application, self.path, headers=headers, subprotocols=subprotocols or None
        )
        self.communicator.scope["client"] = list(self.client)
        connected, detail = await self.communicator.connect(timeout=self.timeout)
        self.accepted = bool(connected)
        if connected:
            self.subprotocol = detail
            return Outcome(True, subprotocol=detail)
        self.close_code = detail
        return Outcome(False, close_code=detail)

    async def outcome(self) -> Outcome:
        """Connect and, if accepted, wait briefly to see whether the server closes."""
        result = await self.connect()
        if result.accepted:
            # receive_nothing() peeks without cancelling the application on timeout
            if not await self.communicator.receive_nothing(timeout=0.3):
                message = await self.communicator.receive_output(timeout=self.timeout)
                if message["type"] == "websocket.close":
                    result.close_code = message.get("code", 1000)
                elif message["type"] == "websocket.send":
                    result.frames.append(message.get("text") or message.get("bytes"))
            await self.disconnect()
        return result

    async def send_json(self, content: Any) -> None:
        await self.communicator.send_json_to(content)

    async def send_text(self, text: str) -> None:
        await self.communicator.send_to(text_data=text)

    async def receive_json(self) -> Any:
        return await self.communicator.receive_json_from(timeout=self.timeout)

    async def receive_close(self) -> int:
        """Wait for the server to close the socket; return the close code."""
        message = await self.communicator.receive_output(timeout=self.timeout)
        while message["type"] == "websocket.send":
            message = await self.communicator.receive_output(timeout=self.timeout)
        self.close_code = message.get("code", 1000)
        return self.close_code

    async def disconnect(self) -> None:
        if self.communicator is not None:
            try:
                await self.communicator.disconnect()
            except (Exception, asyncio.CancelledError):
                pass  # the application already finished (it closed the socket)

    async def __aenter__(self) -> SecureCommunicator:
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.disconnect()


class LiveSocket:
    """A ``websockets`` client on a real server that reports how the handshake went."""

    def __init__(self) -> None:
        self.connection: Any = None
        self.accepted = False
        self.status: int | None = None
        self.subprotocol: str | None = None

    @classmethod
    async def open(cls, url: str, *, token: str | None = None, ticket: str | None = None,
                   bearer: str | None = None, origin: str | None = None,
                   headers: dict[str, str] | None = None, cookies: dict[str, str] | None = None,
                   subprotocols: list[str] | None = None, timeout: float = 5,
                   **connect_options: Any) -> LiveSocket:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        socket = cls()
        offered = [SUBPROTOCOL, token or ticket] if (token or ticket) else subprotocols
        extra = [(k.decode("latin-1"), v.decode("latin-1"))
                 for k, v in _handshake_headers(None, headers, cookies, bearer)]
        try:
            socket.connection = await connect(
                url, origin=origin, subprotocols=offered, additional_headers=extra,
                open_timeout=timeout, proxy=None, compression=None, **connect_options,
            )
        except InvalidStatus as refused:
            socket.status = refused.response.status_code
            return socket
        socket.accepted = True
        socket.subprotocol = socket.connection.subprotocol
        return socket

    async def send_json(self, content: Any) -> None:
        await self.connection.send(json.dumps(content))

    async def send(self, data: str | bytes) -> None:
        await self.connection.send(data)

    async def recv_json(self, timeout: float = 5) -> Any:
        return json.loads(await asyncio.wait_for(self.connection.recv(), timeout))

    async def close_code(self, timeout: float = 5) -> int | None:
        """Wait until the server closes (discarding frames); return its close code."""
        from websockets.exceptions import ConnectionClosed

        async def drain() -> None:
            try:
                while True:
                    await self.connection.recv()
            except ConnectionClosed:
                pass

        await asyncio.wait_for(drain(), timeout)
        return self.connection.close_code

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()

    async def __aenter__(self) -> LiveSocket:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
