"""A websockets echo server, as its library ships it (permessage-deflate on, a ``Server``
header with versions, 1 MiB messages), for ``wssecure probe``'s tests.

``python -m tests.ws_server PORT`` echoes; ``--redirect URL`` answers every handshake
with a 301 to ``URL`` instead (the probe must not follow it).
"""

import argparse
import asyncio
from http import HTTPStatus

from websockets.asyncio.server import serve


async def echo(connection) -> None:
    async for message in connection:
        await connection.send(message)


def redirect_to(url: str):
    def process_request(connection, request):
        response = connection.respond(HTTPStatus.MOVED_PERMANENTLY, "moved\n")
        response.headers["Location"] = url
        return response

    return process_request


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--redirect")
    args = parser.parse_args()
    process_request = redirect_to(args.redirect) if args.redirect else None
    async with serve(echo, "127.0.0.1", args.port, process_request=process_request):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
