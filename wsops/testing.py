"""Test helpers for projects that use wsops (and for wsops' own suite).

Two sockets with one interface: ``SecureCommunicator`` runs the ASGI application
in process (Channels' communicator); ``LiveSocket`` talks to a real server with
the ``websockets`` library (``pip install "wsops[testing]"``). A test written
against one runs against the other::

    from wsops.testing import LiveSocket, SecureCommunicator

    async with SecureCommunicator(application, "/ws/chat/lobby/", token=secret) as socket:
    # or: async with LiveSocket("ws://127.0.0.1:8000/ws/chat/lobby/", token=secret) as socket:
        assert socket.accepted and socket.subprotocol == "wsops"
        await socket.send_json({"action": "send_message", "text": "hi"})
        assert (await socket.receive_json())["type"] == "sent"

    refused = await SecureCommunicator(application, "/ws/chat/lobby/").outcome()
    assert refused.refused_before_accept        # HTTP 403 at the handshake
    # or, with REJECT_WITH="close_code": refused.accepted and refused.close_code == 4401

Both have ``accepted``, ``refused_before_accept``, ``status`` (the HTTP status of a
refused handshake: always 403 in process, where daphne would answer 403),
``subprotocol``, ``close_code`` (set once the server closes an accepted socket),
and ``connect()``, ``outcome()``, ``send_json()``, ``send_text()``, ``send_bytes()``,
``send()``, ``receive()``, ``receive_json()``, ``receive_close()``, ``disconnect()``
(``close()``), ``open()`` (construct and connect) and ``async with``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from .handshake.transports import SUBPROTOCOL

SETTLE = 0.3  # outcome(): how long an accepted socket is watched for a close


@dataclass
class Outcome:
    """How a connection attempt ended."""

    accepted: bool
    subprotocol: str | None = None
    close_code: int | None = None  # when closed (before or after accept)
    status: int | None = None  # HTTP status when refused before accept
    frames: list[Any] = field(default_factory=list)

    @property
    def refused_before_accept(self) -> bool:
        return not self.accepted

    @property
    def closed_after_accept(self) -> bool:
        return self.accepted and self.close_code is not None


class SocketClosed(Exception):
    """The server closed the socket while a frame was awaited."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"the server closed the socket with code {code}")
        self.code = code


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


class _Socket:
    """What both sockets share; subclasses move the frames."""

    def __init__(self, *, token: str | None, ticket: str | None, bearer: str | None,
                 origin: str | None, headers: dict[str, str] | None,
                 cookies: dict[str, str] | None, subprotocols: list[str] | None,
                 timeout: float) -> None:
        self.secret = token or ticket
        self.bearer = bearer
        self.origin = origin
        self.headers = headers
        self.cookies = cookies
        self.subprotocols = [SUBPROTOCOL, self.secret] if self.secret else subprotocols
        self.timeout = timeout
        self.attempted = False
        self.accepted = False
        self.status: int | None = None
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.refusal_code: int | None = None  # in process: the code of a pre-accept close

    @property
    def refused_before_accept(self) -> bool:
        return self.attempted and not self.accepted

    @classmethod
    async def open(cls, *args: Any, **kwargs: Any) -> Any:
        """Construct and connect; look at ``accepted`` / ``status`` for how it went."""
        socket = cls(*args, **kwargs)
        await socket.connect()
        return socket

    async def connect(self) -> Outcome:
        if not self.attempted:
            self.attempted = True
            await self._open()
        return Outcome(self.accepted, self.subprotocol,
                       self.close_code if self.accepted else self.refusal_code, self.status)

    async def outcome(self) -> Outcome:
        """Connect; if accepted, watch briefly whether the server closes; disconnect."""
        result = await self.connect()
        if result.accepted:
            try:
                result.frames.append(await self._peek(SETTLE))
            except SocketClosed as closed:
                result.close_code = closed.code
            except asyncio.TimeoutError:
                pass  # still open
            await self.disconnect()
        return result

    # --- frames ---------------------------------------------------------------------

    async def send(self, data: str | bytes) -> None:
        await self._send(data)

    async def send_text(self, text: str) -> None:
        await self._send(text)

    async def send_bytes(self, data: bytes) -> None:
        await self._send(bytes(data))

    async def send_json(self, content: Any) -> None:
        await self._send(json.dumps(content))

    async def receive(self, timeout: float | None = None) -> str | bytes:
        """The next frame; raises ``SocketClosed`` (and sets ``close_code``) if the
        server closes instead, ``asyncio.TimeoutError`` if nothing comes in time."""
        if self.close_code is not None:
            raise SocketClosed(self.close_code)
        try:
            return await self._receive(self.timeout if timeout is None else timeout)
        except SocketClosed as closed:
            self.close_code = closed.code
            raise

    async def receive_json(self, timeout: float | None = None) -> Any:
        return json.loads(await self.receive(timeout))

    recv_json = receive_json  # the name LiveSocket had first

    async def receive_close(self, timeout: float | None = None) -> int | None:
        """Wait until the server closes (discarding frames); return its close code."""
        deadline = asyncio.get_running_loop().time() + (
            self.timeout if timeout is None else timeout)
        while self.close_code is None:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise asyncio.TimeoutError("the server did not close the socket")
            try:
                await self.receive(left)
            except SocketClosed:
                break
        return self.close_code

    async def disconnect(self) -> None:
        await self._close()

    close = disconnect

    async def __aenter__(self) -> Any:
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.disconnect()

    # --- transport ------------------------------------------------------------------

    async def _open(self) -> None:
        raise NotImplementedError

    async def _send(self, data: str | bytes) -> None:
        raise NotImplementedError

    async def _receive(self, timeout: float) -> str | bytes:
        raise NotImplementedError

    async def _peek(self, timeout: float) -> str | bytes:
        return await self._receive(timeout)

    async def _close(self) -> None:
        raise NotImplementedError


class SecureCommunicator(_Socket):
    """Channels' ``WebsocketCommunicator`` preset for wsops stacks, in process.

    ``user`` logs that user in through a real session cookie (so the session path of
    ``TokenAuthMiddleware`` runs); ``token``/``ticket`` go in the subprotocol offer,
    ``bearer`` in an Authorization header; ``client`` sets the peer address.
    """

    def __init__(self, application: Any, path: str, *, user: Any = None, token: str | None = None,
                 ticket: str | None = None, bearer: str | None = None, origin: str | None = None,
                 client: tuple[str, int] = ("127.0.0.1", 50000),
                 headers: dict[str, str] | None = None, cookies: dict[str, str] | None = None,
                 subprotocols: list[str] | None = None, timeout: float = 10) -> None:
        super().__init__(token=token, ticket=ticket, bearer=bearer, origin=origin,
                         headers=headers, cookies=cookies, subprotocols=subprotocols,
                         timeout=timeout)
        self.application = application
        self.path = path
        self.user = user
        self.client = client
        self.communicator: Any = None

    async def _session_cookie(self) -> dict[str, str]:
        if self.user is None:
            return {}

        def login() -> str:
            client = Client()
            client.force_login(self.user)
            return client.cookies[settings.SESSION_COOKIE_NAME].value

        return {settings.SESSION_COOKIE_NAME: await database_sync_to_async(login)()}

    async def _open(self) -> None:
        cookies = {**(self.cookies or {}), **await self._session_cookie()}
        headers = _handshake_headers(self.origin, self.headers, cookies, self.bearer)
        self.communicator = WebsocketCommunicator(
            self.application, self.path, headers=headers, subprotocols=self.subprotocols or None
        )
        self.communicator.scope["client"] = list(self.client)
        connected, detail = await self.communicator.connect(timeout=self.timeout)
        if connected:
            self.accepted, self.subprotocol = True, detail
        else:
            self.status, self.refusal_code = 403, detail  # daphne answers a pre-accept close so

    async def _send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            await self.communicator.send_to(text_data=data)
        else:
            await self.communicator.send_to(bytes_data=data)

    async def _receive(self, timeout: float) -> str | bytes:
        message = await self.communicator.receive_output(timeout=timeout)
        if message["type"] == "websocket.close":
            raise SocketClosed(message.get("code", 1000))
        return message["text"] if message.get("text") is not None else message.get("bytes")

    async def _peek(self, timeout: float) -> str | bytes:
        # receive_nothing() waits without cancelling the application on a timeout
        if await self.communicator.receive_nothing(timeout=timeout):
            raise asyncio.TimeoutError
        return await self._receive(self.timeout)

    async def _close(self) -> None:
        if self.communicator is not None:
            try:
                await self.communicator.disconnect()
            except (Exception, asyncio.CancelledError):
                pass  # the application already finished (it closed the socket)


class LiveSocket(_Socket):
    """A ``websockets`` client on a real server (``wsops[testing]``).

    ``LiveSocket(url, token=...)`` connects on ``async with`` or ``connect()``;
    ``await LiveSocket.open(url, ...)`` does both. ``connection`` is the websockets
    client connection (``close_reason``, ``request``, ...).
    """

    def __init__(self, url: str, *, token: str | None = None, ticket: str | None = None,
                 bearer: str | None = None, origin: str | None = None,
                 headers: dict[str, str] | None = None, cookies: dict[str, str] | None = None,
                 subprotocols: list[str] | None = None, timeout: float = 10,
                 **connect_options: Any) -> None:
        super().__init__(token=token, ticket=ticket, bearer=bearer, origin=origin,
                         headers=headers, cookies=cookies, subprotocols=subprotocols,
                         timeout=timeout)
        self.url = url
        self.connect_options = connect_options
        self.connection: Any = None

    async def _open(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        extra = [(k.decode("latin-1"), v.decode("latin-1"))
                 for k, v in _handshake_headers(None, self.headers, self.cookies, self.bearer)]
        try:
            self.connection = await connect(
                self.url, origin=self.origin, subprotocols=self.subprotocols,
                additional_headers=extra, open_timeout=self.timeout, proxy=None,
                compression=None, **self.connect_options,
            )
        except InvalidStatus as refused:
            self.status = refused.response.status_code
            return
        self.accepted = True
        self.subprotocol = self.connection.subprotocol

    async def _send(self, data: str | bytes) -> None:
        await self.connection.send(data)

    async def _receive(self, timeout: float) -> str | bytes:
        from websockets.exceptions import ConnectionClosed

        try:
            return await asyncio.wait_for(self.connection.recv(), timeout)
        except ConnectionClosed:
            raise SocketClosed(self.connection.close_code)

    async def _close(self) -> None:
        if self.connection is not None:
            await self.connection.close()
