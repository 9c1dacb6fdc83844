"""SchedulerActor: the one shared timer service.

Actors tell it Schedule/Cancel; it keeps every deadline in one TimerQueue and
waits on ONE gevent timer for the earliest.  When that fires it posts
``TimerFired`` into each owner's mailbox.  No loop visits users and no greenlet
sleeps per user: the cost is per event, not per user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gevent

from .base import HubbubActor, tell
from .clock import Clock
from .messages import Cancel, CancelOwner, Schedule, TimerFired
from .timers import TimerQueue

__all__ = ["SchedulerActor"]


@dataclass(frozen=True, slots=True)
class _Wake:
    """The gevent timer went off: fire what is due."""


class SchedulerActor(HubbubActor):
    def __init__(self, clock: Clock, parent: HubbubActor | None = None) -> None:
        super().__init__("scheduler", parent)
        self.clock = clock
        self.timers = TimerQueue()
        self.fired = 0
        self._watcher: Any = None
        self._armed_for: float | None = None

    def describe_fields(self) -> dict[str, Any]:
        return {"pending": len(self.timers), "fired": self.fired}

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Schedule):
            self.timers.schedule(message.owner_id, message.name, message.due,
                                 (message.owner, message.token))
        elif isinstance(message, Cancel):
            self.timers.cancel(message.owner_id, message.name)
        elif isinstance(message, CancelOwner):
            self.timers.cancel_owner(message.owner_id, message.names)
        elif isinstance(message, _Wake):
            self._armed_for = None
        else:
            return super().on_receive(message)
        self._fire_due()
        self._rearm()
        return None

    def _fire_due(self) -> None:
        for entry in self.timers.pop_due(self.clock.monotonic()):
            owner, token = entry.payload
            self.fired += 1
            tell(owner, TimerFired(entry.key[1], token))

    def _rearm(self) -> None:
        due = self.timers.next_due()
        if due == self._armed_for:
            return
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        self._armed_for = due
        if due is None:
            return
        delay = max(0.0, due - self.clock.monotonic())
        self._watcher = gevent.get_hub().loop.timer(delay)
        # The callback runs in the hub, where nothing may block: hand the wake-up
        # to a short-lived greenlet, which puts it in our mailbox.
        self._watcher.start(gevent.spawn, tell, self.actor_ref, _Wake())

    def on_stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        super().on_stop()
