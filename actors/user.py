"""UserActor: one per connection, a thin shell around :class:`Session`.

Its mailbox receives client frames (from the connection's reader greenlet),
timer firings (from the scheduler), deliveries (from rooms and the directory)
and kicks.  Each message goes through ``Session.handle(event, now)``; the
effects that come back are carried out here — the only place a user's socket is
written and the only place the scheduler and directory are told about a user.
"""

from __future__ import annotations

import logging
from typing import Any

import gevent

from .core import codec
from .base import HubbubActor, tell
from .clock import Clock
from .core.counters import Counters
from .core.messages import (
    Cancel, ClientFrame, CancelOwner, ClaimNick, JoinRoom, LeaveRoom, RoomIgnores, RoomPage, RoomSay, Schedule,
    SendDm, UserGone, UserConnected, UserDisconnected, UserProfiled,
)
from .plugin import publish, user_watchers
from .core.session import (
    Arm, ClaimNickFx, Close, Disarm, DmFx, Finish, IgnoresFx, JoinRoomFx, LeaveRoomFx, Limits, Opened, PageFx,
    SayFx, Send, SendRaw, Session, Timeouts,
)

__all__ = ["UserActor"]

log = logging.getLogger("hubbub.users")


class UserActor(HubbubActor):
    def __init__(self, session_id: str, conn: Any, timeouts: Timeouts, clock: Clock,
                 scheduler: Any, directory: Any, parent: HubbubActor | None = None,
                 events: Any = None, limits: Limits | None = None,
                 counters: Counters | None = None, budgets: Any = None, verifier: Any = None) -> None:
        super().__init__(session_id, parent)
        self.conn = conn
        self.clock = clock
        self.scheduler = scheduler
        self.directory = directory
        self.events = events
        """Optional observer with connected(user) / disconnected(user) (metrics, logs)."""
        self.opened_at = clock.monotonic()  # now, in the greenlet that accepted the socket
        self.counters = counters or Counters()
        self.session = Session(session_id, timeouts, clock.wall, limits=limits or Limits(), verifier=verifier)
        if budgets is not None:
            self.session.budgets = budgets
        self.handled = 0
        self.watchers = user_watchers(self)
        """Plugins told about this user's life (a live list, usually empty; actors/plugin.py)."""

    # --- the debug tree -------------------------------------------------------------

    def describe_fields(self) -> dict[str, Any]:
        now = self.clock.monotonic()
        s = self.session
        return {
            "state": s.state.value,
            "nick": s.nick,
            "rooms": sorted(s.rooms),
            "timers": [{"name": name, "due_in": round(due - now, 3)}
                       for name, (_token, due) in sorted(s.timers.items(), key=lambda kv: kv[1][1])],
            "remote": getattr(self.conn, "remote_addr", None),
            "backlog": getattr(self.conn, "backlog", 0),
        }

    # --- the loop -------------------------------------------------------------------

    def on_start(self) -> None:
        self.counters.connections += 1
        if self.events is not None:
            self.events.connected(self)
        if self.watchers:
            publish(self.watchers, UserConnected(self.session.session_id))
        self._apply(self.session.handle(Opened(self.opened_at), self.clock.monotonic()))

    def on_receive(self, message: Any) -> Any:
        if type(message) is ClientFrame:
            self.counters.frames_in += 1
        effects = self.session.handle(message, self.clock.monotonic())
        self._apply(effects)
        self.handled += 1
        # Fairness: a greenlet whose mailbox is never empty never yields, and a
        # busy user would starve every other greenlet (STYLE.md, measured).
        if self.handled % 16 == 0:
            gevent.sleep(0)
        return None

    def _apply(self, effects: list[Any]) -> None:
        s, counters = self.session, self.counters
        for fx in effects:
            kind = type(fx)
            if kind is SendRaw:
                counters.frames_out += 1
                self.conn.send_text(fx.payload)
            elif kind is Send:
                counters.frames_out += 1
                if fx.frame["type"] == "error":
                    counters.errors[fx.frame["code"]] += 1
                elif self.watchers and fx.frame["type"] == "profile_ok":
                    publish(self.watchers, UserProfiled(s.session_id, fx.frame["nick"]))
                self.conn.send_text(codec.encode(fx.frame))
            elif kind is Arm:
                tell(self.scheduler, Schedule(s.session_id, self.actor_ref, fx.name, fx.due, fx.token, fx.every))
            elif kind is Disarm:
                tell(self.scheduler, Cancel(s.session_id, fx.name))
            elif kind is SayFx:
                if not tell(fx.handle, RoomSay(s.session_id, self.actor_ref, s.nick or "", fx.text,
                                               fx.client_id, self.clock.wall())):
                    self.conn.send_text(codec.encode(codec.error("not_in_room", "that room is gone")))
            elif kind is ClaimNickFx:
                tell(self.directory, ClaimNick(s.session_id, self.actor_ref, fx.nick, fx.verified, fx.resume))
            elif kind is JoinRoomFx:
                tell(self.directory, JoinRoom(s.session_id, self.actor_ref, s.nick or "", fx.room, fx.since,
                                              self.conn, frozenset(s.ignores)))
            elif kind is LeaveRoomFx:
                tell(self.directory, LeaveRoom(s.session_id, fx.room))
            elif kind is DmFx:
                tell(self.directory, SendDm(s.session_id, self.actor_ref, s.nick or "", fx.to, fx.text,
                                            fx.client_id, self.clock.wall()))
            elif kind is PageFx:
                tell(fx.handle, RoomPage(s.session_id, self.actor_ref, fx.before, fx.since, fx.limit))
            elif kind is IgnoresFx:
                for handle in s.rooms.values():
                    tell(handle, RoomIgnores(s.session_id, fx.ignores))
            elif kind is Close:
                self.conn.close(fx.code, fx.reason)
            elif kind is Finish:
                self._finish(fx.timers)
            else:  # pragma: no cover - the effect list is closed
                raise TypeError(f"unknown effect {fx!r}")

    def _finish(self, timers: tuple[str, ...]) -> None:
        sid = self.session.session_id
        if timers:
            tell(self.scheduler, CancelOwner(sid, timers))
        tell(self.directory, UserGone(sid, hold=self.session.holds_nick()))
        self.actor_ref.stop(block=False)

    def _gone(self) -> None:
        self.counters.disconnects[self.session.close_reason or "client_closed"] += 1
        if self.watchers:
            s = self.session
            publish(self.watchers, UserDisconnected(s.session_id, s.nick, s.close_reason or "client_closed"))
        if self.events is not None:
            self.events.disconnected(self)

    def on_stop(self) -> None:
        self._gone()
        super().on_stop()

    def on_failure(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # Contained: only this connection closes (1011); the parent cleans up the
        # directory and the scheduler for us (see NodeActor.on_child_failed).
        self.session.close_reason = "internal_error"
        try:
            self.conn.send_text(codec.encode(codec.bye("internal_error")))
            self.conn.close(1011, "internal_error")
        except Exception:  # noqa: BLE001 - the socket may be gone already
            pass
        self._gone()
        super().on_failure(exc_type, exc, tb)
