"""Memory and rate budgets: how much a client may make the node keep or send, by bytes.

Pure: numbers and one token bucket on an injected ``now``.  The codec checks the shape
budgets before anything is kept, the rooms and the history pool the history budgets,
the directory the room counts and the dm budget (docs/operations.md, "Worst-case
memory", adds them up).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Shape", "Budgets", "Bucket"]


@dataclass(frozen=True, slots=True)
class Shape:
    """The size and shape a client-supplied value may have before it is kept."""

    max_bytes: int = 2048
    """Bytes of the value encoded as compact JSON (`profile.info`)."""
    max_depth: int = 4
    """Nesting: an object holding an object is depth 2."""
    max_items: int = 64
    """Keys plus array items, counted over the whole value."""
    max_string: int = 512
    """Characters in any one string (keys included)."""
    max_client: int = 128
    """Characters in `hello.client`."""


@dataclass(frozen=True, slots=True)
class Budgets:
    """Every budget of a node, with the defaults of docs/operations.md."""

    shape: Shape = Shape()
    history_bytes: int = 1 << 20
    """Bytes of encoded `message` frames kept per room (with --history as the count limit)."""
    history_total: int = 64 << 20
    """Bytes of history kept across all rooms, emptied ones evicted first."""
    joined_bytes: int = 256 << 10
    """Largest `joined`/`history` page; always well under --max-backlog (see page_bytes)."""
    max_rooms_per_user: int = 128
    max_rooms: int = 10_000
    """Rooms with members at once; also how many emptied rooms keep their seq."""
    dm_rate: float = 10.0
    """dms per second into one user, from all senders together."""
    dm_bytes: float = 64 << 10
    """dm bytes per second into one user; a burst of 4 seconds' worth is allowed."""
    max_ignores: int = 256
    """Nicks one user may ignore."""
    nick_grace: float = 30.0
    """Seconds a dropped user's nick is held for its owner (0: not held)."""

    def page_bytes(self, max_backlog: int) -> int:
        """The page budget actually used: a quarter of the slow-consumer limit at most, so a
        `joined` alone can never get its reader cut, whatever the two flags say."""
        return max(1024, min(self.joined_bytes, max_backlog // 4))


class Bucket:
    """A token bucket: ``rate`` per second, at most ``burst`` held; ``take(n, now)``."""

    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, now

    def take(self, n: float, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now
        if self.tokens < n:
            return False
        self.tokens -= n
        return True

    def full(self, now: float) -> bool:
        """Refilled to the brim by ``now``: it can be forgotten without changing anything."""
        return self.tokens + (now - self.at) * self.rate >= self.burst
