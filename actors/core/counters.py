"""Plain counters the actors bump on their hot paths; /metrics reads them at scrape time.

Why not prometheus-client objects directly: their ``inc()`` takes a lock and costs
about a microsecond, paid per delivery on the fan-out path.  All actors run in one OS
thread, so a plain ``+= 1`` is exact; the telemetry collector turns these into
Prometheus counters and a histogram when scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter

from .timeline import Timelines

__all__ = ["Counters", "Histogram"]


class Histogram:
    """Fixed buckets (upper bounds, seconds), cumulative on export."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)


class Counters:
    def __init__(self) -> None:
        self.connections = 0
        self.frames_in = 0
        """Client data frames received."""
        self.frames_out = 0
        """Frames queued to clients (every type, fan-out included)."""
        self.messages = 0
        """Room messages stored (say)."""
        self.deliveries = 0
        """Room messages handed to members (one per member per message)."""
        self.dms = 0
        self.errors: Counter[str] = Counter()
        """`error` frames sent, by code."""
        self.disconnects: Counter[str] = Counter()
        """Disconnects by reason."""
        self.actor_failures: Counter[str] = Counter()
        """Actors that raised, by kind."""
        self.timelines = Timelines()
        """Users per state, recently gone users' timelines, disconnects in the last minute."""
        # From the sender's actor handling `say` to the room having told every member.
        self.fanout_seconds = Histogram(
            (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
        )
