"""What recording wsops' Prometheus metrics costs per message and per socket, in process.

``run.py`` compares daphne's CPU with metrics on and off, but on a shared machine
other load moves one measurement by more than the metrics cost. This measures
the recording itself: an application accepts, exchanges ``--messages`` frames
and closes, once as is and once through ``wsops.metrics.observed`` with
``metrics.message("ok")`` per frame (what the stack and the consumer add), in
multiprocess mode as the ``wsdeploy daphne`` units run it. Also the cost of one
accepted socket's bookkeeping (accept, open-socket gauge, close)::

    .venv/bin/python bench/metrics_cost.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "example")]


async def measure(messages: int, sockets: int) -> None:
    from wsops import metrics
    from wsops.handshake.state import Handshake

    scope = {"type": "websocket", "headers": [], "client": ("127.0.0.1", 1)}
    scope["wsops"] = Handshake.parse(scope)

    async def send(event):
        pass

    async def receive():
        return {"type": "websocket.receive", "text": "x"}

    def application(record: bool, count: int):
        async def app(scope, receive, send):
            await send({"type": "websocket.accept"})
            for _ in range(count):
                await receive()
                if record:
                    metrics.message("ok")
                await send({"type": "websocket.send", "text": "x"})
            await send({"type": "websocket.close", "code": 1000})
        return app

    async def per_message(record: bool) -> float:
        app = application(record, messages)
        started = time.process_time()
        if record:
            await metrics.observed(app, scope, receive, send)
        else:
            await app(scope, receive, send)
        return (time.process_time() - started) / messages * 1e6

    async def per_socket(record: bool) -> float:
        app = application(False, 0)
        started = time.process_time()
        for _ in range(sockets):
            if record:
                await metrics.observed(app, scope, receive, send)
            else:
                await app(scope, receive, send)
        return (time.process_time() - started) / sockets * 1e6

    for _ in range(3):
        plain, recorded = await per_message(False), await per_message(True)
        bare, watched = await per_socket(False), await per_socket(True)
        print(f"per message {recorded - plain:5.2f} us ({plain:.2f} -> {recorded:.2f}); "
              f"per socket {watched - bare:5.2f} us")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--sockets", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wsops-metrics-") as directory:
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", directory)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
        import django

        django.setup()
        asyncio.run(measure(args.messages, args.sockets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
