"""Python heap per open socket, bare vs wsops, measured with tracemalloc in one process.

RSS (what ``run.py`` reports) includes allocator slack and moves by a few KiB
between runs; this counts the objects a socket keeps alive. Both applications
are driven with asgiref's communicator, in process, on the embedded defaults
(in-memory layer, in-process limiter): ``.venv/bin/python bench/heap.py``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import tempfile
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "example")]


async def open_sockets(app, count: int, subprotocols: list[str]) -> list:
    from asgiref.testing import ApplicationCommunicator

    sockets = []
    for _ in range(count):
        socket = ApplicationCommunicator(app, {
            "type": "websocket", "path": "/ws/echo/", "query_string": b"", "headers": [],
            "subprotocols": subprotocols, "client": ["127.0.0.1", 1]})
        await socket.send_input({"type": "websocket.connect"})
        reply = await socket.receive_output(3)
        if reply["type"] != "websocket.accept":
            raise RuntimeError(f"refused: {reply}")
        sockets.append(socket)
    return sockets


async def measure(app, subprotocols: list[str], count: int) -> float:
    await open_sockets(app, 20, subprotocols)  # warm caches and imports
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    sockets = await open_sockets(app, count, subprotocols)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    total = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    del sockets
    return total / count


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="wsops-heap-"))
    os.environ.update(DJANGO_SETTINGS_MODULE="bench.settings", BENCH_DB=str(tmp / "h.sqlite3"))
    import django

    django.setup()
    from django.test.utils import override_settings

    override_settings(
        CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        WSOPS={"RATES": {"connect": "1000000/m"}, "MAX_CONNECTIONS_PER_USER": 100000,
               "MAX_CONNECTIONS_PER_IP": 100000},
    ).enable()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from bench.benchapp import bare, secure
    from wsops import tokens

    call_command("migrate", verbosity=0)
    _, secret = tokens.issue(get_user_model().objects.create_user("heap"))
    count = 300
    bare_bytes = asyncio.run(measure(bare, [], count))
    secure_bytes = asyncio.run(measure(secure, ["wsops", secret], count))
    print(f"Python heap per open socket ({count} sockets): bare {bare_bytes / 1024:.1f} KiB, "
          f"wsops {secure_bytes / 1024:.1f} KiB ({secure_bytes / bare_bytes:.2f}x)")


if __name__ == "__main__":
    main()
