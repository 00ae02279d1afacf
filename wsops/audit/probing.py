"""The bounded, polite client under ``wssecure probe``: one host, a counted budget.

Every TCP connection (WebSocket handshake, TLS version test, plain HTTP request)
is counted against ``max_connections`` before it is made, and every frame the
probe sends (data frames and the pings that tell an open socket from one the
server closed right after accepting) against ``max_messages``. When the budget is
spent, ``BudgetExhausted`` stops the probe that asked, and the report says which
probes did not run. Redirects are never followed (a 3xx is a refusal), proxies
from the environment are not used: nothing but the given host is contacted.

Uses the ``websockets`` client (``pip install "wsops[probe]"``).
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import ipaddress
import json
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .. import __version__

USER_AGENT = f"wsops-probe/{__version__} (manage.py wssecure probe)"


class BudgetExhausted(Exception):
    """The ``--max-connections`` or ``--max-messages`` budget is spent."""


class Unreachable(Exception):
    """The endpoint cannot be reached at all (refused, DNS, timeout, TLS failure)."""


@dataclass
class Budget:
    max_connections: int
    max_messages: int
    connections: int = 0
    messages: int = 0

    def connection(self) -> None:
        if self.connections >= self.max_connections:
            raise BudgetExhausted(f"--max-connections {self.max_connections} spent")
        self.connections += 1

    def message(self) -> None:
        if self.messages >= self.max_messages:
            raise BudgetExhausted(f"--max-messages {self.max_messages} spent")
        self.messages += 1

    @property
    def connections_left(self) -> int:
        return self.max_connections - self.connections

    @property
    def messages_left(self) -> int:
        return self.max_messages - self.messages

    def as_dict(self) -> dict[str, int]:
        return {"connections": self.connections, "max_connections": self.max_connections,
                "messages": self.messages, "max_messages": self.max_messages}


@dataclass(frozen=True)
class Target:
    """What to probe and with what: parsed from the command line."""

    url: str
    origin: str
    token: str | None = None
    cookie: tuple[str, str] | None = None
    timeout: float = 5.0
    http_port: int = 80
    message: str = '{"action": "wsops.probe"}'  # what the message burst sends

    @property
    def parts(self) -> Any:
        return urlsplit(self.url)

    @property
    def host(self) -> str:
        return self.parts.hostname or ""

    @property
    def secure(self) -> bool:
        return self.parts.scheme == "wss"

    @property
    def port(self) -> int:
        return self.parts.port or (443 if self.secure else 80)

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost" or self.host.endswith(".localhost"):
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def with_query(self, query: str) -> str:
        return self.parts._replace(query=query).geturl()

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "host": self.host, "port": self.port, "origin": self.origin,
                "credential": "token" if self.token else "cookie" if self.cookie else None}


@dataclass
class Attempt:
    """How one handshake went, as a client sees it."""

    label: str
    accepted: bool = False  # 101, and still open after a ping
    status: int | None = None  # HTTP status of a refused handshake
    close_code: int | None = None  # the server closed right after accepting
    subprotocol: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # response headers, lower-case

    def how(self) -> str:
        if self.accepted:
            return "accepted"
        if self.close_code is not None:
            return f"accepted, then {closed(self.close_code)}"
        return f"HTTP {self.status} before accept"


def closed(code: int | None) -> str:
    """How a close reads in the report: 1006 is a dropped connection, not a code sent."""
    if code == 1006:
        return "dropped without a close frame (1006)"
    return f"closed with {code}"


@functools.cache
def _connect() -> Any:
    """``websockets.asyncio.client.connect`` that never follows a redirect."""
    from websockets.asyncio.client import connect

    class NoRedirects(connect):
        def process_redirect(self, exc: Exception) -> Exception:
            return exc  # a 3xx ends the handshake: report it, do not go elsewhere

    return NoRedirects


class Prober:
    """Opens counted connections to the target and remembers how each ended."""

    def __init__(self, target: Target, budget: Budget) -> None:
        self.target = target
        self.budget = budget
        self.attempts: list[Attempt] = []
        self.skipped: list[tuple[str, str]] = []
        self.notes: dict[str, Any] = {}  # facts one probe learns and later ones use
        self.verify = True  # cleared when the certificate does not verify (reported)
        self.reached = False  # set by the first connection that got an answer

    # --- TLS ---------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.target.secure:
            return None
        context = ssl.create_default_context()  # system CAs, or SSL_CERT_FILE
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def tls_handshake(self, context: ssl.SSLContext) -> ssl.SSLSocket:
        """One counted TLS handshake with ``context``; the caller closes the socket."""
        self.budget.connection()
        raw = socket.create_connection((self.target.host, self.target.port),
                                       timeout=self.target.timeout)
        try:
            tls = context.wrap_socket(raw, server_hostname=self.target.host)
        except BaseException:
            raw.close()
            raise
        self.reached = True
        return tls

    # --- HTTP --------------------------------------------------------------------------

    def http_get(self, *, secure: bool, port: int, path: str = "/") -> http.client.HTTPResponse:
        """One counted GET to the target host (never following a redirect)."""
        self.budget.connection()
        if secure:
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.target.host, port, timeout=self.target.timeout,
                context=self.ssl_context())
        else:
            connection = http.client.HTTPConnection(self.target.host, port,
                                                    timeout=self.target.timeout)
        try:
            connection.request("GET", path, headers={"User-Agent": USER_AGENT})
            response = connection.getresponse()
            response.read(65536)
        except (OSError, http.client.HTTPException) as error:
            raise Unreachable(f"GET {'https' if secure else 'http'}://{self.target.host}:"
                              f"{port}{path}: {type(error).__name__}: {error}") from error
        finally:
            connection.close()
        self.reached = True
        return response

    # --- WebSocket ---------------------------------------------------------------------

    def credential_headers(self, *, cookie: bool = True) -> list[tuple[str, str]]:
        if cookie and self.target.cookie:
            name, value = self.target.cookie
            return [("Cookie", f"{name}={value}")]
        return []

    def credential_subprotocols(self) -> list[str] | None:
        return ["wsops", self.target.token] if self.target.token else None

    async def open(self, label: str, *, origin: str | None = "", url: str | None = None,
                   subprotocols: list[str] | None = None, cookie: bool = False,
                   compression: str | None = None,
                   max_size: int | None = 4 * 1024 * 1024) -> tuple[Attempt, Any]:
        """A counted handshake; returns the attempt and the open connection (or None).

        ``origin=""`` sends the target's good origin, ``None`` sends none.
        """
        from websockets.exceptions import InvalidHandshake, InvalidStatus

        if self.budget.messages_left < 1:  # its ping: do not open what cannot be checked
            raise BudgetExhausted(f"--max-messages {self.budget.max_messages} spent")
        self.budget.connection()
        attempt = Attempt(label)
        connect = _connect()
        try:
            connection = await connect(
                url or self.target.url, origin=self.target.origin if origin == "" else origin,
                subprotocols=subprotocols, additional_headers=self.credential_headers(
                    cookie=cookie), open_timeout=self.target.timeout, proxy=None,
                compression=compression, max_size=max_size, ssl=self.ssl_context(),
                user_agent_header=USER_AGENT, ping_interval=None,
                close_timeout=self.target.timeout)
        except InvalidStatus as refused:
            self.reached = True
            self.attempts.append(attempt)
            attempt.status = refused.response.status_code
            attempt.headers = {k.lower(): v for k, v in refused.response.headers.raw_items()}
            return attempt, None
        except (OSError, asyncio.TimeoutError, InvalidHandshake, ssl.SSLError) as error:
            raise Unreachable(f"{type(error).__name__}: {error}") from error
        self.reached = True
        self.attempts.append(attempt)
        attempt.subprotocol = connection.subprotocol
        attempt.headers = {k.lower(): v for k, v in connection.response.headers.raw_items()}
        if await self.still_open(connection, attempt):
            attempt.accepted = True
            return attempt, connection
        return attempt, None

    async def still_open(self, connection: Any, attempt: Attempt) -> bool:
        """Ping and wait for the pong: False (and the close code noted) if the server
        closed first. Frames that arrive meanwhile are kept on the attempt."""
        from websockets.exceptions import ConnectionClosed

        try:
            self.budget.message()
            waiter = await connection.ping()
            await asyncio.wait_for(asyncio.shield(waiter), self.target.timeout)
            return True
        except ConnectionClosed:
            attempt.close_code = connection.close_code
            return False
        except asyncio.TimeoutError:
            return connection.close_code is None  # no pong, but not closed either
        except BudgetExhausted:
            await connection.close()
            raise

    async def attempt(self, label: str, **options: Any) -> Attempt:
        """Open, look, close: the outcome of one handshake."""
        attempt, connection = await self.open(label, **options)
        if connection is not None:
            await connection.close()
        return attempt

    async def send(self, connection: Any, data: str | bytes) -> None:
        self.budget.message()
        await connection.send(data)

    async def drain(self, connection: Any, quiet: float) -> tuple[list[str | bytes], int | None]:
        """Frames the server sends until it is quiet for ``quiet`` s (or ``timeout`` s have
        passed: an endpoint that streams is never quiet); and its close code if it closed."""
        from websockets.exceptions import ConnectionClosed

        frames: list[str | bytes] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.target.timeout
        while (left := deadline - loop.time()) > 0:
            try:
                frames.append(await asyncio.wait_for(connection.recv(), min(quiet, left)))
            except asyncio.TimeoutError:
                break
            except ConnectionClosed:
                return frames, connection.close_code
        return frames, None

    def skip(self, probe: str, reason: str) -> None:
        self.skipped.append((probe, reason))


def json_codes(frames: list[str | bytes]) -> set[str]:
    """The ``code`` of every JSON error frame (``{"type": "error", "code": ...}``)."""
    codes = set()
    for frame in frames:
        try:
            data = json.loads(frame)
        except (ValueError, TypeError):
            continue
        if isinstance(data, dict) and isinstance(data.get("code"), str):
            codes.add(data["code"])
    return codes
