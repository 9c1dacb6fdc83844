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
from .clock import Clock, MonotonicClock
from .core import codec
from .core.budgets import Bucket, Budgets
from .core.counters import Counters
from .core.history import HistoryPool, RoomHistory
from .core.identity import Nicks
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


@dataclass
class _User:
    ref: Any
    nick: str | None = None
    rooms: set[str] = field(default_factory=set)
    dm_in: tuple[Bucket, Bucket] | None = None
    """What it may still receive as dms (messages, bytes), from all senders together."""


@dataclass
class _Room:
    actor: RoomActor
    members: dict[str, str] = field(default_factory=dict)
    """session → nick, the directory's own view (used to restart the room)."""


class DirectoryActor(HubbubActor):
    def __init__(
        self,
        history_size: int,
        parent: HubbubActor | None = None,
        room_class: type[RoomActor] = RoomActor,
        counters: Counters | None = None,
        store: Any = None,
        observers: Observers | None = None,
        budgets: Budgets | None = None,
        clock: Clock | None = None,
        page_bytes: int | None = None,
        require_token: bool = False,
    ) -> None:
        super().__init__("directory", parent)
        self.history_size = history_size
        self.budgets = budgets = budgets or Budgets()
        self.clock = clock or MonotonicClock()
        self.page_bytes = page_bytes if page_bytes is not None else budgets.joined_bytes
        self.pool = HistoryPool(budgets.history_total)
        """Every room's history of this node together, under --history-total."""
        self.nick_table = Nicks(budgets.nick_grace, require_token=require_token)
        """Who may hold which nick: folding, tokens, nicks held after a drop (core/identity.py)."""
        self.room_class = room_class
        self.counters = counters or Counters()
        self.store = store
        """Optional StoreActor ref (--store): rooms' history is loaded from it by message."""
        self.observers = observers or Observers()
        """The node's observer port, handed to every room."""
        self.nicks: dict[str, str] = {}
        """nick (as its holder spelled it) → session id; ``nick_table`` decides, this mirrors it."""
        self.users: dict[str, _User] = {}
        self.rooms: dict[str, _Room] = {}
        self.retiring: dict[str, list[JoinRoom]] = {}
        """Rooms told to Retire, or whose history the store is loading: joins wait here."""
        self.dormant: OrderedDict[str, RoomHistory] = OrderedDict()
        self.restarts = 0

    def describe_fields(self) -> dict[str, Any]:
        return {
            "nicks": len(self.nicks),
            "rooms": len(self.rooms),
            "dormant_rooms": len(self.dormant),
            "held_nicks": len(self.nick_table.held),
            "history_bytes": self.pool.bytes,
        }

    def on_receive(self, message: Any) -> Any:
        handler = self._handlers.get(type(message))
        if handler is None:
            return super().on_receive(message)
        return handler(self, message)

    # --- nicks ----------------------------------------------------------------------

    def _claim(self, msg: ClaimNick) -> None:
        got = self.nick_table.claim(
            msg.session, msg.nick, self.clock.monotonic(), msg.verified, msg.resume
        )
        if not got.ok:
            tell(msg.user, NickResult(msg.nick, False, got.code, got.message))
            return
        if got.evict is not None:
            # Its owner is back (token or resume secret): the stale connection goes.
            stale = self.users.get(got.evict)
            if stale is not None:
                if stale.nick is not None and self.nicks.get(stale.nick) == got.evict:
                    del self.nicks[stale.nick]
                stale.nick = None
                # Out of its rooms now, so that its presence `leave` reaches the others
                # before the owner's `join` (both go through this actor, in order).
                for name in list(stale.rooms):
                    self._remove_member(name, got.evict)
                stale.rooms.clear()
                tell(
                    stale.ref, Kick("your nick was reclaimed by its owner from another connection")
                )
        user = self.users.setdefault(msg.session, _User(msg.user))
        old, user.nick = user.nick, msg.nick
        if old is not None and self.nicks.get(old) == msg.session:
            del self.nicks[old]
        self.nicks[msg.nick] = msg.session
        if old is not None and old != msg.nick:
            for name in user.rooms:
                tell(self.rooms[name].actor.actor_ref, RoomRename(msg.session, old, msg.nick))
                self.rooms[name].members[msg.session] = msg.nick
        tell(msg.user, NickResult(msg.nick, True, resume=got.resume))

    def _gone(self, msg: UserGone) -> None:
        user = self.users.pop(msg.session, None)
        if user is None:
            return
        self.nick_table.release(msg.session, self.clock.monotonic(), hold=msg.hold)
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
        b = self.budgets
        if msg.room not in user.rooms and len(user.rooms) >= b.max_rooms_per_user:
            return self._refuse_join(
                msg, f"you are in {b.max_rooms_per_user} rooms already: leave one first"
            )
        if room is None and len(self.rooms) + len(self.retiring) >= b.max_rooms:
            return self._refuse_join(msg, f"this server has {b.max_rooms} rooms already")
        if room is None:
            # `is None`, not `or`: a history whose messages were all evicted has len() 0
            # but still carries the room's seq.
            history = self.dormant.pop(msg.room, None)
            if history is None and self.store is not None:
                # The store reads SQLite in its own actor; this join waits for its answer.
                self.retiring[msg.room] = [msg]
                tell(self.store, LoadHistory(msg.room, self.history_size, self.actor_ref))
                return
            if history is None:
                history = self._new_history()
            room = self.rooms[msg.room] = _Room(self._start_room(msg.room, history))
        room.members[msg.session] = msg.nick
        user.rooms.add(msg.room)
        tell(
            room.actor.actor_ref,
            RoomJoin(
                msg.session, msg.user, msg.nick, msg.since, msg.outbox, msg.epoch, msg.ignores
            ),
        )

    def _refuse_join(self, msg: JoinRoom, why: str) -> None:
        tell(msg.user, Deliver(codec.encode(codec.error("too_many_rooms", why))))

    def _new_history(
        self, last_seq: int = 0, messages: list[dict[str, Any]] | None = None
    ) -> RoomHistory:
        return RoomHistory(
            self.history_size,
            last_seq,
            messages,
            max_bytes=self.budgets.history_bytes,
            pool=self.pool,
        )

    def _loaded(self, msg: HistoryLoaded) -> None:
        self.dormant[msg.room] = self._new_history(msg.last_seq, msg.messages)
        self._replay(msg.room)

    def _start_room(
        self, name: str, history: RoomHistory, restore: RoomState | None = None
    ) -> RoomActor:
        # The object, not a ref: the directory is its parent (the tree in /debug).
        return self.room_class.spawn(
            name,
            history,
            self.actor_ref,
            parent=self,
            counters=self.counters,
            store=self.store,
            observers=self.observers,
            restore=restore,
            port=self.room_port(name),
            page_bytes=self.page_bytes,
        )

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
        # Kept so that `seq` continues and `since` still recovers when someone comes back;
        # its messages are the first the pool evicts, and the entries themselves are
        # bounded by --max-rooms (the oldest emptied room is forgotten entirely).
        msg.history.set_dormant(True)
        self.dormant[msg.room] = msg.history
        self.dormant.move_to_end(msg.room)
        while len(self.dormant) > self.budgets.max_rooms:
            self.dormant.popitem(last=False)[1].release()
        self._replay(msg.room)

    def _replay(self, name: str) -> None:
        """The room's history is back (retired or loaded): run the joins that waited for it."""
        for join in self.retiring.pop(name, []):
            if join.session in self.users:  # not gone while it waited
                self._join(join)

    # --- dm and kick ----------------------------------------------------------------

    def _dm(self, msg: SendDm) -> None:
        target = self.nick_table.session_of(msg.to)
        if target is None or target not in self.users:
            tell(msg.user, DmResult(msg.client_id, False))
            return
        payload = codec.encode(codec.dm(msg.sender, msg.text, msg.ts))
        user = self.users[target]
        if not self._dm_budget(user, len(payload)):
            # The sender is told, the target is not cut: three senders at 19 dm/s of
            # 64 KB cut a 125 KB/s reader in 2.3 s before this budget (issue 15).
            tell(msg.user, DmResult(msg.client_id, False, "rate_limited"))
            return
        self.counters.dms += 1
        tell(user.ref, Deliver(payload, msg.sender))
        tell(msg.user, DmResult(msg.client_id, True))

    def _dm_budget(self, user: _User, size: int) -> bool:
        b, now = self.budgets, self.clock.monotonic()
        if user.dm_in is None:
            user.dm_in = (
                Bucket(b.dm_rate, 2 * b.dm_rate, now),
                Bucket(b.dm_bytes, 4 * b.dm_bytes, now),
            )
        count, volume = user.dm_in
        # Both or neither: a refused dm must not use up the other budget.
        if not count.take(1, now):
            return False
        if not volume.take(size, now):
            count.tokens += 1
            return False
        return True

    def _kick(self, msg: KickNick) -> bool:
        target = self.nick_table.session_of(msg.nick)
        if target is None or target not in self.users:
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
