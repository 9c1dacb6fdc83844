"""Durable room history (--store PATH): SQLite in WAL mode, writes batched.

Rooms keep serving from their in-memory ring; every stored message is also told
to the StoreActor, which buffers it and writes a batch in one transaction when
the buffer holds ``BATCH`` messages or ``FLUSH_AFTER`` seconds have passed, so the
disk does not bound the message rate.  On a restart a room loads its last
``--history`` messages and its last seq, so `seq` continues and `since` recovers.

What a crash can lose: a SIGKILL loses at most the last FLUSH_AFTER seconds of
messages (they were acked from memory); SIGTERM flushes everything first.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

import gevent

from .base import HubbubActor, tell
from .core.messages import HistoryLoaded, LoadHistory, Persist

__all__ = ["HistoryStore", "StoreActor"]

log = logging.getLogger("hubbub.store")

BATCH = 500
FLUSH_AFTER = 0.05

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    frame TEXT NOT NULL,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rooms (
    room TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
) WITHOUT ROWID;
"""


class HistoryStore:
    """The synchronous part: a SQLite file and a write buffer.  No gevent."""

    def __init__(self, path: str, keep: int) -> None:
        self.keep = keep
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a process crash, not an OS crash;
        # the price of FULL (an fsync per batch) buys nothing a chat needs.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self.pending: list[tuple[str, dict[str, Any]]] = []
        self.batches = 0

    def load(self, room: str, keep: int) -> tuple[int, list[dict[str, Any]]]:
        """(last seq, the newest ``keep`` messages oldest first) of a room."""
        self.flush()  # anything still buffered must count, or seq could repeat
        row = self.db.execute("SELECT last_seq FROM rooms WHERE room = ?", (room,)).fetchone()
        if row is None:
            return 0, []
        frames = self.db.execute(
            "SELECT frame FROM messages WHERE room = ? ORDER BY seq DESC LIMIT ?", (room, keep)
        ).fetchall()
        return row[0], [json.loads(f) for (f,) in reversed(frames)]

    def add(self, room: str, frame: dict[str, Any]) -> bool:
        """Buffer one message; True when the buffer is full and should be flushed now."""
        self.pending.append((room, frame))
        return len(self.pending) >= BATCH

    def flush(self) -> int:
        """Write the buffer in one transaction, trimming each touched room to ``keep``."""
        if not self.pending:
            return 0
        batch, self.pending = self.pending, []
        last: dict[str, int] = {}
        db = self.db
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT OR REPLACE INTO messages (room, seq, frame) VALUES (?, ?, ?)",
                [(room, f["seq"], json.dumps(f, separators=(",", ":"))) for room, f in batch],
            )
            for room, f in batch:
                last[room] = max(last.get(room, 0), f["seq"])
            db.executemany(
                "INSERT INTO rooms (room, last_seq) VALUES (?, ?) ON CONFLICT(room) "
                "DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
                list(last.items()),
            )
            db.executemany(
                "DELETE FROM messages WHERE room = ? AND seq <= ?",
                [(room, seq - self.keep) for room, seq in last.items()],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self.pending[:0] = batch  # keep them for the next try
            raise
        self.batches += 1
        return len(batch)

    def close(self) -> None:
        self.flush()
        self.db.close()


@dataclass(frozen=True, slots=True)
class _Flush:
    """The flush timer went off."""


class StoreActor(HubbubActor):
    def __init__(self, path: str, keep: int, parent: HubbubActor | None = None) -> None:
        super().__init__("store", parent)
        self.path = path
        self.history = HistoryStore(path, keep)
        self._timer: Any = None

    def describe_fields(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "buffered": len(self.history.pending),
            "batches": self.history.batches,
        }

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Persist):
            if self.history.add(message.room, message.frame):
                self._flush()
            elif self._timer is None:
                self._flush_in(FLUSH_AFTER)
            return None
        if isinstance(message, _Flush):
            self._flush()
            return None
        if isinstance(message, LoadHistory):
            # Reading is the store's job too: the directory never runs SQLite itself.
            last_seq, messages = self.history.load(message.room, message.keep)
            tell(message.reply_to, HistoryLoaded(message.room, last_seq, messages))
            return None
        return super().on_receive(message)

    def _flush_in(self, seconds: float) -> None:
        self._timer = gevent.get_hub().loop.timer(seconds)
        # The callback runs in the hub; a tell never blocks (it queues the message and
        # schedules our drain, actors/base.py), so no greenlet is needed to carry it.
        self._timer.start(tell, self.actor_ref, _Flush())

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        try:
            self.history.flush()
        except sqlite3.Error:
            # The batch stays buffered (flush puts it back); try again shortly rather
            # than fail the actor and drop every later message.
            log.exception(
                "writing %d messages to %s failed; retrying", len(self.history.pending), self.path
            )
            self._flush_in(1.0)

    def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self.history.close()
        super().on_stop()
