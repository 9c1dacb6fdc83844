"""A pure timer structure: schedule / cancel / pop_due(now).  No gevent, no clock.

The scheduler actor wraps one of these and sleeps on a single gevent timer for
:meth:`TimerQueue.next_due`.  Every user timer lives here, so maintenance costs
what the events cost, not what the user count costs.

Why a heap with lazy deletion: the five rules have fixed durations, but the pong
rule re-arms with the *remaining* time after the last pong, so deadlines of one
kind are not always in insertion order.  A binary heap keeps schedule at
O(log n); cancel is O(1) (the entry is marked dead and skipped when it surfaces).
Dead entries are compacted away when they outnumber the live ones, so a storm of
cancels cannot grow memory without bound.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

__all__ = ["TimerEntry", "TimerQueue", "BUCKETS_PER_SECOND"]

BUCKETS_PER_SECOND = 4
"""Resolution of the due-time histogram (/debug's "timers due in the next 1 s / 10 s / 60 s")."""


@dataclass(slots=True)
class TimerEntry:
    due: float
    order: int
    key: tuple[Hashable, str]
    """(owner id, timer name): at most one live timer per key."""
    payload: Any = None
    """What the owner gets back when the timer fires."""
    alive: bool = True


class TimerQueue:
    def __init__(self) -> None:
        # (due, order, entry) tuples: heap comparisons stay in C (a dataclass's
        # generated __lt__ was 7 % of an idle node's CPU in the profile).
        self._heap: list[tuple[float, int, TimerEntry]] = []
        self._live: dict[tuple[Hashable, str], TimerEntry] = {}
        self._order = itertools.count()
        # Live timers per quarter second of their deadline: /debug asks "how many fire in
        # the next minute?" and gets it from <= 240 buckets instead of a walk of the heap.
        self._buckets: dict[int, int] = {}

    def __len__(self) -> int:
        """Live (pending) timers."""
        return len(self._live)

    def schedule(self, owner: Hashable, name: str, due: float, payload: Any = None) -> None:
        """Arm timer ``name`` of ``owner`` at ``due``; replaces a pending one of the same name."""
        self.cancel(owner, name)
        entry = TimerEntry(due, next(self._order), (owner, name), payload)
        self._live[entry.key] = entry
        heapq.heappush(self._heap, (due, entry.order, entry))
        b = int(due * BUCKETS_PER_SECOND)
        self._buckets[b] = self._buckets.get(b, 0) + 1

    def cancel(self, owner: Hashable, name: str) -> bool:
        """Disarm one timer; True if it was pending."""
        entry = self._live.pop((owner, name), None)
        if entry is None:
            return False
        entry.alive = False
        self._unbucket(entry.due)
        self._maybe_compact()
        return True

    def _unbucket(self, due: float) -> None:
        b = int(due * BUCKETS_PER_SECOND)
        n = self._buckets[b] - 1
        if n:
            self._buckets[b] = n
        else:
            del self._buckets[b]

    def due_within(self, now: float, horizons: tuple[float, ...]) -> list[int]:
        """Live timers due before ``now + h`` for each horizon ``h`` (seconds, ascending),
        to the histogram's resolution; overdue ones not yet fired count as due.  Costs
        what the number of buckets in the longest horizon costs, not the number of timers."""
        buckets, out = self._buckets, []
        first = self.next_due()
        if first is None:
            return [0] * len(horizons)
        start = int(now * BUCKETS_PER_SECOND)
        total = 0
        # Overdue buckets (a wake-up not handled yet): from the earliest deadline to now,
        # normally a bucket or two; capped at an hour's worth for a scheduler far behind.
        for b in range(
            max(int(first * BUCKETS_PER_SECOND), start - 3600 * BUCKETS_PER_SECOND), start
        ):
            total += buckets.get(b, 0)
        b = start
        for h in horizons:
            end = int((now + h) * BUCKETS_PER_SECOND)
            while b < end:
                total += buckets.get(b, 0)
                b += 1
            out.append(total)
        return out

    def cancel_owner(self, owner: Hashable, names: tuple[str, ...] | list[str]) -> int:
        """Disarm the named timers of one owner (the owner knows its own timer names)."""
        return sum(self.cancel(owner, name) for name in names)

    def next_due(self) -> float | None:
        """Deadline of the earliest live timer, or None."""
        heap = self._heap
        while heap and not heap[0][2].alive:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float, limit: int | None = None) -> list[TimerEntry]:
        """Remove and return every live timer with ``due <= now``, earliest first; at
        most ``limit`` of them (the rest stay due for the next call)."""
        out: list[TimerEntry] = []
        heap = self._heap
        if limit is None:
            limit = len(heap)
        while heap and (heap[0][0] <= now or not heap[0][2].alive) and len(out) < limit:
            entry = heapq.heappop(heap)[2]
            if entry.alive:
                entry.alive = False
                del self._live[entry.key]
                self._unbucket(entry.due)
                out.append(entry)
        return out

    def _maybe_compact(self) -> None:
        # Lazy deletion leaves dead entries in the heap; rebuild when they dominate.
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._live):
            self._heap = [item for item in self._heap if item[2].alive]
            heapq.heapify(self._heap)

    def pending_for(self, owner: Hashable) -> list[tuple[str, float]]:
        """(name, due) of an owner's live timers: for tests and debugging, O(n)."""
        return sorted((k[1], e.due) for k, e in self._live.items() if k[0] == owner)
