"""The baseline peer: the chat server a user would write in an afternoon instead of hubbub.

Plain asyncio and ``websockets`` (14.x, the new asyncio API), no actors: one handler
coroutine per connection, five ``loop.call_later`` timers per user, and
``websockets.broadcast`` for fan-out (one encode, one non-blocking write per member).
It speaks the subset of docs/protocol.md the benchmarks use, with the same frames byte
for byte (compact JSON, ``type`` first) and the same close codes:

    hello → welcome      profile → profile_ok | error      join → joined (+ presence)
    say → ack + message (seq per room, history kept)        ping → pong, pong
    the server's ping every --ping-interval; hello 4001, pong 4002, session 4003,
    profile 4004; anything but hello first → 1008; over --max-message → 1009.

What it leaves out, on purpose: flood control, per-IP limits, origins, leave/dm,
/metrics and logs; hubbub runs with its limits lifted for the comparison
(docs/benchmarks.md lists the flags).

    python -m bench.peer --port 0 --hello-timeout 2      # prints "peer listening on http://HOST:PORT"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import secrets
import signal
import sys
import time
from collections import deque
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

NAME = re.compile(r"[A-Za-z0-9_-]{1,32}\Z")
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

# The user states of docs/protocol.md ("Disconnected" is the handler having returned).
UNDEFINED, CONNECTED, IN_CHAT, TO_BE_DISCONNECTED = range(4)
CODES = {
    "hello_timeout": 4001,
    "pong_timeout": 4002,
    "session_expired": 4003,
    "profile_timeout": 4004,
    "policy": 1008,
    "bye": 1000,
}


class Room:
    __slots__ = ("name", "members", "seq", "history")

    def __init__(self, name: str, keep: int) -> None:
        self.name = name
        self.members: dict[User, str] = {}  # user → nick
        self.seq = 0
        self.history: deque[dict[str, Any]] = deque(maxlen=keep)


class User:
    __slots__ = (
        "ws",
        "session",
        "state",
        "nick",
        "rooms",
        "last_pong",
        "hello_h",
        "profile_h",
        "session_h",
        "ping_h",
        "pong_h",
    )

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.session = secrets.token_hex(8)
        self.state = UNDEFINED
        self.nick: str | None = None
        self.rooms: dict[str, Room] = {}
        self.last_pong = 0.0
        self.hello_h = self.profile_h = self.session_h = self.ping_h = self.pong_h = None

    def cancel(self) -> None:
        for h in (self.hello_h, self.profile_h, self.session_h, self.ping_h, self.pong_h):
            if h is not None:
                h.cancel()
        self.hello_h = self.profile_h = self.session_h = self.ping_h = self.pong_h = None


class Chat:
    def __init__(self, args: argparse.Namespace) -> None:
        self.t = {
            "hello": args.hello_timeout,
            "ping": args.ping_interval,
            "pong": args.pong_timeout,
            "profile": args.profile_timeout,
            "session": args.max_session,
        }
        self.keep = args.history
        self.nicks: dict[str, User] = {}
        self.rooms: dict[str, Room] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    # --- writing without awaiting: broadcast to one is a synchronous, non-blocking write

    @staticmethod
    def send(user: User, frame: dict[str, Any]) -> None:
        broadcast((user.ws,), _dumps(frame))

    def error(self, user: User, code: str, text: str) -> None:
        self.send(user, {"type": "error", "code": code, "message": text})

    # --- a connection's life ----------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        loop = self.loop = asyncio.get_running_loop()
        user = User(ws)
        t = self.t
        user.hello_h = loop.call_later(t["hello"], self.expire, user, "hello_timeout")
        user.profile_h = loop.call_later(t["profile"], self.expire, user, "profile_timeout")
        user.session_h = loop.call_later(t["session"], self.expire, user, "session_expired")
        try:
            async for raw in ws:
                self.on_frame(user, raw)
        except ConnectionClosed:
            pass
        finally:
            self.gone(user)

    def disconnect(self, user: User, reason: str) -> None:
        if user.state == TO_BE_DISCONNECTED:
            return
        user.state = TO_BE_DISCONNECTED
        user.cancel()
        if reason != "bye":
            self.send(user, {"type": "bye", "reason": reason})
        # close() waits for the closing handshake (bounded by close_timeout): a task.
        asyncio.ensure_future(user.ws.close(CODES[reason], reason))

    def expire(self, user: User, reason: str) -> None:
        if reason == "hello_timeout" and user.state != UNDEFINED:
            return
        if reason == "profile_timeout" and user.state not in (UNDEFINED, CONNECTED):
            return
        self.disconnect(user, reason)

    def gone(self, user: User) -> None:
        user.cancel()
        user.state = TO_BE_DISCONNECTED
        if user.nick is not None and self.nicks.get(user.nick) is user:
            del self.nicks[user.nick]
        for room in user.rooms.values():
            nick = room.members.pop(user, None)
            if nick is not None and room.members:
                self.presence(room, "leave", nick, None)
        user.rooms.clear()

    # --- timers -----------------------------------------------------------------------

    def ping(self, user: User) -> None:
        self.send(user, {"type": "ping", "ts": time.time()})
        user.ping_h = self.loop.call_later(self.t["ping"], self.ping, user)  # type: ignore[union-attr]  # loop is set in run() before any user; handles only while armed

    def pong_due(self, user: User) -> None:
        idle = self.loop.time() - user.last_pong  # type: ignore[union-attr]  # loop is set in run() before any user; handles only while armed
        if idle >= self.t["pong"]:
            self.disconnect(user, "pong_timeout")
        else:  # a pong came meanwhile: check again when the latest one runs out
            user.pong_h = self.loop.call_later(self.t["pong"] - idle, self.pong_due, user)  # type: ignore[union-attr]  # loop is set in run() before any user; handles only while armed

    # --- frames -----------------------------------------------------------------------

    def on_frame(self, user: User, raw: str | bytes) -> None:
        if user.state == TO_BE_DISCONNECTED:
            return
        try:
            msg = json.loads(raw)
            kind = msg.get("type") if isinstance(msg, dict) else None
        except ValueError:
            msg, kind = None, None
        if user.state == UNDEFINED:
            if kind != "hello":
                self.disconnect(user, "policy")
            else:
                self.hello(user)
            return
        if not isinstance(kind, str):
            self.error(user, "bad_json" if msg is None else "bad_message", "not a chat frame")
        elif kind == "say":
            self.say(user, msg)
        elif kind == "pong":
            user.last_pong = self.loop.time()  # type: ignore[union-attr]  # loop is set in run() before any user; handles only while armed
        elif kind == "ping":
            self.send(user, {"type": "pong", "ts": time.time()})
        elif kind == "profile":
            self.profile(user, msg)
        elif kind == "join":
            self.join(user, msg)
        elif kind == "bye":
            self.disconnect(user, "bye")
        elif kind == "hello":
            self.error(user, "not_ready", "`hello` is not allowed now")
        else:
            self.error(user, "bad_message", "unknown type")

    def hello(self, user: User) -> None:
        loop, t = self.loop, self.t
        user.state = CONNECTED
        user.hello_h.cancel()  # type: ignore[union-attr]  # loop is set in run() before any user; handles only while armed
        user.hello_h = None
        user.last_pong = loop.time()  # type: ignore[union-attr]  # loop is set in run() before any user; handles only while armed
        self.send(user, {"type": "welcome", "protocol": 1, "session": user.session, "timeouts": t})
        user.ping_h = loop.call_later(t["ping"], self.ping, user)  # type: ignore[union-attr]  # loop is set in run() before any user; handles only while armed
        user.pong_h = loop.call_later(t["pong"], self.pong_due, user)  # type: ignore[union-attr]  # loop is set in run() before any user; handles only while armed

    def profile(self, user: User, msg: dict[str, Any]) -> None:
        nick = msg.get("nick")
        if not isinstance(nick, str) or not NAME.match(nick):
            return self.error(user, "bad_nick", "1-32 letters, digits, '_' or '-'")
        holder = self.nicks.get(nick)
        if holder is not None and holder is not user:
            return self.error(user, "nick_taken", f"{nick!r} is taken")
        if user.nick is not None and user.nick != nick:
            del self.nicks[user.nick]
        self.nicks[nick] = user
        user.nick = nick
        if user.state == CONNECTED:
            user.state = IN_CHAT
            user.profile_h.cancel()  # type: ignore[union-attr]  # loop is set in run() before any user; handles only while armed
            user.profile_h = None
        self.send(user, {"type": "profile_ok", "nick": nick})

    def join(self, user: User, msg: dict[str, Any]) -> None:
        if user.state != IN_CHAT:
            return self.error(user, "not_ready", "`join` needs a profile")
        name, since = msg.get("room"), msg.get("since")
        if not isinstance(name, str) or not NAME.match(name):
            return self.error(
                user, "bad_message", "`room` must be 1-32 letters, digits, '_' or '-'"
            )
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name, self.keep)
        fresh = user not in room.members
        room.members[user] = user.nick  # type: ignore[assignment]  # a user in a room has a nick (profile before join)
        user.rooms[name] = room
        history, complete = list(room.history), True
        if isinstance(since, int):
            complete = not history or history[0]["seq"] <= since + 1
            history = [m for m in history if m["seq"] > since]
        self.send(
            user,
            {
                "type": "joined",
                "room": name,
                "members": sorted(set(room.members.values())),
                "history": history,
                "complete": complete,
            },
        )
        if fresh:
            self.presence(room, "join", user.nick, user)  # type: ignore[arg-type]  # a user in a room has a nick (profile before join)

    def presence(self, room: Room, event: str, nick: str, skip: User | None) -> None:
        frame = _dumps({"type": "presence", "room": room.name, "event": event, "nick": nick})
        broadcast([u.ws for u in room.members if u is not skip], frame)

    def say(self, user: User, msg: dict[str, Any]) -> None:
        if user.state != IN_CHAT:
            return self.error(user, "not_ready", "`say` needs a profile")
        room, text, cid = user.rooms.get(msg.get("room")), msg.get("text"), msg.get("id")  # type: ignore[arg-type]  # a user in a room has a nick (profile before join)
        if room is None:
            return self.error(user, "not_in_room", "join the room first")
        if not isinstance(text, str) or not text or (cid is not None and not isinstance(cid, str)):
            return self.error(user, "bad_message", "`text` must be a non-empty string")
        room.seq += 1
        frame = {
            "type": "message",
            "room": room.name,
            "from": user.nick,
            "text": text,
            "seq": room.seq,
            "ts": time.time(),
        }
        room.history.append(frame)
        self.send(user, {"type": "ack", "id": cid, "seq": room.seq})
        broadcast([u.ws for u in room.members], _dumps(frame))


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.peer", description="The baseline websockets chat peer.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--hello-timeout", type=float, default=5.0)
    p.add_argument("--ping-interval", type=float, default=30.0)
    p.add_argument("--pong-timeout", type=float, default=120.0)
    p.add_argument("--profile-timeout", type=float, default=300.0)
    p.add_argument("--max-session", type=float, default=43200.0)
    p.add_argument("--history", type=int, default=100)
    p.add_argument("--max-message", type=int, default=65536)
    # gevent's StreamServer listens with a backlog of 128: the same queue for both.
    p.add_argument("--backlog", type=int, default=128)
    return p.parse_args(argv)


async def serve_forever(args: argparse.Namespace) -> None:
    chat = Chat(args)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    # compression=None: hubbub speaks no permessage-deflate; ping_interval=None: the
    # chat protocol has its own ping; close_timeout=1: hubbub's close handshake bound.
    async with serve(
        chat.handler,
        args.host,
        args.port,
        compression=None,
        ping_interval=None,
        close_timeout=1,
        max_size=args.max_message,
        backlog=args.backlog,
        server_header=None,
    ) as server:
        host, port = server.sockets[0].getsockname()[:2]
        print(f"peer listening on http://{host}:{port}", flush=True)
        await stop
        server.close(close_connections=True)  # 1001 to everyone, like hubbub's shutdown


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve_forever(parse(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
