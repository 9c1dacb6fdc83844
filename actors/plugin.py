"""The extension API: new actor types ("plugins") that live in a node's actor tree.

A plugin is a :class:`PluginActor` subclass.  It overrides hooks (what it wants to
hear) and calls actions (what it does); docs/extending.md is the guide.

    class Echo(PluginActor):
        defaults = {"nick": "echo", "rooms": ["lobby"]}

        def on_room_message(self, room, nick, text, seq):
            self.say(room, f"{nick} said {text!r}")

How it fits the tree:

* Every plugin is a child of the NodeActor (``/debug/actors`` shows it there, with
  the fields of its :meth:`~PluginActor.describe_fields`), with its own mailbox.
  Rooms and users only ever ``tell`` it, so a slow plugin delays nobody but itself.
* A plugin that claims a nick and joins rooms is a room member like any user: the
  room hands it the same ``Deliver`` bytes, it shows in ``members`` and presence.
* A plugin with ``watch_all_rooms`` hears every room's messages and presence, and
  one that overrides a user hook hears every connection's lifecycle, through the
  :class:`PluginHub` lists that rooms and users read (empty lists: zero cost).
* Supervision: a hook that raises fails the actor; the node restarts it (fresh
  state, same settings) up to ``max_restarts`` times per ``restart_window`` seconds,
  then leaves it stopped.  Rooms and users never notice.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gevent

from .base import HubbubActor, tell
from .clock import Clock
from .core.codec import valid_name
from .core.messages import (
    Acked, Cancel, CancelOwner, ClaimNick, Deliver, DmResult, JoinedRoom, JoinRoom, Kick, KickNick,
    LeaveRoom, NickResult, RoomMessage, RoomMoved, RoomPresence, RoomSay, Schedule, SendDm,
    TimerFired, UserConnected, UserDisconnected, UserGone, UserProfiled,
)

__all__ = [
    "PluginActor", "PluginHub", "PluginSettingsError", "kinds", "resolve_kind",
    "publish", "room_watchers", "user_watchers",
]

log = logging.getLogger("hubbub.plugins")

_KINDS: dict[str, type[PluginActor]] = {}
_NOBODY: tuple[Any, ...] = ()  # what rooms and users hold when the node has no plugin hub


def kinds() -> dict[str, type[PluginActor]]:
    """The registry of plugin actor kinds: ``"module:Class"`` → class, for every subclass defined."""
    return dict(_KINDS)


def resolve_kind(spec: str) -> type[PluginActor] | None:
    """The registered class for ``spec`` (``"module:Class"``), or None if none was defined yet."""
    return _KINDS.get(spec)


class PluginSettingsError(ValueError):
    """A setting from ``[plugins."module:Class"]`` is unknown or of the wrong type."""


# --- the lists rooms and users publish to ---------------------------------------------


def publish(refs: Any, message: Any) -> None:
    """Tell every subscribed plugin (callers check ``if refs:`` first, so no plugin costs nothing)."""
    for ref in refs:
        tell(ref, message)


def _hub_of(actor: HubbubActor) -> PluginHub | None:
    root = actor
    while root.parent is not None:
        root = root.parent
    return getattr(root, "plugins", None)


def room_watchers(actor: HubbubActor) -> Any:
    """The live list of plugins that watch every room (empty if none; for RoomActor)."""
    hub = _hub_of(actor)
    return hub.room_watchers if hub is not None else _NOBODY


def user_watchers(actor: HubbubActor) -> Any:
    """The live list of plugins that watch user lifecycles (empty if none; for UserActor)."""
    hub = _hub_of(actor)
    return hub.user_watchers if hub is not None else _NOBODY


@dataclass(frozen=True, slots=True)
class _Start:
    """The first message in a plugin's mailbox: subscribe, claim the nick, join, on_started()."""


@dataclass
class _Joined:
    ref: Any
    """The RoomActor's ref (updated on RoomMoved)."""
    members: set[str] = field(default_factory=set)
    """Nicks in the room, kept from the `joined` frame and presence."""


# --- the base class -------------------------------------------------------------------


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
        _KINDS[f"{cls.__module__}:{cls.__qualname__}"] = cls

    def __init__(self, hub: PluginHub, spec: str, settings: Mapping[str, Any] | None = None) -> None:
        # Settings first: a bad one must fail before this actor is linked into the tree.
        merged = _settings(type(self), settings or {})
        super().__init__(f"plugin:{spec}", hub.node)
        self.hub = hub
        self.spec = spec
        """How it was loaded (``module:Class``); also the key of its settings table."""
        self.settings: dict[str, Any] = merged
        self.clock: Clock = hub.clock
        self.nick: str | None = None
        """The nick the directory confirmed, or None."""
        self.restarts = 0
        self.handled = 0
        self._wanted_nick: str | None = None
        self._pending_joins: list[str] = []
        self._rooms: dict[str, _Joined] = {}
        self._timers: dict[str, tuple[int, float]] = {}
        """Armed timers: name → (token, due); the token drops stale TimerFired."""
        self._token = 0

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
            raise PluginSettingsError(f"{nick!r} is not a valid nick (1-32 letters, digits, _ or -)")
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
        return tell(joined.ref, RoomSay(self.actor_id, self.actor_ref, self.nick or "", text,
                                        None, self.clock.wall()))

    def dm(self, nick: str, text: str) -> None:
        """Send ``nick`` a direct message from this plugin's nick (an unknown nick: dropped)."""
        sender = self.nick or type(self).__name__
        tell(self.hub.directory, SendDm(self.actor_id, self.actor_ref, sender, nick, text, None,
                                        self.clock.wall()))

    def kick(self, nick: str, reason: str = "") -> None:
        """Disconnect ``nick`` with bye `kicked` (4005); ``reason`` is shown as its message."""
        tell(self.hub.directory, KickNick(nick, reason))

    def set_timer(self, name: str, delay: float) -> None:
        """Call :meth:`on_timer` with ``name`` in ``delay`` seconds (re-arming replaces it)."""
        self._token += 1
        due = self.clock.monotonic() + delay
        self._timers[name] = (self._token, due)
        tell(self.hub.scheduler, Schedule(self.actor_id, self.actor_ref, name, due, self._token))

    def cancel_timer(self, name: str) -> None:
        """Disarm timer ``name`` (no-op if it is not armed)."""
        if self._timers.pop(name, None) is not None:
            tell(self.hub.scheduler, Cancel(self.actor_id, name))

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
            "timers": [{"name": n, "due_in": round(due - now, 3)}
                       for n, (_t, due) in sorted(self._timers.items(), key=lambda kv: kv[1][1])],
            "restarts": self.restarts,
            "handled": self.handled,
        }

    # --- the mailbox ----------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        handler = _HANDLERS.get(type(message))
        if handler is None:
            return super().on_receive(message)
        self.handled += 1
        handler(self, message)
        # Fairness: a full mailbox never blocks, so without this a busy plugin would
        # never let another greenlet run (the same rule as UserActor).
        if self.handled % 16 == 0:
            gevent.sleep(0)
        return None

    def _start(self, _msg: _Start) -> None:
        hub, cls = self.hub, type(self)
        if self.watch_all_rooms:
            hub.room_watchers.append(self.actor_ref)
        if any(getattr(cls, hook) is not getattr(PluginActor, hook) for hook in _USER_HOOKS):
            hub.user_watchers.append(self.actor_ref)
        if self.settings.get("nick"):
            self.claim_nick(self.settings["nick"])
        for room in self.settings.get("rooms") or ():
            self.join(room)
        self.on_started()

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
            self._room_message(RoomMessage(frame["room"], frame["from"], frame["text"],
                                           frame["seq"], frame["ts"]))
        elif kind == "presence":
            self._room_presence(RoomPresence(frame["room"], frame["event"], frame["nick"]))

    def _track(self, room: str, event: str, nick: str) -> None:
        joined = self._rooms.get(room)
        if joined is not None:
            (joined.members.add if event == "join" else joined.members.discard)(nick)

    def _joined(self, msg: JoinedRoom) -> None:
        members = json.loads(msg.payload)["members"]
        self._rooms[msg.room] = _Joined(msg.ref, set(members))
        self.on_joined(msg.room, members)

    def _moved(self, msg: RoomMoved) -> None:
        if msg.room in self._rooms:
            self._rooms[msg.room].ref = msg.ref

    def _nick(self, msg: NickResult) -> None:
        if msg.nick != self._wanted_nick:
            return  # an answer to an older claim
        if not msg.ok:
            log.warning("plugin %s: nick %r is taken; not joining %s", self.spec, msg.nick,
                        self._pending_joins or "any room")
            self._pending_joins.clear()
            return
        self.nick = msg.nick
        joins, self._pending_joins = self._pending_joins, []
        for room in joins:
            self.join(room)

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

    def _cleanup(self) -> None:
        # Runs in our own greenlet before the node hears of a failure, so a restarted
        # incarnation (same id) always finds the nick free and no stale timers.
        for watchers in (self.hub.room_watchers, self.hub.user_watchers):
            while self.actor_ref in watchers:
                watchers.remove(self.actor_ref)
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
    _Start: PluginActor._start,
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
    UserDisconnected: lambda self, msg: self.on_user_disconnected(msg.session, msg.nick, msg.reason),
}

_BASE_DEFAULTS: dict[str, Any] = {"nick": None, "rooms": []}


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):  # bool is an int: keep them apart
        return type(value) is type(default)
    if isinstance(default, float):
        return isinstance(value, (int, float))  # TOML `window = 10` means 10.0
    return isinstance(value, type(default))


def _settings(cls: type[PluginActor], given: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with ``given``; an unknown key or a value of another type is an error."""
    defaults = {**_BASE_DEFAULTS, **cls.defaults}
    for key, value in given.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults))
            raise PluginSettingsError(f"unknown setting {key!r} (known: {known})")
        default = defaults[key]
        if default is not None and value is not None and not _same_kind(value, default):
            raise PluginSettingsError(
                f"setting {key!r} must be {type(default).__name__} (got {value!r})")
    merged = {**defaults, **given}
    if merged["nick"] is not None and not (isinstance(merged["nick"], str) and valid_name(merged["nick"])):
        raise PluginSettingsError(f"setting 'nick' is not a valid nick (got {merged['nick']!r})")
    rooms = merged["rooms"]
    if not isinstance(rooms, list) or not all(isinstance(r, str) and valid_name(r) for r in rooms):
        raise PluginSettingsError(f"setting 'rooms' must be a list of room names (got {rooms!r})")
    if rooms and not merged["nick"]:
        raise PluginSettingsError("setting 'rooms' needs a 'nick': members have nicks")
    return merged


# --- the node's side: starting, watching, supervising ---------------------------------


class PluginHub:
    """A node's plugins: who watches what, how to start one, what to do when one fails.

    One per ActorSystem (``system.plugins``, also ``NodeActor.plugins``).  Its two
    lists are shared by reference with every room and user: a plugin adds its ref
    when it starts and removes it when it stops, in its own greenlet (one OS thread,
    no yield in between: see base.py on why plain attributes are safe here).
    """

    def __init__(self, node: HubbubActor, scheduler: Any, directory: Any, clock: Clock,
                 started: float) -> None:
        self.node = node
        self.scheduler = scheduler
        """SchedulerActor ref: plugin timers go through the one shared scheduler."""
        self.directory = directory
        """DirectoryActor ref: nicks, rooms, dm, kick."""
        self.clock = clock
        self.started = started
        """Wall-clock time the node started (for uptime)."""
        self.room_watchers: list[Any] = []
        self.user_watchers: list[Any] = []
        self.given_up: dict[str, str] = {}
        """spec → last error, for plugins stopped after too many failures."""
        self._specs: dict[str, tuple[type[PluginActor], dict[str, Any]]] = {}
        self._failures: dict[str, deque[float]] = {}

    def running(self) -> list[PluginActor]:
        return [a for a in list(self.node.children.values()) if isinstance(a, PluginActor)]

    def plugin_nicks(self) -> set[str]:
        """Nicks held by running plugins (a snapshot: plain attribute reads, see base.py)."""
        return {p.nick for p in self.running() if p.nick is not None}

    def start(self, cls: type[PluginActor], settings: Mapping[str, Any] | None = None,
              spec: str | None = None, timeout: float | None = 5.0) -> PluginActor:
        """Start a plugin under the node.  With ``timeout`` (start-up) wait for its start and
        re-raise what its constructor or ``on_started`` raised; with None only tell it."""
        spec = spec or f"{cls.__module__}:{cls.__qualname__}"
        if spec in self._specs:
            raise ValueError(f"plugin {spec} is already running")
        settings = dict(settings or {})
        actor = self._spawn(cls, spec, settings)
        self._specs[spec] = (cls, settings)
        if timeout is None:
            tell(actor.actor_ref, _Start())
        else:
            # The edge asks, with a timeout (STYLE.md habit 5): start-up waits for the
            # plugin so that a broken one stops the server before it listens.
            actor.actor_ref.ask(_Start(), timeout=timeout)
        return actor

    def _spawn(self, cls: type[PluginActor], spec: str, settings: dict[str, Any]) -> PluginActor:
        actor_id = f"plugin:{spec}"
        before = self.node.children.get(actor_id)
        try:
            return cls.spawn(self, spec, settings)
        except BaseException:
            # A constructor that raised after linking itself must not haunt /debug.
            if self.node.children.get(actor_id) is not before:
                del self.node.children[actor_id]
            raise

    def child_failed(self, child: PluginActor, error: BaseException) -> None:
        """Supervision (the node calls this): restart with fresh state, or give up."""
        cls, settings = self._specs[child.spec]
        now = self.clock.monotonic()
        recent = self._failures.setdefault(child.spec, deque())
        recent.append(now)
        while recent and recent[0] <= now - cls.restart_window:
            recent.popleft()
        if len(recent) > cls.max_restarts:
            self.given_up[child.spec] = repr(error)
            log.error("plugin %s failed %d times in %g s: stopped, not restarted",
                      child.spec, len(recent), cls.restart_window)
            return
        try:
            fresh = self._spawn(cls, child.spec, settings)
        except Exception as exc:  # noqa: BLE001 - a constructor failing now will fail again
            self.given_up[child.spec] = repr(exc)
            log.error("plugin %s could not be restarted: %r", child.spec, exc)
            return
        fresh.restarts = child.restarts + 1
        log.warning("plugin %s restarted (%d) after %r", child.spec, fresh.restarts, error)
        tell(fresh.actor_ref, _Start())
