"""Outbox: the write-only face of a user's connection that rooms hold.

Rooms queue frames straight on their members' connections (the direct fan-out of
docs/architecture.md), so they need *something* of the connection — but only
``send_text`` (never blocks; ``send_now`` writes at once when it can) and ``backlog``
(bytes not yet written).  Not ``receive``, ``close`` or ``abort``: a room must never end
a user's connection or read from it.  The UserActor wraps its connection once and hands
this to rooms.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Outbox", "Writable"]


class Writable(Protocol):
    """What an Outbox needs of a connection (hubbub's transport has it)."""

    def send_text(self, payload: bytes) -> None: ...

    @property
    def backlog(self) -> int: ...


class Outbox:
    """``send_text(payload)`` and ``backlog`` of one connection, and nothing else."""

    __slots__ = ("send_text", "send_now", "_conn")

    def __init__(self, conn: Writable) -> None:
        # The bound methods themselves, so the fan-out loop pays no extra call per member.
        self.send_text: Any = conn.send_text
        # Written at once, with what waits on the connection (hubbub's transport's
        # send_text_now); a connection without one gets send_text.
        self.send_now: Any = getattr(conn, "send_text_now", conn.send_text)
        self._conn = conn

    @property
    def backlog(self) -> int:
        """Bytes queued on the connection and not yet written."""
        return int(self._conn.backlog)
