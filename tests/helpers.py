"""Helpers shared by the test files (fixtures are in conftest.py).

- ``require_tool``: an external program's path; fails under ``CI=true``, skips
  otherwise (and skips for the tools named in ``WSOPS_TEST_HIDE_TOOLS``).
- ``RedisServer`` / ``configure_redis``: a private ``redis-server`` (or the
  given ``REDIS_URL`` under a per-run prefix), and pointing wsops, the cache and
  the channel layer of this process at it.
- ``DaphneProcess``, ``free_port``, ``wait_for_port``, ``database_name``.
- ``write_pem``, ``Nginx``, ``render_site``: PEM files from ``wsops.deploy.certs.mint``,
  a real nginx serving a rendered site from a private prefix, ``wsdeploy nginx`` into a
  file (the ``serve_site`` fixture and the probe tests use them).
- ``wait_for``: poll a condition with a generous deadline (log lines are written late).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from channels.layers import channel_layers
from cryptography.hazmat.primitives import serialization
from django.core.management import call_command

from wsops.deploy.certs import _pem_key
from wsops.deploy.nginx import minimal_conf

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"
HIDDEN_TOOLS = frozenset(os.environ.get("WSOPS_TEST_HIDE_TOOLS", "").replace(",", " ").split())


def require_tool(name: str, *, also_in: tuple[str, ...] = (), how: str = ".ci/run shows how"
                 ) -> str:
    """The path of a required executable; fail under CI, skip locally, when missing.

    A tool named in ``WSOPS_TEST_HIDE_TOOLS`` counts as missing and skips, even under CI.
    """
    if name in HIDDEN_TOOLS:
        pytest.skip(f"{name} is missing: hidden by WSOPS_TEST_HIDE_TOOLS")  # CI's 2nd pass
    search = os.pathsep.join([*also_in, os.environ.get("PATH", ""),
                              str(Path(sys.executable).parent), "/usr/sbin", "/usr/local/sbin"])
    path = shutil.which(name, path=search)
    if path is None:
        message = f"{name} is not installed (install it: {how})"
        if IN_CI:
            pytest.fail(f"CI requires {name}: {message}", pytrace=False)
        pytest.skip(message)  # only outside CI, where a missing tool fails the run instead
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class RedisServer:
    """A Redis the tests may use: ours (killable) or the given one (prefix only)."""

    def __init__(self, url: str | None = None, *, prefix: str = "", tmp: Path | None = None):
        self.external = url is not None
        self.prefix = prefix
        self.process: subprocess.Popen | None = None
        self.tmp = tmp
        if url is None:
            self.port = free_port()
            self.url = f"redis://127.0.0.1:{self.port}/0"
            self.start()
        else:
            self.url = url

    def start(self) -> None:
        binary = require_tool("redis-server")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, process=self.process)

    def kill(self) -> None:
        assert not self.external, "never kill a Redis the tests did not start"
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def client(self):
        import redis

        return redis.from_url(self.url, decode_responses=True)

    def cleanup(self) -> None:
        if self.external:
            client = self.client()
            for key in client.scan_iter(match=self.prefix + "*", count=1000):
                client.delete(key)
        else:
            self.kill()


def configure_redis(settings, server: RedisServer) -> RedisServer:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": server.url, "socket_timeout": 10}],
                       "prefix": server.prefix + "asgi"},
        }
    }
    settings.CACHES = {
        "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": server.url,
                    "KEY_PREFIX": server.prefix + "cache"}
    }
    settings.WSOPS = {**settings.WSOPS, "REDIS_URL": server.url, "KEY_PREFIX": server.prefix}
    channel_layers.backends.clear()
    return server


class DaphneProcess:
    def __init__(self, process: subprocess.Popen, port: int, log: Path) -> None:
        self.process, self.port, self.log = process, port, log

    def url(self, path: str = "/ws/chat/lobby/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def http_url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()


def database_name() -> str:
    from django.db import connection

    return str(connection.settings_dict["NAME"])


async def handshakes_in_turn(workers: list[DaphneProcess], secret: str, count: int
                             ) -> list[bool]:
    """Open and close ``count`` token sockets, one worker after the other: accepted?"""
    from wsops.testing import LiveSocket

    outcomes = []
    for attempt in range(count):
        socket = await LiveSocket.open(workers[attempt % len(workers)].url(), token=secret)
        outcomes.append(socket.accepted)
        await socket.close()
    return outcomes


async def echoes_in_turn(sockets: list, count: int) -> list[str]:
    """Send ``count`` echo actions, one socket after the other: the reply types."""
    replies = []
    for index in range(count):
        socket = sockets[index % len(sockets)]
        await socket.send_json({"action": "echo", "text": "x"})
        replies.append((await socket.recv_json())["type"])
    return replies


EVIL_PAGE = """<!doctype html><html><body><script>
window.result = new Promise((resolve) => {
  const socket = new WebSocket(%s);
  socket.onopen = () => resolve("open");
  socket.onerror = () => resolve("refused");
});
</script></body></html>"""


def evil_page(socket_url: str) -> str:
    """An attacker's page that opens ``socket_url``; ``window.result`` says how it went."""
    import json

    return EVIL_PAGE % json.dumps(socket_url)

def write_pem(path: Path, *items) -> Path:
    data = b""
    for item in items:
        data += item.public_bytes(serialization.Encoding.PEM) if hasattr(item, "public_bytes") \
            else _pem_key(item)
    path.write_bytes(data)
    return path


class Nginx:
    def __init__(self, prefix: Path, site: Path):
        self.binary = require_tool("nginx")
        self.prefix = prefix
        (prefix / "temp").mkdir(exist_ok=True)
        run_as = "root root" if os.geteuid() == 0 else None
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(minimal_conf(prefix, site, run_as=run_as))
        self.process = None

    def start(self, port: int) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-p", str(self.prefix), "-c", str(self.conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for_port(port, process=self.process)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def render_site(path: Path, *args: str) -> None:
    call_command("wsdeploy", "nginx", "--output", str(path), "--force", *args,
                 stdout=io.StringIO(), stderr=io.StringIO())


def wait_for(predicate, timeout: float = 30, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        time.sleep(0.1)


async def poll(condition, *, deadline: float = 30, interval: float = 1.0) -> bool:
    """Await ``condition()`` until it is true or ``deadline`` seconds pass (a generous
    bound for loaded CI machines: the outcome is asserted, never the time it took)."""
    import asyncio

    end = time.monotonic() + deadline
    while True:
        if await condition():
            return True
        if time.monotonic() > end:
            return False
        await asyncio.sleep(interval)
