"""Test helpers for plugin authors and for hubbub's own tests, installed with the package.

    from hubbub.testing import RecordingConn, act, connect_user, wait_for

    def test_echo_repeats(system):                  # system = ActorSystem(Timeouts())
        echo = system.plugins.start(Echo)
        alice = connect_user(system, "alice", "lobby")
        alice.send({"type": "say", "room": "lobby", "text": "hi"})
        wait_for(lambda: [m for m in alice.of("message") if m["from"] == "echo"])

* :class:`FakeClock` — monotonic and wall time that move only when told (``jump``);
* :class:`SessionDriver` — the real Session on the real timer heap and a FakeClock,
  recording every effect (no actors at all);
* :class:`RecordingConn` — a user's connection that records the frames it is sent;
* :class:`RecordingActor` — an actor that records every message told to it (a user, a
  store, a directory or a parent, as another actor sees it);
* :func:`connect_user` — a real UserActor on a RecordingConn, logged in, in rooms;
* :func:`act` / :class:`Do` — make a plugin do something from inside its own greenlet;
* :func:`wait_for` — poll a condition on gevent, with a deadline.

No mocks: everything here drives the real code.
"""

from __future__ import annotations

import json
from typing import Any

import gevent

from actors.base import HubbubActor, tell
from actors.core import codec
from actors.core.messages import ClientFrame, ConnectionLost, TimerFired
from actors.core.session import Arm, Close, Disarm, Finish, Opened, Send, SendRaw, Session, Timeouts
from actors.core.timers import TimerQueue
from actors.plugins.actor import Call as Do

__all__ = [
    "Do",
    "FakeClock",
    "RecordingActor",
    "RecordingConn",
    "SessionDriver",
    "act",
    "connect_user",
    "stop_all",
    "wait_for",
]


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
        """Move both clocks forward; refuses to go backwards."""
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
        return [
            fx for fx in (self.effects if effects is None else effects) if isinstance(fx, Close)
        ]


class RecordingConn:
    """A user's connection that records the frames it is given; ``close()`` ends it as the
    transport would (the user hears ConnectionLost).  ``send(frame)`` is the client talking."""

    remote_addr = "127.0.0.1"
    backlog = 0
    max_backlog = 1 << 20

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        """(code, reason) once closed, else None."""
        self.user: Any = None
        """The UserActor ref reading from this connection (set by :func:`connect_user`)."""

    def send_text(self, payload: bytes) -> None:
        self.frames.append(json.loads(payload))

    def close(self, code: int, reason: str = "") -> None:
        self.closed = (code, reason)
        tell(self.user, ConnectionLost(code))

    def abort(self) -> None:
        self.close(1006, "aborted")

    def send(self, frame: dict[str, Any]) -> None:
        tell(self.user, ClientFrame(json.dumps(frame)))

    def of(self, kind: str) -> list[dict[str, Any]]:
        """The frames of one ``type`` received so far."""
        return [f for f in self.frames if f["type"] == kind]


class RecordingActor(HubbubActor):
    """An actor that writes down every message it is told, ChildFailed included."""

    def __init__(self, actor_id: str = "recorder", parent: HubbubActor | None = None) -> None:
        super().__init__(actor_id, parent)
        self.messages: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        self.messages.append(message)
        return None

    def of(self, kind: type) -> list[Any]:
        """The messages of one type received so far."""
        return [m for m in self.messages if isinstance(m, kind)]


def wait_for(predicate: Any, timeout: float = 3.0, what: str = "condition") -> Any:
    """Yield to the other greenlets until ``predicate()`` is truthy; return its value."""
    deadline = gevent.get_hub().loop.now() + timeout
    while not (value := predicate()):
        if gevent.get_hub().loop.now() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        gevent.sleep(0.005)
    return value


def stop_all(actors: Any) -> None:
    """Stop every actor (object) still running, and let their greenlets finish."""
    for actor in actors:
        if actor.actor_ref.is_alive():
            actor.actor_ref.stop(block=False)
    gevent.sleep(0.01)


def connect_user(system: Any, nick: str, *rooms: str) -> RecordingConn:
    """A real UserActor on a RecordingConn: `hello`, `profile` as ``nick``, then each room joined."""
    conn = RecordingConn()
    conn.user = system.spawn_user(conn)
    conn.send({"type": "hello"})
    conn.send({"type": "profile", "nick": nick})
    wait_for(lambda: conn.of("profile_ok"), what=f"{nick} profile_ok")
    for room in rooms:
        conn.send({"type": "join", "room": room})
        wait_for(
            lambda room=room: [f for f in conn.of("joined") if f["room"] == room],
            what=f"{nick} joined {room}",
        )
    return conn


def act(plugin: Any, fn: Any) -> None:
    """Make ``plugin`` run ``fn(plugin)`` from inside its own greenlet (a tell: returns at once)."""
    tell(plugin.actor_ref, Do(fn))
