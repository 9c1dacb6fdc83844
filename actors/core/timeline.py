"""Why is this user in this state, and what happened to it: small bounded records, no I/O.

Three pure structures the inspector (hubbub/inspect.py) reads:

* :class:`Timeline`: one per user, the last ``size`` notable events and the state
  transitions they caused (``hello`` at t, ``TimerFired(pong)`` → ToBeDisconnected,
  ``close 4002``).  The UserActor records into it where it applies a session's
  effects; it costs one tuple append per notable event, and chat traffic (say, dm,
  deliveries, acks) that changes no state is not recorded at all.
* :class:`Timelines`: the node's shared part: users per state (kept incrementally by
  the timelines' transitions, so /metrics and /debug never count users by walking
  them), a ring of recently gone users' timelines bounded by count *and* age (so "why
  was alice dropped at 14:02?" has an answer for a while), and disconnects per reason
  over the last minute.
* :class:`WindowCounts`: per-second buckets of counts over a sliding window.

Times are the monotonic clock the caller passes in; nothing here reads a clock.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from sys import intern
from typing import Any

from .messages import ClientFrame, ConnectionLost, Kick, NickResult, TimerFired
from .session import Arm, ClaimNickFx, Close, JoinRoomFx, LeaveRoomFx, Send, UserState

__all__ = ["Timeline", "Timelines", "WindowCounts", "GoneUser", "Entry", "entry_dict"]

UNDEFINED = UserState.UNDEFINED.value

# Server frames worth a line in the timeline; the rest (message, ack, presence) is chat.
_SENT = {"welcome", "profile_ok", "ping", "bye", "error", "left"}


def _label(event: Any, effects: list[Any]) -> str | None:
    """A short name for what happened, or None when it is chat traffic not worth a line.

    Client frames are named by what the session made of them (their effects), so the
    frame is never decoded twice."""
    kind = type(event)
    if kind is ClientFrame:
        for fx in effects:
            k = type(fx)
            if k is ClaimNickFx:
                return f"profile {fx.nick}"
            if k is JoinRoomFx:
                return f"join {fx.room}"
            if k is LeaveRoomFx:
                return f"leave {fx.room}"
            if k is Send:
                t = fx.frame.get("type")
                if t == "welcome":
                    return "hello"
                if t == "error":
                    return f"frame → error {fx.frame.get('code')}"
                if t == "bye":
                    return f"frame → bye {fx.frame.get('reason')}"
            if k is Close:
                return "bye" if fx.code == 1000 else "frame"
        return None  # say, dm, ping/pong as JSON, ...: chat, not life events
    if kind is TimerFired:
        return f"TimerFired({event.name})"
    if kind is Kick:
        return f"Kick({event.reason!r})" if event.reason else "Kick"
    if kind is ConnectionLost:
        return f"ConnectionLost({event.code})"
    if kind is NickResult:
        return f"NickResult({event.nick}, {'ok' if event.ok else 'taken'})"
    name = kind.__name__
    if name in ("Acked", "Deliver", "DmResult", "JoinedRoom", "RoomMoved", "PongFrame"):
        return None
    return name  # Opened, Shutdown, Overflow, ... and whatever a newer session adds


def _outcome(effects: list[Any]) -> str:
    """What the event made the server do, in a few words (sends, timers, the close)."""
    out: list[str] = []
    for fx in effects:
        k = type(fx)
        if k is Send:
            t = fx.frame.get("type")
            if t in _SENT:
                detail = fx.frame.get("code") or fx.frame.get("reason")
                out.append(f"sent {t}" + (f" {detail}" if detail else ""))
        elif k is Arm:
            out.append(f"arm {fx.name}")
        elif k is Close:
            out.append(f"close {fx.code}")
    return ", ".join(out)


Entry = tuple[float, str, str, str, str, int]
"""(at, event, state before, state after, outcome, how many times in a row)."""


class Timeline:
    """One user's last ``size`` notable events: (at, event, state before, state after, outcome, count).

    Routine repeats (a ping sent every 30 s, the pong rule re-armed) do not push the
    story out of the ring: an event equal to one of the last two entries replaces it,
    moved to the end with its count raised and its time updated.  So a user idle for
    hours still shows how it logged in, and memory stays ~1 KB per user (strings are
    interned: most labels are the same few words)."""

    __slots__ = ("entries", "state", "_closed", "_owner", "_size")

    def __init__(self, owner: Timelines | None = None, size: int = 16) -> None:
        # A list, not a deque(maxlen=...): a deque allocates a 64-slot block (~530 bytes)
        # up front, per user; dropping the oldest of at most 16 entries costs nothing.
        self.entries: list[Entry] = []
        self._size = size
        self.state = UNDEFINED
        """The state after the last recorded event (the tally moves with it)."""
        self._owner = owner
        self._closed = False
        if owner is not None:
            owner.by_state[UNDEFINED] += 1

    def record(self, now: float, event: Any, state: UserState, effects: list[Any]) -> None:
        """The session handled ``event`` at ``now`` and is now in ``state``; ``effects`` came back."""
        after = state.value
        before = self.state
        label = _label(event, effects)
        if before != after:
            self.state = after
            if self._owner is not None:
                tally = self._owner.by_state
                tally[before] -= 1
                tally[after] += 1
            if label is None:
                label = type(event).__name__
        elif label is None:
            return  # chat traffic: it changes nothing worth a line
        self._add(now, intern(label), before, after, intern(_outcome(effects)))

    def _add(self, now: float, label: str, before: str, after: str, outcome: str) -> None:
        entries = self.entries
        for back in (1, 2):
            if len(entries) >= back:
                e = entries[-back]
                if e[1] is label and e[2] is before and e[3] is after and e[4] is outcome:
                    repeated = (now, label, before, after, outcome, e[5] + 1)
                    if back == 1:
                        entries[-1] = repeated
                    else:
                        entries[-2] = entries[-1]
                        entries[-1] = repeated
                    return
        if len(entries) >= self._size:
            del entries[0]
        entries.append((now, label, before, after, outcome, 1))

    def close(
        self,
        now: float,
        session_id: str,
        nick: str | None,
        reason: str,
        opened_at: float,
        info: dict[str, Any] | None = None,
    ) -> None:
        """The user is gone: leave the tally, file the timeline with the recently gone.
        Once only: closing again (a failure reported after the goodbye) changes nothing."""
        if self._closed:
            return
        self._closed = True
        if len(self.entries) >= self._size:
            del self.entries[0]
        self.entries.append((now, f"gone: {reason}", self.state, "Disconnected", "", 1))
        if self._owner is not None:
            self._owner.by_state[self.state] -= 1
            self._owner.gone(
                GoneUser(session_id, nick, reason, opened_at, now, tuple(self.entries), info or {})
            )
            self._owner = None
        self.state = "Disconnected"


def entry_dict(entry: Entry, to_wall: float) -> dict[str, Any]:
    """One timeline entry as JSON; ``to_wall`` turns monotonic times into Unix seconds.
    ``count`` > 1: the same event this many times in a row, ``at`` the last one."""
    at, event, before, after, outcome, count = entry
    return {
        "at": round(at + to_wall, 3),
        "event": event,
        "from": before,
        "to": after,
        "outcome": outcome,
        "count": count,
    }


class GoneUser:
    """What is left of a disconnected user: enough to answer "why was it dropped?"."""

    __slots__ = ("session_id", "nick", "reason", "opened_at", "closed_at", "entries", "info")

    def __init__(
        self,
        session_id: str,
        nick: str | None,
        reason: str,
        opened_at: float,
        closed_at: float,
        entries: tuple[Any, ...],
        info: dict[str, Any],
    ) -> None:
        self.session_id = session_id
        self.nick = nick
        self.reason = reason
        self.opened_at = opened_at
        self.closed_at = closed_at
        self.entries = entries
        self.info = info
        """Last known remote address, rooms, counters: what the drill-down showed."""


class WindowCounts:
    """Counts per key over the last ``seconds`` (one bucket per whole second)."""

    def __init__(self, seconds: int = 60) -> None:
        self.seconds = seconds
        self._buckets: deque[tuple[int, Counter[str]]] = deque()

    def add(self, now: float, key: str) -> None:
        second = int(now)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append((second, Counter()))
            self._expire(now)
        self._buckets[-1][1][key] += 1

    def _expire(self, now: float) -> None:
        oldest = int(now) - self.seconds
        while self._buckets and self._buckets[0][0] <= oldest:
            self._buckets.popleft()

    def totals(self, now: float) -> dict[str, int]:
        self._expire(now)
        out: Counter[str] = Counter()
        for _second, counts in self._buckets:
            out.update(counts)
        return dict(out)


class Timelines:
    """The node's side: users per state, the recently gone, disconnects in the last minute."""

    def __init__(self, keep: int = 1000, keep_seconds: float = 3600.0, size: int = 16) -> None:
        self.keep = keep
        self.keep_seconds = keep_seconds
        self.size = size
        self.by_state: Counter[str] = Counter()
        """Live users per state, moved by the timelines' own transitions."""
        self.recent: OrderedDict[str, GoneUser] = OrderedDict()
        """session id → gone user, oldest first."""
        self._by_nick: dict[str, str] = {}
        """nick → the session id that last left with it."""
        self.disconnects = WindowCounts(60)

    def open(self) -> Timeline:
        return Timeline(self, self.size)

    def live(self) -> int:
        """Users with an open timeline: every connection not yet gone."""
        return sum(max(0, n) for n in self.by_state.values())

    def gone(self, user: GoneUser) -> None:
        self.recent[user.session_id] = user
        if user.nick is not None:
            self._by_nick[user.nick] = user.session_id
        self.disconnects.add(user.closed_at, user.reason)
        self.expire(user.closed_at)

    def expire(self, now: float) -> None:
        """Drop the oldest beyond ``keep`` and every one gone longer than ``keep_seconds``."""
        recent = self.recent
        while recent:
            sid, first = next(iter(recent.items()))
            if len(recent) <= self.keep and now - first.closed_at <= self.keep_seconds:
                break
            recent.popitem(last=False)
            if first.nick is not None and self._by_nick.get(first.nick) == sid:
                del self._by_nick[first.nick]

    def find(self, key: str) -> GoneUser | None:
        """A recently gone user by session id, or the last one that had this nick."""
        user = self.recent.get(key)
        if user is None and key in self._by_nick:
            user = self.recent.get(self._by_nick[key])
        return user

    def search(
        self, now: float, nick: str = "", reason: str = "", limit: int = 50
    ) -> list[GoneUser]:
        """The newest gone users first, filtered by nick substring and reason; at most ``limit``
        (a scan of at most ``keep`` entries)."""
        self.expire(now)
        nick = nick.casefold()
        out: list[GoneUser] = []
        for user in reversed(self.recent.values()):
            if (
                nick
                and nick not in (user.nick or "").casefold()
                and not user.session_id.startswith(nick)
            ):
                continue
            if reason and user.reason != reason:
                continue
            out.append(user)
            if len(out) >= limit:
                break
        return out
