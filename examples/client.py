"""A complete hubbub chat client in Python, on the `websockets` library.

    pip install 'websockets>=13'
    python examples/client.py ws://127.0.0.1:8080/ws --nick ada --room lobby --text "hello"

It says hello, takes a nick, joins a room and says one line; then it prints what
happens in the room and answers the server's pings. Each line typed on stdin is said
in the room; end of input (Ctrl-D) says bye and quits.
"""

import argparse
import asyncio
import json
import os
import sys
import threading

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


def stdin_lines(loop, queue):
    """Feed stdin's lines into an asyncio queue (None at end of input), from a thread."""

    def read():
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\n"))
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, daemon=True).start()


async def typed(ws, room, queue):
    """Say every typed line in the room; at end of input, say bye (the server then closes)."""
    n = 0
    while (line := await queue.get()) is not None:
        if line.strip():
            n += 1
            await ws.send(
                json.dumps({"type": "say", "room": room, "text": line, "id": f"line-{n}"})
            )
    await ws.send(json.dumps({"type": "bye"}))


async def chat(url, nick, room, text):
    lines, typing = asyncio.Queue(), None
    # No Origin header: the server lets non-browser clients in from anywhere.
    async with connect(url) as ws:

        async def send(**frame):
            await ws.send(json.dumps(frame))

        await send(type="hello", client="example-python/1")
        try:
            async for raw in ws:  # until the server closes the connection
                m = json.loads(raw)
                kind = m["type"]
                if kind == "ping":  # answer, or the server closes with 4002 (pong_timeout)
                    await send(type="pong")
                elif kind == "welcome":
                    print(f"connected (session {m['session']})", flush=True)
                    await send(type="profile", nick=nick)
                elif kind == "profile_ok":
                    print(f"you are {m['nick']}", flush=True)
                    await send(type="join", room=room)
                elif kind == "joined":
                    print(f"joined #{m['room']} with {', '.join(m['members'])}", flush=True)
                    for old in m["history"]:
                        print(f"  [{m['room']}] {old['from']}: {old['text']}", flush=True)
                    await send(type="say", room=room, text=text, id="first")
                    if typing is None:
                        stdin_lines(asyncio.get_running_loop(), lines)
                        typing = asyncio.create_task(typed(ws, room, lines))
                elif kind == "message":
                    print(f"[{m['room']}] {m['from']}: {m['text']}", flush=True)
                elif kind == "presence":
                    print(f"* {m['nick']} {m['event']}s #{m['room']}", flush=True)
                elif kind == "dm":
                    print(f"(dm) {m['from']}: {m['text']}", flush=True)
                elif kind == "error":
                    print(f"error {m['code']}: {m['message']}", flush=True)
                    if m["code"] in ("nick_taken", "bad_nick"):
                        await send(type="bye")
                elif kind == "bye":
                    print(f"server says bye: {m['reason']}", flush=True)
                # ack, left, pong: nothing to show
        except ConnectionClosed:  # closed with an error code (kicked, timed out, ...)
            pass
    print(f"closed {ws.close_code}", flush=True)
    return 0 if ws.close_code in (1000, 1001) else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:8080/ws")
    parser.add_argument("--nick", default=f"py-{os.getpid()}")
    parser.add_argument("--room", default="lobby")
    parser.add_argument("--text", default="hello from Python")
    args = parser.parse_args()
    try:
        sys.exit(asyncio.run(chat(args.url, args.nick, args.room, args.text)))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
