"""SchedulerActor: the one shared timer service.

Actors tell it Schedule/Cancel (or several at once in a TimerBatch); it keeps every
deadline in one TimerQueue and waits on ONE gevent timer for the earliest.  When that
fires it posts ``TimerFired`` to each owner: into its mailbox, or, when the owner is
idle and its handlers never block (a user), handed over at once (``run_now``), so that
a deadline's effect (a `bye`) does not wait behind every drain the runners have
queued.  No loop visits users and no greenlet sleeps per user: the cost is per event,
not per user.

The periodic ping needs no decision, so it skips the owner's mailbox: a timer
scheduled with a ``conn`` is written straight to that connection, one ``ping``
payload encoded once per firing batch and shared by every user in it (the bytes
are immutable; the transport only queues them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gevent

from .base import HubbubActor, HubbubRef, tell
from .clock import Clock
from .core import codec
from .core.counters import Counters
from .core.messages import Cancel, CancelOwner, Schedule, TimerBatch, TimerFired
from .core.timers import TimerQueue

__all__ = ["SchedulerActor", "TICK", "FIRE_PER_WAKE"]

TICK = 0.01
"""The scheduler wakes on a 10 ms grid: every deadline within one tick fires in one batch
(one wake-up, one encoded ping shared by all the pings in it) instead of one wake-up per
user.  A timer fires at most 10 ms late; the rules it serves count in seconds."""

FIRE_PER_WAKE = 256
"""At most this many timers fire per wake-up (or per message handled); the rest are due
at once and fire on the next loop iteration. The scheduler's own bound on the work it
does inline (``run_now(bounded=False)``): a burst of deadlines cannot hold the loop, and a
burst of other inline work (frames) cannot push a `TimerFired` behind every queued
drain, which made a hello storm's closes up to 75 ms late."""


@dataclass(frozen=True, slots=True)
class _Wake:
    """The gevent timer went off: fire what is due."""

    watcher: Any = None
    """The timer that went off (a newer one may have replaced it meanwhile)."""


class SchedulerActor(HubbubActor):
    never_blocks = True  # its handlers only touch the timer queue, tell, and write pings

    def __init__(
        self, clock: Clock, parent: HubbubActor | None = None, counters: Counters | None = None
    ) -> None:
        super().__init__("scheduler", parent)
        self.clock = clock
        self.counters = counters or Counters()
        self.timers = TimerQueue()
        self.fired = 0
        self.pinged = 0
        """Pings written straight to connections (never through a user's mailbox)."""
        self._watcher: Any = None
        self._armed_for: float | None = None

    def describe_fields(self) -> dict[str, Any]:
        return {"pending": len(self.timers), "fired": self.fired, "pinged": self.pinged}

    def on_receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is TimerBatch:
            for op in message.ops:
                self._change(op)
        elif kind is Schedule or kind is Cancel:
            self._change(message)
        elif isinstance(message, CancelOwner):
            self.timers.cancel_owner(message.owner_id, message.names)
        elif isinstance(message, _Wake):
            if message.watcher is self._watcher:  # that timer has fired: it is spent
                self._armed_for = self._watcher = None
        else:
            return super().on_receive(message)
        self._fire_due()
        self._rearm()
        return None

    def _change(self, op: Schedule | Cancel) -> None:
        if type(op) is Schedule:
            self.timers.schedule(
                op.owner_id, op.name, op.due, (op.owner, op.token, op.every, op.conn)
            )
        else:
            self.timers.cancel(op.owner_id, op.name)

    def _fire_due(self) -> None:
        ping: bytes | None = None
        for entry in self.timers.pop_due(self.clock.monotonic(), FIRE_PER_WAKE):
            owner, token, every, conn = entry.payload
            self.fired += 1
            if conn is not None:
                # Direct: no decision to make, so no trip through the owner's mailbox.
                # A closed connection or a stopped owner is not re-armed (its Cancel
                # may still be on the way; the ping would go nowhere).
                if conn.closed or owner.actor_stopped.is_set():
                    continue
                if ping is None:
                    ping = codec.encode(codec.ping(self.clock.wall()))
                conn.send_text(ping)
                self.pinged += 1
                self.counters.frames_out += 1
                alive = True
            else:
                alive = self._fire(owner, TimerFired(entry.key[1], token))
            if alive and every:
                # Periodic: next deadline from the last one, so pings do not drift.
                self.timers.schedule(entry.key[0], entry.key[1], entry.due + every, entry.payload)

    @staticmethod
    def _fire(owner: Any, message: TimerFired) -> bool:
        # At once when the owner is idle and never blocks (a user): its `bye` leaves in
        # this batch, not behind everything else the runners have queued (a hello storm's
        # closes queue up teardown work). Otherwise, and for plugins, a tell.
        actor = owner._actor_weakref() if type(owner) is HubbubRef else None
        if actor is not None and actor.run_now(message, bounded=False):
            return True
        return tell(owner, message)

    def _wake(self, watcher: Any) -> None:
        # The gevent timer's callback, in the hub: fire what is due right away, after the
        # Schedule/Cancel already told (catch_up: in order), instead of waiting for this
        # actor's turn behind every drain the runners have queued (a storm of closes
        # queues thousands: the deadlines would wait for all of them).
        wake = _Wake(watcher)
        if not self.run_now(wake, catch_up=True, bounded=False):
            tell(self.actor_ref, wake)

    def _rearm(self) -> None:
        due = self.timers.next_due()
        wake = None if due is None else math.ceil(due / TICK) * TICK
        if wake == self._armed_for:
            return
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        self._armed_for = wake
        if wake is None:
            return
        delay = max(0.0, wake - self.clock.monotonic())
        self._watcher = gevent.get_hub().loop.timer(delay)
        # The callback runs in the hub, where nothing may block: neither a tell nor this
        # actor's handler does (actors/base.py, run_now).
        self._watcher.start(self._wake, self._watcher)

    def on_stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        super().on_stop()
