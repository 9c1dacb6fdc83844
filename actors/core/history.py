"""A room's message history: the sequence counter and a bounded ring of recent messages.

Pure and synchronous: the RoomActor owns one; the directory keeps it while the
room has no members, so `seq` never restarts and `since` still recovers after an
empty room was stopped.
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["RoomHistory"]


class RoomHistory:
    def __init__(self, keep: int, last_seq: int = 0, messages: list[dict[str, Any]] | None = None) -> None:
        self.keep = keep
        self.last_seq = last_seq
        """The seq of the newest message ever stored (0: none yet)."""
        self._ring: deque[dict[str, Any]] = deque(messages or (), maxlen=keep or None)
        if keep == 0:
            self._ring.clear()

    def __len__(self) -> int:
        return len(self._ring)

    def append(self, frame: dict[str, Any]) -> int:
        """Assign the next seq to ``frame`` (a `message` dict with a `seq` key) and keep it."""
        self.last_seq += 1
        frame["seq"] = self.last_seq
        if self.keep:
            self._ring.append(frame)
        return self.last_seq

    def recent(self) -> list[dict[str, Any]]:
        """Every kept message, oldest first."""
        return list(self._ring)

    def since(self, seq: int) -> tuple[list[dict[str, Any]], bool]:
        """Messages after ``seq`` that are still kept, and whether that is all of them.

        ``complete`` is False when some message after ``seq`` was already dropped
        from the ring, or when ``seq`` is ahead of this room (its history was lost,
        e.g. a restart without --store): the client cannot trust its view then.
        """
        if seq > self.last_seq:
            return [], False
        first_kept = self._ring[0]["seq"] if self._ring else self.last_seq + 1
        out = [m for m in self._ring if m["seq"] > seq] if seq < self.last_seq else []
        return out, seq + 1 >= first_kept

    def record(self, frame: dict[str, Any]) -> None:
        """Keep a message that already has its seq, newer than every kept one (a cluster
        room's mirror of what Redis numbered)."""
        self.last_seq = frame["seq"]
        if self.keep:
            self._ring.append(frame)

    def merged(self, last_seq: int, frames: list[dict[str, Any]]) -> RoomHistory:
        """This history with a snapshot's copy laid over it (the snapshot wins where both
        have a seq); ``last_seq`` never goes back."""
        last_seq = max(last_seq, self.last_seq)
        first = frames[0]["seq"] if frames else last_seq + 1
        older = [m for m in self.recent() if m["seq"] < first]
        return RoomHistory(self.keep, last_seq, older + frames)
