"""PluginActor: the base class of new actor types.  Hooks are what it hears; actions what it does.

    class Echo(PluginActor):
        defaults = {"nick": "echo", "rooms": ["lobby"]}

        def on_room_message(self, room, nick, text, seq):
            self.say(room, f"{nick} said {text!r}")

Plugin authors import it as ``hubbub.plugin.PluginActor`` (docs/extending.md).  A plugin
is a child of the NodeActor with its own mailbox; rooms and users only ever ``tell`` it
(through the observer port, ``actors/core/observe.py``), so a slow plugin delays nobody
but itself.  What happens when one fails is ``hub.py``'s.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import gevent
import gevent.event

from ..base import HubbubActor, tell
from ..clock import Clock
from ..core.codec import valid_name
from ..core.messages import (
    Acked,
    Cancel,
    CancelOwner,
    ClaimNick,
    Deliver,
    DmResult,
    JoinedRoom,
    JoinRoom,
    Kick,
    KickNick,
    LeaveRoom,
    NickResult,
    RoomMessage,
    RoomMoved,
    RoomPresence,
    RoomSay,
    Schedule,
    SendDm,
    TimerFired,
    UserConnected,
    UserDisconnected,
    UserGone,
    UserProfiled,
)
from .registry import register
from .settings import PluginSettingsError, check_delay, merge_settings

if TYPE_CHECKING:
    from .hub import PluginHub

__all__ = ["Call", "PluginActor", "PluginReport", "NickTaken", "Start"]

log = logging.getLogger("hubbub.plugins")


class NickTaken(RuntimeError):
    """The nick of a plugin's settings is held by someone else."""


@dataclass(frozen=True, slots=True)
class Start:
    """The first message in a plugin's mailbox: subscribe, re-arm, claim the nick, join, on_started()."""

    timers: tuple[tuple[str, float], ...] = ()
    """Timers (name, monotonic due) the previous incarnation had armed: re-armed as they were."""
    startup: bool = False
    """Start-up waits for the nick: a taken one is an error for the waiter, not a failure."""


@dataclass(frozen=True, slots=True)
class Call:
    """Run ``fn(plugin)`` inside the plugin's own greenlet, in mailbox order (how a test acts
    as the plugin: ``hubbub.testing.act``); answers what ``fn`` returns to an ``ask``."""

    fn: Callable[[Any], Any]
    """Called with the plugin actor."""


@dataclass(frozen=True, slots=True)
class PluginReport:
    """What a failed plugin leaves the node (ChildFailed.report): enough to restart it."""

    spec: str
    """``module:Class``, as it was loaded."""
    timers: tuple[tuple[str, float], ...]
    """Armed timers (name, monotonic due): they survive the restart."""


@dataclass
class _Joined:
    ref: Any
    """The RoomActor's ref (updated on RoomMoved)."""
    members: set[str] = field(default_factory=set)
    """Nicks in the room, kept from the `joined` frame and presence."""


class PluginActor(HubbubActor):
    """Base class of new actor types.  Override the ``on_*`` hooks; call the actions.

    Hooks run one at a time in the actor's own greenlet, in mailbox order.  They must
    not block (use :meth:`set_timer`, never a sleep loop) and never ``ask`` another
    actor.  A hook that raises fails the actor and the node restarts it.
    """

    defaults: ClassVar[Mapping[str, Any]] = {}
    """Settings this type understands, with defaults; ``[plugins."module:Class"]`` overrides.
    The base class acts on two of them: ``nick`` (claimed at start) and ``rooms`` (joined)."""
    watch_all_rooms: ClassVar[bool] = False
    """Hear every room's messages and presence, member or not (a moderator does)."""
    max_restarts: ClassVar[int] = 3
    """Restarts allowed within ``restart_window``; one more failure and it stays stopped."""
    restart_window: ClassVar[float] = 60.0
    """Seconds over which failures are counted."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register(cls)

    def __init__(
        self, hub: PluginHub, spec: str, settings: Mapping[str, Any] | None = None
    ) -> None:
        # Settings first: a bad one must fail before this actor is linked into the tree.
        merged = merge_settings(type(self).defaults, settings or {})
        super().__init__(f"plugin:{spec}", hub.node)
        self.hub = hub
        self.spec = spec
        """How it was loaded (``module:Class``); also the key of its settings table."""
        self.settings: dict[str, Any] = merged
        self.clock: Clock = hub.clock
        self.nick: str | None = None
        """The nick the directory confirmed, or None."""
        self.restarts = hub.restarts.get(spec, 0)
        """How many times the node restarted this plugin before (its hub counts them)."""
        self.handled = 0
        self._wanted_nick: str | None = None
        self._pending_joins: list[str] = []
        self._rooms: dict[str, _Joined] = {}
        self._timers: dict[str, tuple[int, float]] = {}
        """Armed timers: name → (token, due); the token drops stale TimerFired."""
        self._token = 0
        self._ready: gevent.event.AsyncResult | None = None
        """Set when the settings nick is decided, for a start-up that waits for it."""
        self._startup = False

    # --- hooks (override) ---------------------------------------------------------------

    def on_started(self) -> None:
        """Once at start (and after each restart), when nick and rooms are requested."""

    def on_room_message(self, room: str, nick: str, text: str, seq: int) -> None:
        """A message was stored in a room this plugin is in (or any room, with watch_all_rooms)."""

    def on_presence(self, room: str, event: str, nick: str) -> None:
        """Someone else joined (``event == "join"``) or left (``"leave"``) such a room."""

    def on_joined(self, room: str, members: list[str]) -> None:
        """This plugin is now a member of ``room``; ``members`` includes its own nick."""

    def on_user_connected(self, session: str) -> None:
        """A connection opened (subscribed automatically when overridden)."""

    def on_profile(self, session: str, nick: str) -> None:
        """A user's `profile` was accepted: ``nick`` is theirs now."""

    def on_user_disconnected(self, session: str, nick: str | None, reason: str) -> None:
        """A connection ended; ``reason`` is the contract's disconnect reason or ``client_closed``."""

    def on_timer(self, name: str) -> None:
        """Timer ``name`` armed with :meth:`set_timer` is due."""

    def on_dm(self, sender: str, text: str) -> None:
        """A user sent this plugin's nick a direct message."""

    def on_kicked(self, reason: str) -> None:
        """Someone kicked this plugin's nick.  A plugin has no socket to close: default, log it."""
        log.warning("plugin %s ignores a kick (%s)", self.spec, reason or "no reason")

    # --- actions --------------------------------------------------------------------------

    def claim_nick(self, nick: str) -> None:
        """Ask the directory for ``nick``; :attr:`nick` is set when it is granted."""
        if not valid_name(nick):
            raise PluginSettingsError(
                f"{nick!r} is not a valid nick (1-32 letters, digits, _ or -)"
            )
        self._wanted_nick = nick
        tell(self.hub.directory, ClaimNick(self.actor_id, self.actor_ref, nick))

    def join(self, room: str) -> None:
        """Become a member of ``room`` (needs a nick; waits for the claim to be granted)."""
        if not valid_name(room):
            raise PluginSettingsError(f"{room!r} is not a valid room name")
        if self.nick is None:
            if self._wanted_nick is None:
                raise RuntimeError(f"plugin {self.spec}: claim a nick before joining {room!r}")
            self._pending_joins.append(room)
            return
        tell(self.hub.directory, JoinRoom(self.actor_id, self.actor_ref, self.nick, room, None))

    def leave(self, room: str) -> None:
        """Stop being a member of ``room`` (the others see presence `leave`)."""
        if room in self._pending_joins:
            self._pending_joins.remove(room)
        if self._rooms.pop(room, None) is not None:
            tell(self.hub.directory, LeaveRoom(self.actor_id, room))

    def say(self, room: str, text: str) -> bool:
        """Say ``text`` in a room this plugin is a member of; False if it is not (yet) one."""
        joined = self._rooms.get(room)
        if joined is None:
            log.warning("plugin %s: not in room %r, dropped a message", self.spec, room)
            return False
        return tell(
            joined.ref,
            RoomSay(self.actor_id, self.actor_ref, self.nick or "", text, None, self.clock.wall()),
        )

    def dm(self, nick: str, text: str) -> None:
        """Send ``nick`` a direct message from this plugin's nick (an unknown nick: dropped)."""
        sender = self.nick or type(self).__name__
        tell(
            self.hub.directory,
            SendDm(self.actor_id, self.actor_ref, sender, nick, text, None, self.clock.wall()),
        )

    def kick(self, nick: str, reason: str = "") -> None:
        """Disconnect ``nick`` with bye `kicked` (4005); ``reason`` is shown as its message."""
        tell(self.hub.directory, KickNick(nick, reason))

    def set_timer(self, name: str, delay: float) -> None:
        """Call :meth:`on_timer` with ``name`` in ``delay`` seconds (finite, >= 0; re-arming
        replaces it).  A ValueError for any other delay: NaN or infinity would never fire."""
        self._arm(name, self.clock.monotonic() + check_delay(name, delay))

    def cancel_timer(self, name: str) -> None:
        """Disarm timer ``name`` (no-op if it is not armed)."""
        if self._timers.pop(name, None) is not None:
            tell(self.hub.scheduler, Cancel(self.actor_id, name))

    def _arm(self, name: str, due: float) -> None:
        self._token += 1
        self._timers[name] = (self._token, due)
        tell(self.hub.scheduler, Schedule(self.actor_id, self.actor_ref, name, due, self._token))

    # --- what a plugin may read -------------------------------------------------------------

    @property
    def rooms(self) -> list[str]:
        """Rooms this plugin is a member of."""
        return sorted(self._rooms)

    def members(self, room: str) -> list[str]:
        """Nicks in a room this plugin is a member of (its own included), else []."""
        joined = self._rooms.get(room)
        return sorted(joined.members) if joined is not None else []

    def uptime(self) -> float:
        """Seconds since the node started."""
        return self.clock.wall() - self.hub.started

    def describe_fields(self) -> dict[str, Any]:
        now = self.clock.monotonic()
        return {
            "plugin": self.spec,
            "nick": self.nick,
            "rooms": self.rooms,
            "timers": [
                {"name": n, "due_in": round(due - now, 3)}
                for n, (_t, due) in sorted(self._timers.items(), key=lambda kv: kv[1][1])
            ],
            "restarts": self.restarts,
            "handled": self.handled,
        }

    # --- the mailbox ----------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        handler = _HANDLERS.get(type(message))
        if handler is None:
            return super().on_receive(message)
        self.handled += 1
        # Fairness is the runtime's: a drain handles a bounded batch (actors/base.py).
        return handler(self, message)

    def _start(self, msg: Start) -> gevent.event.AsyncResult:
        """Answers (to a start-up that asks) a result set once the settings nick is decided."""
        self._ready = gevent.event.AsyncResult()
        self._startup = msg.startup
        cls = type(self)
        user_hooks = any(
            getattr(cls, hook) is not getattr(PluginActor, hook) for hook in _USER_HOOKS
        )
        self.hub.observers.subscribe(self.actor_ref, rooms=self.watch_all_rooms, users=user_hooks)
        for name, due in msg.timers:  # what the previous incarnation armed survives it
            self._arm(name, due)
        if self.settings.get("nick"):
            self.claim_nick(self.settings["nick"])
        else:
            self._ready.set(None)
        for room in self.settings.get("rooms") or ():
            self.join(room)
        self.on_started()
        return self._ready

    def _room_message(self, msg: RoomMessage) -> None:
        if msg.nick != self.nick:  # never its own: a bot must not answer itself
            self.on_room_message(msg.room, msg.nick, msg.text, msg.seq)

    def _room_presence(self, msg: RoomPresence) -> None:
        self._track(msg.room, msg.event, msg.nick)
        if msg.nick != self.nick:
            self.on_presence(msg.room, msg.event, msg.nick)

    def _deliver(self, msg: Deliver) -> None:
        # What a member gets is what a user's socket gets: the encoded frame.
        frame = json.loads(msg.payload)
        kind = frame.get("type")
        if kind == "dm":
            self.on_dm(frame["from"], frame["text"])
        elif self.watch_all_rooms:
            return  # rooms already tell it RoomMessage/RoomPresence: hear each event once
        elif kind == "message":
            self._room_message(
                RoomMessage(frame["room"], frame["from"], frame["text"], frame["seq"], frame["ts"])
            )
        elif kind == "presence":
            self._room_presence(RoomPresence(frame["room"], frame["event"], frame["nick"]))

    def _track(self, room: str, event: str, nick: str) -> None:
        joined = self._rooms.get(room)
        if joined is not None:
            (joined.members.add if event == "join" else joined.members.discard)(nick)

    def _joined(self, msg: JoinedRoom) -> None:
        assert msg.payload is not None  # a member without a connection gets the frame here
        members = json.loads(msg.payload)["members"]
        self._rooms[msg.room] = _Joined(msg.ref, set(members))
        self.on_joined(msg.room, members)

    def _moved(self, msg: RoomMoved) -> None:
        if msg.room in self._rooms:
            self._rooms[msg.room].ref = msg.ref

    def _nick(self, msg: NickResult) -> None:
        if msg.nick != self._wanted_nick:
            return  # an answer to an older claim
        settings_nick = msg.nick == self.settings.get("nick") and self.nick is None
        if not msg.ok:
            self._pending_joins.clear()
            if not settings_nick or self.hub.shared_nicks:
                # A cluster runs the same plugin on every node: the first to claim the nick
                # is the member, the others stand by (docs/cluster.md, "Plugins").
                log.warning(
                    "plugin %s: nick %r is taken; not joining any room", self.spec, msg.nick
                )
                self._decided(None)
                return
            taken = NickTaken(f"nick {msg.nick!r} is taken")
            if self._decided(taken):
                return  # start-up reports it and stops this plugin
            raise taken  # after a restart: a failure like any other (supervision decides)
        self.nick = msg.nick
        self.hub.nick_granted(self.actor_id, msg.nick)
        self._decided(None)
        joins, self._pending_joins = self._pending_joins, []
        for room in joins:
            self.join(room)

    def _decided(self, error: BaseException | None) -> bool:
        """Tell a waiting start-up the settings nick is decided; True if one was waiting."""
        ready, self._ready = self._ready, None
        if ready is None:
            return False
        if error is None:
            ready.set(None)
        else:
            ready.set_exception(error)
        return self._startup

    def _dm_result(self, msg: DmResult) -> None:
        if not msg.ok:
            log.info("plugin %s: a dm found nobody (the user left)", self.spec)

    def _timer(self, msg: TimerFired) -> None:
        armed = self._timers.get(msg.name)
        if armed is None or armed[0] != msg.token:
            return  # re-armed or cancelled after the scheduler posted it
        del self._timers[msg.name]
        self.on_timer(msg.name)

    # --- the end of its life --------------------------------------------------------------

    def last_words(self) -> PluginReport:
        timers = tuple((name, due) for name, (_token, due) in self._timers.items())
        return PluginReport(self.spec, timers)

    def _cleanup(self) -> None:
        # Runs in our own greenlet before the node hears of a failure, so a restarted
        # incarnation (same id) always finds the nick free and no stale timers.
        self.hub.observers.unsubscribe(self.actor_ref)
        self.hub.nick_granted(self.actor_id, None)
        if self._timers:
            tell(self.hub.scheduler, CancelOwner(self.actor_id, tuple(self._timers)))
            self._timers.clear()
        if self._wanted_nick is not None or self._rooms:
            tell(self.hub.directory, UserGone(self.actor_id))

    def on_stop(self) -> None:
        self._cleanup()
        super().on_stop()

    def on_failure(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._cleanup()
        super().on_failure(exc_type, exc, tb)


_USER_HOOKS = ("on_user_connected", "on_profile", "on_user_disconnected")

_HANDLERS: dict[type, Any] = {
    Start: PluginActor._start,
    Call: lambda self, msg: msg.fn(self),
    RoomMessage: PluginActor._room_message,
    RoomPresence: PluginActor._room_presence,
    Deliver: PluginActor._deliver,
    JoinedRoom: PluginActor._joined,
    RoomMoved: PluginActor._moved,
    NickResult: PluginActor._nick,
    DmResult: PluginActor._dm_result,
    Acked: lambda self, msg: None,
    Kick: lambda self, msg: self.on_kicked(msg.reason),
    TimerFired: PluginActor._timer,
    UserConnected: lambda self, msg: self.on_user_connected(msg.session),
    UserProfiled: lambda self, msg: self.on_profile(msg.session, msg.nick),
    UserDisconnected: lambda self, msg: self.on_user_disconnected(
        msg.session, msg.nick, msg.reason
    ),
}
