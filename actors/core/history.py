"""A room's message history, kept as encoded bytes, and the node-wide pool that bounds it.

Pure and synchronous.  Each kept message is the `message` frame exactly as it was sent
(UTF-8 JSON bytes, ready to send again): an emoji costs its 4 UTF-8 bytes, not a str
widened to 4 bytes per character, and `joined` splices the bytes without decoding them.

Three limits, whichever bites first: ``keep`` messages per room (--history), ``max_bytes``
per room (--history-bytes), and the :class:`HistoryPool`'s total over every room of the
node (--history-total).  Over the total, the pool evicts least recently used rooms'
messages, the emptied (dormant) rooms before the rooms with members; a room keeps its
``last_seq``, so seq continues and `since` answers `complete: false` for what went.

The RoomActor owns one history; the directory keeps it while the room is empty.  The pool
is shared by the directory and every room of the node: all of them run on one OS thread
(greenlets) and every method here runs to completion without yielding, so a ledger
shared across actors stays consistent without locks or messages (a message per `say`
to a pool actor would cost more than the bookkeeping).
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from typing import Any

__all__ = ["RoomHistory", "HistoryPool"]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


# What one kept message costs besides its bytes: the bytes object's header (33), the
# (seq, payload) tuple (56), the int (28) and the deque slot (8).  Counted in every budget,
# so 64 MiB of history is 64 MiB of memory, whether the messages are large or tiny.
ENTRY_OVERHEAD = 128


def _encode(frame: dict[str, Any]) -> bytes:
    return _dumps(frame).encode()


class HistoryPool:
    """The node's total history budget, an LRU over rooms (dormant ones evicted first)."""

    def __init__(self, max_bytes: int = 0) -> None:
        self.max_bytes = max_bytes
        """0: no total limit."""
        self.bytes = 0
        self.evicted = 0
        """Messages dropped to stay under the total (for /metrics and the tests)."""
        self._active: OrderedDict[int, RoomHistory] = OrderedDict()
        self._dormant: OrderedDict[int, RoomHistory] = OrderedDict()

    def __len__(self) -> int:
        return len(self._active) + len(self._dormant)

    def used(self, h: RoomHistory) -> None:
        """``h`` was just written or read: the most recently used of its kind."""
        key = id(h)
        if h.dormant:
            self._active.pop(key, None)
            self._dormant[key] = h
            self._dormant.move_to_end(key)
        else:
            self._dormant.pop(key, None)
            self._active[key] = h
            self._active.move_to_end(key)

    def forget(self, h: RoomHistory) -> None:
        self._active.pop(id(h), None)
        self._dormant.pop(id(h), None)

    def charge(self, h: RoomHistory, delta: int) -> None:
        self.bytes += delta
        if delta > 0:
            self.used(h)
            self._trim(h)

    def _trim(self, newest: RoomHistory) -> None:
        if not self.max_bytes:
            return
        while self.bytes > self.max_bytes:
            if self._dormant:
                _key, victim = self._dormant.popitem(last=False)
                self.evicted += victim.clear()
                continue
            # Only rooms with members are left: drop the oldest messages of the least
            # recently used one; the room that just grew goes last (its newest message stays).
            victim = next(iter(self._active.values()), newest)
            if victim.drop_oldest() == 0:
                self._active.pop(id(victim), None)
                if victim is newest:
                    return  # nothing is kept anywhere: cannot happen with max_bytes > one message
            else:
                self.evicted += 1


class RoomHistory:
    def __init__(
        self,
        keep: int,
        last_seq: int = 0,
        messages: list[dict[str, Any]] | None = None,
        max_bytes: int = 0,
        pool: HistoryPool | None = None,
    ) -> None:
        self.keep = keep
        """At most this many messages (--history); 0 keeps none."""
        self.max_bytes = max_bytes
        """At most this many bytes of messages (0: no byte limit of its own)."""
        self.last_seq = last_seq
        """The seq of the newest message ever stored (0: none yet)."""
        self.pool = pool
        self.dormant = False
        """The room has no members (the directory keeps this history): evicted first."""
        self.bytes = 0
        """What the kept messages cost: their bytes plus ENTRY_OVERHEAD each."""
        self._ring: deque[tuple[int, bytes]] = deque()
        """(seq, encoded `message` frame), oldest first."""
        for frame in messages or ():
            self.record(frame)

    def __len__(self) -> int:
        return len(self._ring)

    # --- writing --------------------------------------------------------------------

    def add(self, frame: dict[str, Any]) -> tuple[int, bytes]:
        """Give ``frame`` (a `message` dict) the next seq, keep it encoded: (seq, bytes)."""
        self.last_seq += 1
        frame["seq"] = self.last_seq
        payload = _encode(frame)
        self._keep(self.last_seq, payload)
        return self.last_seq, payload

    def append(self, frame: dict[str, Any]) -> int:
        """:meth:`add` for callers that only need the seq."""
        return self.add(frame)[0]

    def record(self, frame: dict[str, Any], payload: bytes | None = None) -> None:
        """Keep a message that already has its seq (newer than every kept one)."""
        seq = frame["seq"]
        self.last_seq = max(self.last_seq, seq)
        self._keep(seq, payload if payload is not None else _encode(frame))

    def _keep(self, seq: int, payload: bytes) -> None:
        if not self.keep:
            return
        ring = self._ring
        ring.append((seq, payload))
        size = len(payload) + ENTRY_OVERHEAD
        grown = size
        while len(ring) > self.keep or (
            self.max_bytes and self.bytes + grown > self.max_bytes and len(ring) > 1
        ):
            grown -= len(ring.popleft()[1]) + ENTRY_OVERHEAD
        if self.max_bytes and size > self.max_bytes:  # alone over the room budget
            ring.pop()
            grown -= size
        self.bytes += grown
        if self.pool is not None:
            self.pool.charge(self, grown)

    def drop_oldest(self) -> int:
        """Drop the oldest kept message; its size (0: nothing was kept)."""
        if not self._ring:
            return 0
        size = len(self._ring.popleft()[1]) + ENTRY_OVERHEAD
        self.bytes -= size
        if self.pool is not None:
            self.pool.bytes -= size
        return size

    def clear(self) -> int:
        """Drop every kept message (seq is kept); how many went."""
        n = len(self._ring)
        if self.pool is not None:
            self.pool.bytes -= self.bytes
        self._ring.clear()
        self.bytes = 0
        return n

    def set_dormant(self, dormant: bool) -> None:
        self.dormant = dormant
        if self.pool is not None:
            self.pool.used(self)

    def replaced(self, last_seq: int, frames: list[dict[str, Any]]) -> RoomHistory:
        """A new history of these messages, with this one's limits and pool; this one
        leaves the pool (a cluster room's mirror adopting a snapshot)."""
        fresh = RoomHistory(self.keep, last_seq, frames, max_bytes=self.max_bytes, pool=self.pool)
        fresh.dormant = self.dormant
        self.detach()
        return fresh

    def merged(self, last_seq: int, frames: list[dict[str, Any]]) -> RoomHistory:
        """This history with a snapshot's copy laid over it (the snapshot wins where both
        have a seq); ``last_seq`` never goes back."""
        last_seq = max(last_seq, self.last_seq)
        first = frames[0]["seq"] if frames else last_seq + 1
        older = [m for m in self.recent() if m["seq"] < first]
        return self.replaced(last_seq, older + frames)

    def detach(self) -> None:
        """Leave the pool (a successor history took over), keeping the messages readable."""
        if self.pool is not None:
            self.pool.bytes -= self.bytes
            self.pool.forget(self)
            self.pool = None

    def release(self) -> None:
        """This history is dropped by its owner: give its bytes back to the pool."""
        self.clear()
        if self.pool is not None:
            self.pool.forget(self)

    # --- reading --------------------------------------------------------------------

    def page(
        self,
        since: int | None = None,
        before: int | None = None,
        limit: int | None = None,
        max_bytes: int = 0,
    ) -> tuple[list[bytes], bool, bool]:
        """The newest kept messages with since < seq < before, oldest first, at most
        ``limit`` of them and ``max_bytes`` together: (messages, more, complete).

        ``more``: older kept messages in that range did not fit (ask again with
        ``before`` = the first seq returned).  ``complete`` (only with ``since``; True
        without): the returned messages are all the messages ever stored after ``since``
        and before ``before`` — False when some were dropped (count, bytes or the pool),
        when ``since`` is ahead of this room (its history was lost, e.g. a restart without
        --store), or when ``more`` (a client that does not page still learns it has a gap).
        """
        if self.pool is not None and self._ring:
            self.pool.used(self)
        lo = 0 if since is None else since
        hi = self.last_seq + 1 if before is None else min(before, self.last_seq + 1)
        out: list[bytes] = []
        size, more = 0, False
        for seq, payload in reversed(self._ring):
            if seq >= hi:
                continue
            if seq <= lo:
                break
            if (limit is not None and len(out) >= limit) or (
                max_bytes and size + len(payload) > max_bytes and out
            ):
                more = True
                break
            if max_bytes and size + len(payload) > max_bytes:  # one message over the page alone
                more = True
                break
            out.append(payload)
            size += len(payload)
        out.reverse()
        first_kept = self._ring[0][0] if self._ring else self.last_seq + 1
        if since is not None and since > self.last_seq:
            return [], False, False
        if since is None:
            complete = True  # no `since`: the newest kept ones were asked for, and given
        else:
            complete = not more and lo + 1 >= min(first_kept, hi)
        return out, more, complete

    def recent(self) -> list[dict[str, Any]]:
        """Every kept message as a dict, oldest first (decodes: for tests and the cluster)."""
        return [json.loads(p) for _seq, p in self._ring]

    def since(self, seq: int) -> tuple[list[dict[str, Any]], bool]:
        """Messages after ``seq`` that are still kept (as dicts), and whether that is all of them.

        ``complete`` is False when some message after ``seq`` was already dropped, or when
        ``seq`` is ahead of this room (its history was lost, e.g. a restart without
        --store): the client cannot trust its view then.
        """
        out, _more, complete = self.page(since=seq)
        return [json.loads(p) for p in out], complete
