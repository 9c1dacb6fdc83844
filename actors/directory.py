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

from .core import codec
from .base import HubbubActor, tell
from .core.counters import Counters
from .core.history import RoomHistory
from .core.messages import (
    ClaimNick, Deliver, DmResult, JoinRoom, Kick, KickNick, LeaveRoom, NickResult, Retire,
    RoomJoin, RoomLeave, RoomMoved, RoomRename, RoomRetired, SendDm, UserGone,
)
from .room import RoomActor

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
                 store: Any = None) -> None:
        super().__init__("directory", parent)
        self.history_size = history_size
        self.room_class = room_class
        self.counters = counters or Counters()
        self.store = store
        """Optional HistoryStore (--store): rooms load their history from it."""
        self.nicks: dict[str, str] = {}
        """nick → session id."""
        self.users: dict[str, _User] = {}
        self.rooms: dict[str, _Room] = {}
        self.retiring: dict[str, list[JoinRoom]] = {}
        """Rooms told to Retire: joins that arrive meanwhile wait here."""
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
            history = self.dormant.pop(msg.room, None) or self._load(msg.room)
            room = self.rooms[msg.room] = _Room(self._start_room(msg.room, history))
        room.members[msg.session] = msg.nick
        user.rooms.add(msg.room)
        tell(room.actor.actor_ref, RoomJoin(msg.session, msg.user, msg.nick, msg.since, msg.outbox, msg.epoch))

    def _load(self, name: str) -> RoomHistory:
        if self.store is None:
            return RoomHistory(self.history_size)
        last_seq, messages = self.store.history.load(name, self.history_size)
        return RoomHistory(self.history_size, last_seq, messages)

    def _start_room(self, name: str, history: RoomHistory) -> RoomActor:
        # The object, not a ref: the directory is its parent and takes its history on failure.
        store_ref = self.store.actor_ref if self.store is not None else None
        return self.room_class.spawn(name, history, self.actor_ref, parent=self,
                                     counters=self.counters, store=store_ref, port=self.room_port(name))

    def room_port(self, name: str) -> Any:
        """The port a new room gets (a cluster's directory gives a Redis one; actors/room.py)."""
        return None

    def _leave(self, msg: LeaveRoom) -> None:
        user = self.users.get(msg.session)
        if user is not None:
            user.rooms.discard(msg.room)
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
        for join in self.retiring.pop(msg.room, []):
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

    def on_child_failed(self, child: HubbubActor, error: BaseException) -> None:
        super().on_child_failed(child, error)
        self.counters.actor_failures[child.kind] += 1
        if not isinstance(child, RoomActor):
            return
        room = self.rooms.get(child.name)
        if room is None or room.actor is not child:
            return
        # Restart with members and history intact: the new room gets the old
        # history object and every member re-added silently.
        self.restarts += 1
        fresh = self._start_room(child.name, child.history)
        fresh.members = dict(child.members)
        fresh.outboxes = dict(child.outboxes)
        room.actor = fresh
        for ref, _nick in fresh.members.values():
            tell(ref, RoomMoved(child.name, fresh.actor_ref))

    _handlers: dict[type, Any] = {}


DirectoryActor._handlers = {
    ClaimNick: DirectoryActor._claim,
    UserGone: DirectoryActor._gone,
    JoinRoom: DirectoryActor._join,
    LeaveRoom: DirectoryActor._leave,
    RoomRetired: DirectoryActor._retired,
    SendDm: DirectoryActor._dm,
    KickNick: DirectoryActor._kick,
}
