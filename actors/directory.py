"""DirectoryActor: who is online, under which nick, in which rooms.

It owns the unique-nick table and the rooms index, routes joins and leaves to
RoomActors (creating a room on its first join, retiring it when the last member
leaves), finds users for `dm` and kick, and supervises the rooms: a room that
raises is restarted with its members and history intact.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .base import HubbubActor, tell
from .core import codec
from .core.counters import Counters
from .core.history import RoomHistory
from .core.messages import (
    ClaimNick,
    Deliver,
    DmResult,
    HistoryLoaded,
    JoinRoom,
    Kick,
    KickNick,
    LeaveRoom,
    LoadHistory,
    NickResult,
    Retire,
    RoomJoin,
    RoomLeave,
    RoomMoved,
    RoomRename,
    RoomRetired,
    SendDm,
    UserGone,
)
from .core.observe import Observers
from .room import RoomActor, RoomState

__all__ = ["DirectoryActor"]

# Histories of rooms that emptied are kept (so `seq` continues and `since` still
# recovers when someone comes back); this many of the most recently emptied rooms.
DORMANT_ROOMS = 10_000


@dataclass
class _User:
    ref: Any
    nick: str | None = None
    rooms: set[str] = field(default_factory=set)


@dataclass
class _Room:
    actor: RoomActor
    members: dict[str, str] = field(default_factory=dict)
    """session → nick, the directory's own view (used to restart the room)."""


class DirectoryActor(HubbubActor):
    def __init__(self, history_size: int, parent: HubbubActor | None = None,
                 room_class: type[RoomActor] = RoomActor, counters: Counters | None = None,
                 store: Any = None, observers: Observers | None = None) -> None:
        super().__init__("directory", parent)
        self.history_size = history_size
        self.room_class = room_class
        self.counters = counters or Counters()
        self.store = store
        """Optional StoreActor ref (--store): rooms' history is loaded from it by message."""
        self.observers = observers or Observers()
        """The node's observer port, handed to every room."""
        self.nicks: dict[str, str] = {}
        """nick → session id."""
        self.users: dict[str, _User] = {}
        self.rooms: dict[str, _Room] = {}
        self.retiring: dict[str, list[JoinRoom]] = {}
        """Rooms told to Retire, or whose history the store is loading: joins wait here."""
        self.dormant: OrderedDict[str, RoomHistory] = OrderedDict()
        self.restarts = 0

    def describe_fields(self) -> dict[str, Any]:
        return {"nicks": len(self.nicks), "rooms": len(self.rooms), "dormant_rooms": len(self.dormant)}

    def on_receive(self, message: Any) -> Any:
        handler = self._handlers.get(type(message))
        if handler is None:
            return super().on_receive(message)
        return handler(self, message)

    # --- nicks ----------------------------------------------------------------------

    def _claim(self, msg: ClaimNick) -> None:
        holder = self.nicks.get(msg.nick)
        if holder is not None and holder != msg.session:
            tell(msg.user, NickResult(msg.nick, False))
            return
        user = self.users.setdefault(msg.session, _User(msg.user))
        old, user.nick = user.nick, msg.nick
        self.nicks[msg.nick] = msg.session
        if old is not None and old != msg.nick:
            del self.nicks[old]
            for name in user.rooms:
                tell(self.rooms[name].actor.actor_ref, RoomRename(msg.session, old, msg.nick))
                self.rooms[name].members[msg.session] = msg.nick
        tell(msg.user, NickResult(msg.nick, True))

    def _gone(self, msg: UserGone) -> None:
        user = self.users.pop(msg.session, None)
        if user is None:
            return
        if user.nick is not None and self.nicks.get(user.nick) == msg.session:
            del self.nicks[user.nick]
        for name in list(user.rooms):
            self._remove_member(name, msg.session)

    # --- rooms ----------------------------------------------------------------------

    def _join(self, msg: JoinRoom) -> None:
        if msg.room in self.retiring:
            self.retiring[msg.room].append(msg)
            return
        user = self.users.setdefault(msg.session, _User(msg.user, msg.nick))
        room = self.rooms.get(msg.room)
        if room is None:
            history = self.dormant.pop(msg.room, None)
            if history is None and self.store is not None:
                # The store reads SQLite in its own actor; this join waits for its answer.
                self.retiring[msg.room] = [msg]
                tell(self.store, LoadHistory(msg.room, self.history_size, self.actor_ref))
                return
            if history is None:
                history = RoomHistory(self.history_size)
            room = self.rooms[msg.room] = _Room(self._start_room(msg.room, history))
        room.members[msg.session] = msg.nick
        user.rooms.add(msg.room)
        tell(room.actor.actor_ref, RoomJoin(msg.session, msg.user, msg.nick, msg.since, msg.outbox, msg.epoch))

    def _loaded(self, msg: HistoryLoaded) -> None:
        self.dormant[msg.room] = RoomHistory(self.history_size, msg.last_seq, msg.messages)
        self._replay(msg.room)

    def _start_room(self, name: str, history: RoomHistory, restore: RoomState | None = None) -> RoomActor:
        # The object, not a ref: the directory is its parent (the tree in /debug).
        return self.room_class.spawn(name, history, self.actor_ref, parent=self, counters=self.counters,
                                     store=self.store, observers=self.observers, restore=restore,
                                     port=self.room_port(name))

    def room_port(self, name: str) -> Any:
        """The port a new room gets (a cluster's directory gives a Redis one; actors/room.py)."""
        return None

    def _leave(self, msg: LeaveRoom) -> None:
        user = self.users.get(msg.session)
        if user is not None:
            user.rooms.discard(msg.room)
        if (waiting := self.retiring.get(msg.room)) is not None:  # left before its join ran
            waiting[:] = [join for join in waiting if join.session != msg.session]
        self._remove_member(msg.room, msg.session)

    def _remove_member(self, name: str, session: str) -> None:
        room = self.rooms.get(name)
        if room is None or room.members.pop(session, None) is None:
            return
        tell(room.actor.actor_ref, RoomLeave(session))
        if not room.members:
            del self.rooms[name]
            self.retiring[name] = []
            tell(room.actor.actor_ref, Retire())

    def _retired(self, msg: RoomRetired) -> None:
        self.dormant[msg.room] = msg.history
        self.dormant.move_to_end(msg.room)
        while len(self.dormant) > DORMANT_ROOMS:
            self.dormant.popitem(last=False)
        self._replay(msg.room)

    def _replay(self, name: str) -> None:
        """The room's history is back (retired or loaded): run the joins that waited for it."""
        for join in self.retiring.pop(name, []):
            if join.session in self.users:  # not gone while it waited
                self._join(join)

    # --- dm and kick ----------------------------------------------------------------

    def _dm(self, msg: SendDm) -> None:
        target = self.nicks.get(msg.to)
        if target is None:
            tell(msg.user, DmResult(msg.client_id, False))
            return
        payload = codec.encode(codec.dm(msg.sender, msg.text, msg.ts))
        self.counters.dms += 1
        tell(self.users[target].ref, Deliver(payload))
        tell(msg.user, DmResult(msg.client_id, True))

    def _kick(self, msg: KickNick) -> bool:
        target = self.nicks.get(msg.nick)
        if target is None:
            return False
        return tell(self.users[target].ref, Kick(msg.reason))

    # --- supervision ----------------------------------------------------------------

    def on_child_failed(self, child: HubbubActor, error: BaseException, report: Any = None) -> None:
        super().on_child_failed(child, error, report)
        self.counters.actor_failures[child.kind] += 1
        if not isinstance(report, RoomState):
            return
        name, room = report.name, self.rooms.get(report.name)
        if room is None or room.actor is not child:
            return  # retired meanwhile
        # Restart with members and history intact, from what the room said as it failed:
        # the new room gets the old history object and every member re-added silently.
        self.restarts += 1
        fresh = self._start_room(name, report.history, restore=report)
        room.actor = fresh
        for ref, _nick in report.members.values():
            tell(ref, RoomMoved(name, fresh.actor_ref))

    _handlers: dict[type, Any] = {}


DirectoryActor._handlers = {
    ClaimNick: DirectoryActor._claim,
    UserGone: DirectoryActor._gone,
    JoinRoom: DirectoryActor._join,
    LeaveRoom: DirectoryActor._leave,
    RoomRetired: DirectoryActor._retired,
    HistoryLoaded: DirectoryActor._loaded,
    SendDm: DirectoryActor._dm,
    KickNick: DirectoryActor._kick,
}
