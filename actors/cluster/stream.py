"""The says' command stream: scripts pipelined on one connection (one per Redis primary)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
import redis

from ..base import tell

__all__ = ["CommandStream", "Lost", "why"]

_REDIS_ERRORS = (redis.RedisError, OSError)


@dataclass(frozen=True, slots=True)
class Lost:
    """A connection or a command of generation ``gen`` failed (into the link)."""

    gen: int
    """The link's connection generation."""
    why: str
    """The error."""


def why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class CommandStream:
    """Commands pipelined on one connection, their answers handed to callbacks in order.

    redis-py makes every command a round trip through the pool (about 150 µs of Python
    per EVALSHA, measured), and a room waiting for each say could not say faster than
    Redis answers.  One writer greenlet sends everything queued in one write; one reader
    greenlet hands each answer to the callback that came with its command.
    """

    def __init__(self, conn: Any, link: Any, gen: int) -> None:
        self.conn = conn
        self.link = link
        self.gen = gen
        conn.connect()
        self._queue: list[tuple[Any, Callable[[Any], Any]]] = []
        self._waiting: deque[Callable[[Any], Any]] = deque()
        self._wake = gevent.event.Event()
        self._greenlets: list[Any] = []
        self.closed = False

    def start(self) -> None:
        self._greenlets = [gevent.spawn(self._write), gevent.spawn(self._read)]

    def send(self, args: tuple[Any, ...], then: Callable[[Any], Any]) -> None:
        if self.closed:
            then(ConnectionError("the command stream is closed"))
            return
        self._queue.append((self.conn.pack_command(*args), then))
        self._wake.set()

    def close(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        for g in self._greenlets:
            g.kill(block=False)
        self.conn.disconnect()
        error = ConnectionError(why)
        failed = [then for _packed, then in self._queue] + list(self._waiting)
        self._queue, self._waiting = [], deque()
        for then in failed:
            then(error)

    def _write(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            self._waiting.extend(then for _packed, then in batch)
            try:
                self.conn.send_packed_command(
                    [chunk for packed, _then in batch for chunk in packed], check_health=False
                )
            except _REDIS_ERRORS as exc:
                tell(self.link, Lost(self.gen, why(exc)))
                return

    def _read(self) -> None:
        while True:
            try:
                reply: Any = self.conn.read_response()
            except redis.ResponseError as exc:  # one command failed; the stream is fine
                exc.script_error = True  # type: ignore[attr-defined]  # Redis ran it and refused
                reply = exc
            except Exception as exc:  # noqa: BLE001 - the connection broke, whatever the cause
                tell(self.link, Lost(self.gen, why(exc)))
                return
            self._waiting.popleft()(reply)
