"""A tiny terminal client for the demo: connects with an access token and chats.

    python example/ws_client.py wst_...            # echo, then send lines you type
"""

import argparse
import asyncio
import json
import sys

import websockets


async def main(token: str, url: str) -> None:
    async with websockets.connect(url, subprotocols=["wsops", token]) as socket:
        print(f"connected to {url} (subprotocol {socket.subprotocol})")
        await socket.send(json.dumps({"action": "whoami"}))
        print(await socket.recv())
        loop = asyncio.get_running_loop()

        async def show() -> None:
            async for frame in socket:
                print("<", frame)

        reader = asyncio.create_task(show())
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            await socket.send(json.dumps({"action": "send_message", "text": line.strip()}))
        reader.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("token")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--room", default="lobby")
    args = parser.parse_args()
    asyncio.run(main(args.token, f"ws://127.0.0.1:{args.port}/ws/chat/{args.room}/"))
