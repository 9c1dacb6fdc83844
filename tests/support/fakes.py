"""Recording fakes for the pure core: a clock that jumps, and a session driver.

No mocks: the driver runs the real ``Session`` against the real ``TimerQueue``,
records every effect, and moves a fake clock forward, so each maintenance rule
is checked in microseconds.
"""

from __future__ import annotations

import json
from typing import Any

from actors.core import codec
from actors.core.messages import ClientFrame, TimerFired
from actors.core.session import Arm, Close, Disarm, Finish, Opened, Send, SendRaw, Session, Timeouts
from actors.core.timers import TimerQueue


class FakeClock:
    """Monotonic and wall time that only move when told (trio's MockClock idea)."""

    def __init__(self, start: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall - start

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    def jump(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._now += seconds


class SessionDriver:
    """A Session wired to a real TimerQueue and a FakeClock; records what it would send."""

    def __init__(self, timeouts: Timeouts | None = None, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.timers = TimerQueue()
        self.session = Session("s1", timeouts or Timeouts(), self.clock.wall)
        self.effects: list[Any] = []
        self.apply(self.session.handle(Opened(), self.clock.monotonic()))

    def apply(self, effects: list[Any]) -> list[Any]:
        for fx in effects:
            if isinstance(fx, Arm):
                self.timers.schedule("s1", fx.name, fx.due, (fx.token, fx.every, fx.direct))
            elif isinstance(fx, Disarm):
                self.timers.cancel("s1", fx.name)
            elif isinstance(fx, Finish):
                self.timers.cancel_owner("s1", fx.timers)
        self.effects.extend(effects)
        return effects

    def event(self, event: Any) -> list[Any]:
        return self.apply(self.session.handle(event, self.clock.monotonic()))

    def send(self, frame: dict[str, Any] | str) -> list[Any]:
        text = frame if isinstance(frame, str) else json.dumps(frame)
        return self.event(ClientFrame(text))

    def advance(self, seconds: float, step: float | None = None) -> list[Any]:
        """Move time forward, firing due timers in order as the scheduler would."""
        out: list[Any] = []
        target = self.clock.monotonic() + seconds
        while True:
            due = self.timers.next_due()
            if due is None or due > target:
                break
            self.clock.jump(max(0.0, due - self.clock.monotonic()))
            for entry in self.timers.pop_due(self.clock.monotonic()):
                token, every, direct = entry.payload
                if every:  # as the SchedulerActor does for periodic timers
                    self.timers.schedule("s1", entry.key[1], entry.due + every, entry.payload)
                if direct:  # as the SchedulerActor does: written to the socket, no session event
                    ping = SendRaw(codec.encode(codec.ping(self.clock.wall())))
                    self.effects.append(ping)
                    out.append(ping)
                else:
                    out += self.event(TimerFired(entry.key[1], token))
        self.clock.jump(target - self.clock.monotonic())
        return out

    # --- reading what happened --------------------------------------------------------

    def sent(self, effects: list[Any] | None = None) -> list[dict[str, Any]]:
        frames = []
        for fx in self.effects if effects is None else effects:
            if isinstance(fx, Send):
                frames.append(fx.frame)
            elif isinstance(fx, SendRaw):
                frames.append(json.loads(fx.payload))
        return frames

    def closes(self, effects: list[Any] | None = None) -> list[Close]:
        return [fx for fx in (self.effects if effects is None else effects) if isinstance(fx, Close)]
