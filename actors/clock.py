"""Where time comes from.

Every rule about a user's life compares deadlines against ``clock.monotonic()``;
wall-clock time (``clock.wall()``) only stamps messages (`ts`).  The real server
uses :class:`MonotonicClock`; tests inject a fake one and jump it forward, so the
12-hour session rule runs in milliseconds.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "MonotonicClock"]


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards: deadlines live here."""
        ...

    def wall(self) -> float:
        """Unix seconds: only for the `ts` fields users see."""
        ...


class MonotonicClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()
