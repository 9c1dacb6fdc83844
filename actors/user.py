"""UserActor: one per connection, a thin shell around :class:`Session`.

Its mailbox receives client frames (from the connection's callbacks, below),
timer firings (from the scheduler), deliveries (from rooms and the directory)
and kicks.  Each message goes through ``Session.handle(event, now)``; the
effects that come back are carried out here — the only place the scheduler and
directory are told about a user.  Rooms write fan-out and the scheduler writes
pings to the socket directly (they need no decision).

The connection calls :meth:`on_message`, :meth:`on_pong`, :meth:`on_overflow` and
:meth:`on_close` from its read path (ActorSystem.spawn_user wires them).  They run
outside the actor, must not block or raise, and only ``tell`` the actor, except
pongs: they need no decision when the session is live, so they are noted in the
session right there (``Session.note_pong``), without a trip through the mailbox.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, ClassVar

from .base import HubbubActor, publish, tell
from .clock import Clock
from .core import codec
from .core.budgets import Budgets
from .core.counters import Counters
from .core.messages import (
    Cancel,
    CancelOwner,
    ClaimNick,
    ClientFrame,
    ConnectionLost,
    JoinRoom,
    LeaveRoom,
    Overflow,
    PongFrame,
    RoomIgnores,
    RoomPage,
    RoomSay,
    Schedule,
    SendDm,
    TimerBatch,
    UserConnected,
    UserDisconnected,
    UserGone,
    UserProfiled,
)
from .core.observe import Observers
from .core.outbox import Outbox
from .core.session import (
    Arm,
    ClaimNickFx,
    Close,
    Disarm,
    DmFx,
    Finish,
    IgnoresFx,
    JoinRoomFx,
    LeaveRoomFx,
    Limits,
    Opened,
    PageFx,
    SayFx,
    Send,
    SendRaw,
    Session,
    Timeouts,
)

__all__ = ["UserActor"]

log = logging.getLogger("hubbub.users")

# A cheap first look for a `pong` message in the read path; whatever it lets through
# is decoded for real, whatever it misses (escaped keys, ...) takes the mailbox.
_MAYBE_PONG = re.compile(r'"type"\s*:\s*"pong"')
# What clients actually send (the web client, json.dumps, the bench): known to be a bare
# `pong` without parsing.  JSON decoding was ~10% of an idle server's CPU (py-spy).
_BARE_PONGS = frozenset(('{"type":"pong"}', '{"type": "pong"}'))


def _nothing(*_args: Any) -> None:
    """A connection callback after the user is gone."""


class UserActor(HubbubActor):
    def __init__(
        self,
        session_id: str,
        conn: Any,
        timeouts: Timeouts,
        clock: Clock,
        scheduler: Any,
        directory: Any,
        parent: HubbubActor | None = None,
        events: Any = None,
        limits: Limits | None = None,
        counters: Counters | None = None,
        observers: Observers | None = None,
        budgets: Any = None,
        verifier: Any = None,
    ) -> None:
        super().__init__(session_id, parent)
        self.conn = conn
        self.outbox = Outbox(conn)
        """What rooms get of the connection: send_text and backlog, nothing else."""
        self.clock = clock
        self.scheduler = scheduler
        self.directory = directory
        self.events = events
        """Optional observer with connected(user) / disconnected(user) (metrics, logs)."""
        # The rules count from the 101 (Opened.at), not from whenever this object is made:
        # in between there can be a collection of the garbage collector's middle
        # generation (~30 ms at 3,000 fresh users) or a queue of accepts. The transport's
        # Connection knows when it said yes (on its own clock: elapsed time converts).
        now = clock.monotonic()
        upgraded = getattr(conn, "upgraded_at", None)
        self.opened_at = now if upgraded is None else now - max(0.0, time.monotonic() - upgraded)
        self.counters = counters or Counters()
        self.session = Session(
            session_id,
            timeouts,
            clock.wall,
            limits=limits or Limits(),
            budgets=budgets or Budgets(),
            verifier=verifier,
        )
        self.handled = 0
        """Messages this actor has handled (/debug/actors/<id>)."""
        self.timeline = self.counters.timelines.open()
        """The last notable events and the transitions they caused (/debug/actors/<id>)."""
        self.watchers = (observers or Observers()).users
        """Subscribers told about this user's life (a live list, usually empty; actors/core/observe.py)."""

    # --- the debug tree -------------------------------------------------------------

    def describe_fields(self) -> dict[str, Any]:
        now = self.clock.monotonic()
        s = self.session
        return {
            "state": s.state.value,
            "nick": s.nick,
            "rooms": sorted(s.rooms),
            "timers": [
                {"name": name, "due_in": round(due - now, 3)} for name, due in s.timer_dues(now)
            ],
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
        now, opened = self.clock.monotonic(), Opened(self.opened_at)
        effects = self.session.handle(opened, now)
        self.timeline.record(now, opened, self.session.state, effects)
        self._apply(effects)

    def on_receive(self, message: Any) -> Any:
        if type(message) is ClientFrame:
            self.counters.frames_in += 1
        now = self.clock.monotonic()
        effects = self.session.handle(message, now)
        self.handled += 1
        self.timeline.record(now, message, self.session.state, effects)
        self._apply(effects)
        # Fairness is the runtime's: a drain handles a bounded batch (actors/base.py).
        return None

    # --- the connection's callbacks (outside the actor: never block, never raise) ----

    #: Frames and timers are handled at once when the actor is idle (``run_now``, from
    #: the read path and the scheduler): nothing here blocks.
    never_blocks: ClassVar[bool] = True

    def on_message(self, data: str | bytes) -> None:
        """One complete data message from the socket."""
        if (
            type(data) is str
            and self.actor_inbox.empty()
            and (data in _BARE_PONGS or _MAYBE_PONG.search(data) is not None)
            and self._pong_message(data)
        ):
            return
        message = ClientFrame(data)
        if self.run_now(message):
            return
        tell(self.actor_ref, message)

    def _pong_message(self, data: str) -> bool:
        # Only with an empty mailbox: every earlier frame has been handled, so noting
        # it here is what handling it in order would do.
        try:
            if data not in _BARE_PONGS and type(codec.decode(data)) is not codec.Pong:
                return False
            if not self.session.note_pong(self.clock.monotonic()):
                return False  # a decision to make (rate, state): the mailbox's job
        except Exception:  # noqa: BLE001 - never raise into the transport; the actor decides
            return False
        self.counters.frames_in += 1
        return True

    def on_pong(self) -> None:
        """A WebSocket pong control frame: the table says what it does (last_pong or nothing)."""
        try:
            effects = self.session.handle(PongFrame(), self.clock.monotonic())
        except Exception:  # noqa: BLE001 - never raise into the transport
            log.exception("pong frame for %s", self.actor_id)
            return
        assert not effects, effects  # PongFrame rows decide nothing (actors/core/session.py)

    def on_overflow(self) -> None:
        """The outbound backlog is over --max-backlog."""
        tell(self.actor_ref, Overflow())

    def on_close(self, code: int | None) -> None:
        """The connection is over (called once)."""
        tell(self.actor_ref, ConnectionLost(code))

    def attach(self, conn: Any) -> None:
        """Make this user the receiver of ``conn``'s callbacks (undone when it is gone)."""
        conn.on_message, conn.on_pong = self.on_message, self.on_pong
        conn.on_overflow, conn.on_close = self.on_overflow, self.on_close

    def _apply(self, effects: list[Any]) -> None:
        s, counters = self.session, self.counters
        timers: list[Schedule | Cancel] = []  # to the scheduler in one message, in order
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
                timers.append(
                    Schedule(
                        s.session_id,
                        self.actor_ref,
                        fx.name,
                        fx.due,
                        fx.token,
                        fx.every,
                        self.conn if fx.direct else None,
                    )
                )
            elif kind is Disarm:
                timers.append(Cancel(s.session_id, fx.name))
            elif kind is SayFx:
                if not tell(
                    fx.handle,
                    RoomSay(
                        s.session_id,
                        self.actor_ref,
                        s.nick or "",
                        fx.text,
                        fx.client_id,
                        self.clock.wall(),
                    ),
                ):
                    self.conn.send_text(
                        codec.encode(codec.error("not_in_room", "that room is gone"))
                    )
            elif kind is ClaimNickFx:
                tell(
                    self.directory,
                    ClaimNick(s.session_id, self.actor_ref, fx.nick, fx.verified, fx.resume),
                )
            elif kind is JoinRoomFx:
                tell(
                    self.directory,
                    JoinRoom(
                        s.session_id,
                        self.actor_ref,
                        s.nick or "",
                        fx.room,
                        fx.since,
                        self.outbox,
                        fx.epoch,
                        frozenset(s.ignores),
                    ),
                )
            elif kind is LeaveRoomFx:
                tell(self.directory, LeaveRoom(s.session_id, fx.room))
            elif kind is DmFx:
                tell(
                    self.directory,
                    SendDm(
                        s.session_id,
                        self.actor_ref,
                        s.nick or "",
                        fx.to,
                        fx.text,
                        fx.client_id,
                        self.clock.wall(),
                    ),
                )
            elif kind is PageFx:
                tell(
                    fx.handle, RoomPage(s.session_id, self.actor_ref, fx.before, fx.since, fx.limit)
                )
            elif kind is IgnoresFx:
                for handle in s.rooms.values():
                    tell(handle, RoomIgnores(s.session_id, fx.ignores))
            elif kind is Close:
                self.conn.close(fx.code, fx.reason)
            elif kind is Finish:
                self._flush_timers(timers)
                self._finish(fx.timers)
            else:  # pragma: no cover - the effect list is closed
                raise TypeError(f"unknown effect {fx!r}")
        self._flush_timers(timers)

    def _flush_timers(self, timers: list[Schedule | Cancel]) -> None:
        if len(timers) == 1:
            tell(self.scheduler, timers[0])
        elif timers:
            tell(self.scheduler, TimerBatch(tuple(timers)))
        timers.clear()

    def _finish(self, timers: tuple[str, ...]) -> None:
        sid = self.session.session_id
        if timers:
            tell(self.scheduler, CancelOwner(sid, timers))
        tell(self.directory, UserGone(sid, hold=self.session.holds_nick()))
        self.stop()  # pykka's Actor.stop: a tell, without the two futures of ref.stop()

    def _gone(self) -> None:
        # The connection may outlive us by a moment (close handshake): its callbacks
        # must not keep this actor (and through it the session) alive, nor reach it.
        conn = self.conn
        if getattr(conn, "on_message", None) == self.on_message:
            conn.on_message = conn.on_pong = conn.on_overflow = conn.on_close = _nothing
        s = self.session
        reason = s.close_reason or "client_closed"
        self.counters.disconnects[reason] += 1
        self.timeline.close(
            self.clock.monotonic(),
            s.session_id,
            s.nick,
            reason,
            s.opened_at,
            {
                "remote": getattr(self.conn, "remote_addr", None),
                "rooms": sorted(s.rooms),
                "handled": self.handled,
            },
        )
        if self.watchers:
            publish(self.watchers, UserDisconnected(s.session_id, s.nick, reason))
        if self.events is not None:
            self.events.disconnected(self)

    def on_stop(self) -> None:
        self._gone()
        super().on_stop()

    def last_words(self) -> Any:
        # The node frees the timers and the nick of a failed user from this (system.py).
        s = self.session
        # Out of /debug's users-per-state count even when it failed before it could say
        # goodbye itself (in on_start); after on_failure's goodbye, close is a no-op.
        self.timeline.close(
            self.clock.monotonic(), s.session_id, s.nick, "internal_error", s.opened_at
        )
        return UserGone(s.session_id, tuple(s.timers))

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
