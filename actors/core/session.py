"""The user state machine: every rule about a user's life, in one file, with no I/O.

``Session.handle(event, now)`` takes one event (a client frame, a timer, a kick,
an answer from the directory or a room) and the monotonic time, and returns a
list of *effects* (send this, arm that timer, close with this code, ...).  The
UserActor shell carries the effects out.  Tests drive this class with a fake
clock, so the 12-hour rule runs in microseconds.

All transitions live in :data:`TRANSITIONS`: (state, event name) → (method,
states it may lead to).  ``docs/architecture.md`` draws its diagram from the same
table (``python -m actors.core.session``), so the picture cannot drift from the code.

Over 500 lines on purpose: every rule about a user's life stays in this one file (the
habit of h11's ``_state.py``); the rules it applies live in codec, budgets and identity.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import codec
from .budgets import Budgets
from .codec import (
    Bye,
    ClientMessage,
    DecodeError,
    Dm,
    Hello,
    History,
    Ignore,
    Join,
    Leave,
    Ping,
    Profile,
    Say,
    Unignore,
)
from .identity import IdentityError, Verifier, fold
from .messages import (
    Acked,
    ClientFrame,
    ConnectionLost,
    Deliver,
    DmResult,
    JoinedRoom,
    Kick,
    NickResult,
    Overflow,
    RoomMoved,
    Shutdown,
    TimerFired,
)

__all__ = [
    "UserState",
    "Timeouts",
    "Limits",
    "Session",
    "TRANSITIONS",
    "InvalidTransition",
    "Send",
    "SendRaw",
    "Arm",
    "Disarm",
    "Close",
    "ClaimNickFx",
    "JoinRoomFx",
    "LeaveRoomFx",
    "SayFx",
    "DmFx",
    "PageFx",
    "IgnoresFx",
    "Finish",
    "Effect",
    "CLOSE_CODES",
]


class UserState(enum.Enum):
    UNDEFINED = "Undefined"
    CONNECTED = "Connected"
    IN_CHAT = "InChat"
    TO_BE_DISCONNECTED = "ToBeDisconnected"
    DISCONNECTED = "Disconnected"


U, C, I, T, D = (
    UserState.UNDEFINED,
    UserState.CONNECTED,
    UserState.IN_CHAT,
    UserState.TO_BE_DISCONNECTED,
    UserState.DISCONNECTED,
)
LIVE = (U, C, I)

# reason → close code (docs/protocol.md, "Close codes").
CLOSE_CODES = {
    "bye": 1000,
    "shutdown": 1001,
    "policy": 1008,
    "hello_timeout": 4001,
    "pong_timeout": 4002,
    "session_expired": 4003,
    "profile_timeout": 4004,
    "kicked": 4005,
    "rate_limited": 4006,
    "slow_consumer": 4007,
    "internal_error": 1011,
}

# Close codes the transport ends a connection with on its own (framing, size, UTF-8,
# a dropped TCP connection), as the reasons logs and /metrics show.
TRANSPORT_REASONS: dict[int | None, str] = {
    1002: "protocol_error",
    1007: "invalid_utf8",
    1009: "too_big",
    1006: "connection_lost",
}


# Ends that were not the user's choice (nor an admin's): its nick is held for it.
DROPPED = frozenset({"connection_lost", "pong_timeout", "slow_consumer", "internal_error"})


@dataclass(frozen=True)
class Timeouts:
    """The five durations (seconds) of the maintenance rules."""

    hello: float = 5.0
    ping: float = 30.0
    pong: float = 120.0
    profile: float = 300.0
    session: float = 43200.0

    def as_dict(self) -> dict[str, float]:
        return {
            "hello": self.hello,
            "ping": self.ping,
            "pong": self.pong,
            "profile": self.profile,
            "session": self.session,
        }


@dataclass(frozen=True)
class Limits:
    """Flood control: a token bucket per user over client data frames."""

    rate: float = 20.0
    """Tokens added per second."""
    burst: int = 40
    """Bucket size; also how many rejected frames in a row are tolerated before 4006."""


# --- effects: what the shell must do ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Encode ``frame`` and write it to the client."""

    frame: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SendRaw:
    """Write already-encoded bytes (fan-out: encoded once by the room)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Arm:
    """Ask the scheduler for timer ``name`` at monotonic ``due``; ``token`` comes back.

    With ``every``, the scheduler re-arms it itself each time it fires (the ping timer:
    no scheduler message per ping).  With ``direct``, a firing needs no decision: the
    scheduler writes the `ping` to the connection itself and this session never hears
    of it (``TimerFired`` is not sent)."""

    name: str
    due: float
    token: int
    every: float | None = None
    direct: bool = False


@dataclass(frozen=True, slots=True)
class Disarm:
    """Cancel timer ``name`` at the scheduler."""

    name: str


@dataclass(frozen=True, slots=True)
class Close:
    """Send a close frame with ``code`` and ``reason``; the socket then closes."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class ClaimNickFx:
    """Ask the directory for ``nick``."""

    nick: str
    verified: bool = False
    """A valid token proved the nick is ours."""
    resume: str | None = None
    """The resume secret the client sent."""


@dataclass(frozen=True, slots=True)
class JoinRoomFx:
    """Ask the directory to add us to ``room``."""

    room: str
    since: int | None
    epoch: str | None = None


@dataclass(frozen=True, slots=True)
class LeaveRoomFx:
    """Ask the directory to remove us from ``room``."""

    room: str


@dataclass(frozen=True, slots=True)
class SayFx:
    """Tell the room (``handle`` is its ref) what we say."""

    handle: Any
    text: str
    client_id: str | None


@dataclass(frozen=True, slots=True)
class DmFx:
    """Ask the directory to deliver a dm."""

    to: str
    text: str
    client_id: str | None


@dataclass(frozen=True, slots=True)
class PageFx:
    """Ask the room (``handle``) for an older page of its history."""

    handle: Any
    before: int | None
    since: int | None
    limit: int | None


@dataclass(frozen=True, slots=True)
class IgnoresFx:
    """Our ignore list changed: tell every room we are in."""

    ignores: frozenset[str]


@dataclass(frozen=True, slots=True)
class Finish:
    """The socket is gone: leave rooms, free the nick, cancel timers, stop the actor."""

    timers: tuple[str, ...]


Effect = (
    Send
    | SendRaw
    | Arm
    | Disarm
    | Close
    | ClaimNickFx
    | JoinRoomFx
    | LeaveRoomFx
    | SayFx
    | DmFx
    | PageFx
    | IgnoresFx
    | Finish
)


class InvalidTransition(RuntimeError):
    """An event the table does not allow in the current state (a bug, not bad input)."""


@dataclass(frozen=True, slots=True)
class Opened:
    """The socket was accepted: start the clocks."""

    at: float | None = None
    """Monotonic time of the upgrade, if known: the rules count from the 101, not from
    whenever the actor first ran (under an accept storm that can be tens of ms later)."""


# Events are named by their class: client messages by their wire type, the rest by class name.
def event_name(event: object) -> str:
    if isinstance(event, ClientMessage):
        return codec.message_type(event)
    return type(event).__name__


@dataclass(slots=True)  # one per user: no per-instance __dict__
class Session:
    session_id: str
    timeouts: Timeouts
    wall: Callable[[], float]
    """Wall clock for `ts` fields (injected, like the monotonic `now`)."""
    state: UserState = U
    nick: str | None = None
    info: bytes | None = None
    """`profile.info` as compact JSON, within ``budgets.shape``."""
    client: str | None = None
    rooms: dict[str, Any] = field(default_factory=dict)
    """Joined rooms: name → room handle (the RoomActor ref)."""
    opened_at: float = 0.0
    last_pong: float = 0.0
    timers: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Armed timers: name → (token, due).  The source of /debug's `timers`."""
    limits: Limits = field(default_factory=Limits)
    budgets: Budgets = field(default_factory=Budgets)
    verifier: Verifier | None = None
    """With --auth-*: checks `profile.token`."""
    ignores: set[str] = field(default_factory=set)
    """Folded nicks whose dms and room messages this user does not get."""
    close_reason: str | None = None
    _tokens: float = -1.0  # the bucket; < 0 until the first frame fills it
    _last_refill: float = 0.0
    _strikes: int = 0
    """Frames rejected since the last accepted one."""
    _token: int = 0
    _nick_pending: str | None = None

    def holds_nick(self) -> bool:
        """Keep the nick for its owner for a while (--nick-grace): only when the connection
        dropped.  A user who said `bye`, closed the WebSocket or was kicked let it go."""
        return self.close_reason in DROPPED

    # --- the one entry point ---------------------------------------------------------

    def handle(self, event: object, now: float) -> list[Effect]:
        if self.state is D:
            # The actor is stopping: messages already in its mailbox (a late timer, a
            # delivery, a shutdown) have nobody to act for.
            return []
        if isinstance(event, ClientFrame):
            return self._frame(event.data, now)
        return self._dispatch(event_name(event), event, now)

    def _dispatch(self, name: str, event: object, now: float) -> list[Effect]:
        row = TRANSITIONS.get((self.state, name))
        if row is None:
            raise InvalidTransition(f"can't handle {name} in state {self.state.value}")
        method, targets = row
        before = self.state
        effects = method(self, event, now)
        assert self.state is before or self.state in targets, (before, name, self.state)
        return effects

    def _frame(self, data: str | bytes, now: float) -> list[Effect]:
        if self.state in (T, D):
            return []  # a disconnect was decided: nothing the client says matters now
        if self.state is not U and not self._take_token(now):
            self._strikes += 1
            if self._strikes > self.limits.burst:
                return self._dispatch("flood", None, now)
            return [Send(codec.error("rate_limited", "slow down: too many messages"))]
        self._strikes = 0
        try:
            msg = codec.decode(data, self.budgets.shape)
        except DecodeError as exc:
            if self.state is U:
                return self._dispatch("not_hello", exc, now)
            return [Send(codec.error(exc.code, exc.message))]
        name = codec.message_type(msg)
        if (self.state, name) not in TRANSITIONS:
            if self.state is U:
                # docs/protocol.md: any message other than hello while Undefined → 1008.
                return self._dispatch("not_hello", msg, now)
            return [
                Send(
                    codec.error("not_ready", f"`{name}` is not allowed in state {self.state.value}")
                )
            ]
        return self._dispatch(name, msg, now)

    def note_pong(self, now: float) -> bool:
        """A `pong` message, noted where the transport read it: no mailbox trip.

        True when it needed no decision: the table allows `pong` in this state (so never
        before hello: that is `policy` 1008) and the rate bucket has a token (a pong
        counts like any client message).  False: the caller sends the frame through the
        mailbox, where ``handle`` decides (`rate_limited`, 4006, 1008).  The caller only
        takes this path with an empty mailbox, so the order of frames is kept.
        """
        row = TRANSITIONS.get((self.state, "pong"))
        if row is None or row[0] is not Session._pong or not self._take_token(now):
            return False
        self._strikes = 0
        row[0](self, None, now)
        return True

    def timer_dues(self, now: float) -> list[tuple[str, float]]:
        """Armed timers and when each fires next, soonest first (/debug's `timers`).

        The ping repeats at the scheduler without telling us, so its recorded deadline
        is the first one: the next is a whole number of intervals after it."""
        out = []
        every = self.timeouts.ping
        for name, (_token, due) in self.timers.items():
            if name == "ping" and due <= now and every > 0:
                due += math.floor((now - due) / every + 1) * every
            out.append((name, due))
        return sorted(out, key=lambda nd: nd[1])

    def _take_token(self, now: float) -> bool:
        lim = self.limits
        if self._tokens < 0:
            self._tokens, self._last_refill = float(lim.burst), now
        else:
            self._tokens = min(
                float(lim.burst), self._tokens + (now - self._last_refill) * lim.rate
            )
            self._last_refill = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    # --- helpers --------------------------------------------------------------------

    def _arm(self, name: str, due: float, every: float | None = None, direct: bool = False) -> Arm:
        self._token += 1
        self.timers[name] = (self._token, due)
        return Arm(name, due, self._token, every, direct)

    def _disarm(self, name: str) -> list[Effect]:
        if self.timers.pop(name, None) is None:
            return []
        return [Disarm(name)]

    def _disconnect(self, reason: str, now: float, detail: str | None = None) -> list[Effect]:
        """Decide to disconnect: `bye` (except on a client's own bye), then close."""
        self.state = T
        self.close_reason = reason
        code = CLOSE_CODES[reason]
        effects: list[Effect] = []
        for name in list(self.timers):
            effects += self._disarm(name)
        if reason != "bye":
            effects.append(Send(codec.bye(reason, detail)))
        effects.append(Close(code, reason))
        return effects

    # --- transitions: Undefined -----------------------------------------------------

    def _opened(self, ev: Opened, now: float) -> list[Effect]:
        now = ev.at if ev.at is not None else now
        self.opened_at = now
        t = self.timeouts
        return [
            self._arm("hello", now + t.hello),
            self._arm("profile", now + t.profile),
            self._arm("session", now + t.session),
        ]

    def _hello(self, ev: Hello, now: float) -> list[Effect]:
        self.state = C
        self.client = ev.client
        self.last_pong = now  # the pong rule counts from welcome
        t = self.timeouts
        return [
            *self._disarm("hello"),
            Send(codec.welcome(self.session_id, t.as_dict())),
            self._arm("ping", now + t.ping, every=t.ping, direct=True),
            self._arm("pong", now + t.pong),
        ]

    # --- transitions: Connected / InChat --------------------------------------------

    def _profile(self, ev: Profile, now: float) -> list[Effect]:
        if ev.nick == self.nick and self.state is I:
            self.info = ev.info
            return [Send(codec.profile_ok(ev.nick))]
        verified = False
        if self.verifier is not None and ev.token is not None:
            try:
                proven = self.verifier.nick(ev.token, self.wall())
            except IdentityError as exc:
                return [Send(codec.error("unauthorized", str(exc)))]
            if fold(proven) != fold(ev.nick):
                return [
                    Send(codec.error("unauthorized", f"the token is for the nick {proven[:32]!r}"))
                ]
            verified = True
        self._nick_pending = ev.nick
        self.info = ev.info
        return [ClaimNickFx(ev.nick, verified, ev.resume)]

    def _nick_result(self, ev: NickResult, now: float) -> list[Effect]:
        if ev.nick != self._nick_pending:
            # An answer to an older request that a newer profile superseded; the
            # directory handled them in order, so the newer answer is still coming.
            if ev.ok:
                self.nick = ev.nick
            return []
        self._nick_pending = None
        if not ev.ok:
            code = ev.code or "nick_taken"
            if code == "unavailable":
                return [
                    Send(
                        codec.error(
                            code,
                            ev.message or f"{ev.nick!r} cannot be checked across the cluster now",
                        )
                    )
                ]
            return [Send(codec.error(code, ev.message or f"{ev.nick!r} is taken"))]
        self.nick = ev.nick
        self.state = I
        return [*self._disarm("profile"), Send(codec.profile_ok(ev.nick, ev.resume))]

    def _join(self, ev: Join, now: float) -> list[Effect]:
        return [JoinRoomFx(ev.room, ev.since, ev.epoch)]

    def _joined(self, ev: JoinedRoom, now: float) -> list[Effect]:
        self.rooms[ev.room] = ev.ref
        return [SendRaw(ev.payload)] if ev.payload is not None else []

    def _room_moved(self, ev: RoomMoved, now: float) -> list[Effect]:
        if ev.room in self.rooms:
            self.rooms[ev.room] = ev.ref
        return []

    def _leave(self, ev: Leave, now: float) -> list[Effect]:
        if self.rooms.pop(ev.room, None) is None:
            return [Send(codec.error("not_in_room", f"you are not in {ev.room!r}"))]
        return [LeaveRoomFx(ev.room), Send(codec.left(ev.room))]

    def _say(self, ev: Say, now: float) -> list[Effect]:
        handle = self.rooms.get(ev.room)
        if handle is None:
            return [
                Send(codec.error("not_in_room", f"join {ev.room!r} before saying anything there"))
            ]
        return [SayFx(handle, ev.text, ev.id)]

    def _history(self, ev: History, now: float) -> list[Effect]:
        handle = self.rooms.get(ev.room)
        if handle is None:
            return [
                Send(codec.error("not_in_room", f"join {ev.room!r} before asking for its history"))
            ]
        return [PageFx(handle, ev.before, ev.since, ev.limit)]

    def _ignore_nick(self, ev: Ignore, now: float) -> list[Effect]:
        key = fold(ev.nick)
        if key not in self.ignores and len(self.ignores) >= self.budgets.max_ignores:
            return [
                Send(
                    codec.error(
                        "too_many_ignores",
                        f"at most {self.budgets.max_ignores} nicks can be ignored",
                    )
                )
            ]
        self.ignores.add(key)
        return [Send(codec.ignoring(sorted(self.ignores))), IgnoresFx(frozenset(self.ignores))]

    def _unignore_nick(self, ev: Unignore, now: float) -> list[Effect]:
        self.ignores.discard(fold(ev.nick))
        return [Send(codec.ignoring(sorted(self.ignores))), IgnoresFx(frozenset(self.ignores))]

    def _acked(self, ev: Acked, now: float) -> list[Effect]:
        return [Send(codec.ack(ev.client_id, ev.seq))]

    def _dm(self, ev: Dm, now: float) -> list[Effect]:
        return [DmFx(ev.to, ev.text, ev.id)]

    def _dm_result(self, ev: DmResult, now: float) -> list[Effect]:
        if ev.ok:
            return [Send(codec.ack(ev.client_id, None))]
        if ev.code == "rate_limited":
            return [
                Send(
                    codec.error(
                        "rate_limited", "that user receives too many dms right now: try later"
                    )
                )
            ]
        return [Send(codec.error("no_such_user", "no user with that nick is online"))]

    def _deliver(self, ev: Deliver, now: float) -> list[Effect]:
        if ev.sender is not None and self.ignores and fold(ev.sender) in self.ignores:
            return []  # ignored: dropped silently, the sender was acked (docs/protocol.md)
        return [SendRaw(ev.payload)]

    def _pong(self, ev: object, now: float) -> list[Effect]:
        # No scheduler message per pong: the pong timer checks last_pong when it fires.
        # Usually reached without the mailbox: note_pong (a `pong` message) and
        # handle(PongFrame()) run where the transport reads the frame.
        self.last_pong = now
        return []

    def _ping(self, ev: Ping, now: float) -> list[Effect]:
        return [Send(codec.pong(self.wall()))]

    def _ignore(self, ev: object, now: float) -> list[Effect]:
        return []

    # --- timers, kicks, the socket --------------------------------------------------

    def _timer(self, ev: TimerFired, now: float) -> list[Effect]:
        armed = self.timers.get(ev.name)
        if armed is None or armed[0] != ev.token:
            return []  # stale: re-armed or cancelled after the scheduler posted it
        del self.timers[ev.name]
        t = self.timeouts
        # No "ping" here: it is armed `direct`, the scheduler writes it (issue 11 item 3).
        if ev.name == "hello" and self.state is U:
            return self._disconnect("hello_timeout", now)
        if ev.name == "profile" and self.state in (U, C):
            return self._disconnect("profile_timeout", now)
        if ev.name == "session":
            return self._disconnect("session_expired", now)
        if ev.name == "pong":
            if now - self.last_pong >= t.pong:
                return self._disconnect("pong_timeout", now)
            return [self._arm("pong", self.last_pong + t.pong)]
        return []

    def _kick(self, ev: Kick, now: float) -> list[Effect]:
        return self._disconnect("kicked", now, ev.reason or None)

    def _shutdown(self, ev: Shutdown, now: float) -> list[Effect]:
        return self._disconnect("shutdown", now)

    def _overflow(self, ev: Overflow, now: float) -> list[Effect]:
        return self._disconnect("slow_consumer", now)

    def _flood(self, ev: object, now: float) -> list[Effect]:
        return self._disconnect("rate_limited", now)

    def _policy(self, ev: object, now: float) -> list[Effect]:
        return self._disconnect("policy", now)

    def _bye(self, ev: Bye, now: float) -> list[Effect]:
        return self._disconnect("bye", now)

    def _lost(self, ev: ConnectionLost, now: float) -> list[Effect]:
        if self.close_reason is None:
            # Nobody decided to disconnect: the transport tells why the socket ended.
            self.close_reason = TRANSPORT_REASONS.get(ev.code, "client_closed")
        self.state = D
        names = tuple(self.timers)
        self.timers.clear()
        return [Finish(names)]


_Row = tuple[Callable[[Session, Any, float], list[Effect]], tuple[UserState, ...]]
TRANSITIONS: dict[tuple[UserState, str], _Row] = {}


def _rows(
    states: tuple[UserState, ...],
    event: str,
    method: Callable[..., list[Effect]],
    *targets: UserState,
) -> None:
    for state in states:
        TRANSITIONS[(state, event)] = (method, targets)


S = Session
# Client messages (docs/protocol.md "Client → server", column "allowed in").
_rows((U,), "hello", S._hello, C)
_rows((C, I), "profile", S._profile)
_rows((I,), "join", S._join)
_rows((I,), "leave", S._leave)
_rows((I,), "say", S._say)
_rows((I,), "dm", S._dm)
_rows((I,), "history", S._history)
_rows((C, I), "ignore", S._ignore_nick)
_rows((C, I), "unignore", S._unignore_nick)
_rows((C, I), "pong", S._pong)
_rows((C, I), "ping", S._ping)
_rows(LIVE, "bye", S._bye, T)
_rows((U,), "not_hello", S._policy, T)  # any other frame (or bad JSON) before hello
_rows((C, I), "flood", S._flood, T)  # still over the rate after `burst` rate_limited errors
# The socket and the server.
_rows((U,), "Opened", S._opened)
_rows((C, I), "PongFrame", S._pong)
_rows((U, T), "PongFrame", S._ignore)
_rows(LIVE, "TimerFired", S._timer, T)
_rows((T,), "TimerFired", S._ignore)
_rows(LIVE, "Kick", S._kick, T)
_rows(LIVE, "Shutdown", S._shutdown, T)
_rows(LIVE, "Overflow", S._overflow, T)
_rows((T,), "Kick", S._ignore)
_rows((T,), "Shutdown", S._ignore)
_rows((T,), "Overflow", S._ignore)
_rows((*LIVE, T), "ConnectionLost", S._lost, D)
# Answers from the directory and rooms.
_rows((C, I), "NickResult", S._nick_result, I)
_rows((T,), "NickResult", S._ignore)
_rows((I,), "JoinedRoom", S._joined)
_rows((I,), "RoomMoved", S._room_moved)
_rows((T,), "RoomMoved", S._ignore)
_rows((I,), "Acked", S._acked)
_rows((I,), "DmResult", S._dm_result)
_rows((I,), "Deliver", S._deliver)
_rows((T,), "JoinedRoom", S._ignore)
_rows((T,), "Acked", S._ignore)
_rows((T,), "DmResult", S._ignore)
_rows((T,), "Deliver", S._ignore)
del S


def mermaid() -> str:
    """The state diagram, drawn from TRANSITIONS (used by docs/architecture.md)."""
    edges: dict[tuple[str, str], list[str]] = {}
    for (state, event), (_, targets) in TRANSITIONS.items():
        for target in targets:
            if target is not state:
                edges.setdefault((state.value, target.value), []).append(event)
    lines = ["stateDiagram-v2", "    [*] --> Undefined: Opened"]
    for (a, b), events in sorted(edges.items()):
        lines.append(f"    {a} --> {b}: {' / '.join(sorted(set(events)))}")
    lines.append("    Disconnected --> [*]")
    return "\n".join(lines)


if __name__ == "__main__":
    print(mermaid())
