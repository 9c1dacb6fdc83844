"""RoomActor: one per room.  Members, fan-out, presence, history.

A `say` is stored under the next `seq` first, the sender is acked, then the
message is encoded ONCE and the same ``Deliver`` object is told to every member.
The directory creates rooms, routes joins and leaves to them, and retires them
when empty (the history goes back to the directory, so `seq` continues).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import HubbubActor, publish, tell
from .clock import Clock, MonotonicClock
from .core import codec
from .core.counters import Counters
from .core.history import RoomHistory
from .core.messages import (
    Acked,
    Deliver,
    JoinedRoom,
    Persist,
    Retire,
    RoomJoin,
    RoomLeave,
    RoomMessage,
    RoomPresence,
    RoomRename,
    RoomRetired,
    RoomSay,
)
from .core.observe import Observers
from .core.outbox import Outbox

__all__ = ["RoomActor", "RoomState"]


@dataclass(frozen=True, slots=True)
class RoomState:
    """What a failed room leaves its parent (ChildFailed.report): enough to restart it."""

    name: str
    """Room name."""
    history: RoomHistory
    """Its history, seq included."""
    members: dict[str, tuple[Any, str]]
    """session id → (member ref, nick)."""
    outboxes: dict[str, Outbox]
    """session id → outbox, for members with a connection."""


class RoomActor(HubbubActor):
    def __init__(self, name: str, history: RoomHistory, directory: Any,
                 parent: HubbubActor | None = None, counters: Counters | None = None,
                 clock: Clock | None = None, store: Any = None, observers: Observers | None = None,
                 restore: RoomState | None = None) -> None:
        super().__init__(f"room:{name}", parent)
        self.name = name
        self.history = history
        self.directory = directory
        self.members: dict[str, tuple[Any, str]] = {}
        """session id → (user ref, nick)."""
        self.counters = counters or Counters()
        self.clock = clock or MonotonicClock()
        self.store = store
        """Optional StoreActor ref: every stored message is also told to it (--store)."""
        self.outboxes: dict[str, Outbox] = {}
        """session id → the member's outbox (write-only), for members that have a connection."""
        if restore is not None:  # a restart after a failure: the members stay, silently
            self.members, self.outboxes = dict(restore.members), dict(restore.outboxes)
        self.watchers = (observers or Observers()).rooms
        """Subscribers to every room's events (a live list, usually empty; actors/core/observe.py)."""

    def describe_fields(self) -> dict[str, Any]:
        return {"room": self.name, "members": len(self.members), "seq": self.history.last_seq}

    def last_words(self) -> RoomState:
        return RoomState(self.name, self.history, dict(self.members), dict(self.outboxes))

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, RoomSay):
            return self._say(message)
        if isinstance(message, RoomJoin):
            return self._join(message)
        if isinstance(message, RoomLeave):
            return self._leave(message)
        if isinstance(message, RoomRename):
            return self._rename(message)
        if isinstance(message, Retire):
            return self._retire()
        return super().on_receive(message)

    def _broadcast(self, payload: bytes, skip: str | None = None) -> None:
        # Fan-out: the encoded bytes are queued straight on each member's connection.
        # send_text never blocks (a slow member only grows its own backlog, and is cut
        # at --max-backlog), so going through 500 member actors would only add 500
        # greenlet wake-ups to every message: the latency the benchmarks measured.
        # Members without a connection (plugins, other nodes' bridges) get a Deliver.
        outboxes = self.outboxes
        delivery = None
        for session, (ref, _nick) in self.members.items():
            if session == skip:
                continue
            outbox = outboxes.get(session)
            if outbox is not None:
                outbox.send_text(payload)
            else:
                if delivery is None:
                    delivery = Deliver(payload)
                tell(ref, delivery)
        self.counters.frames_out += len(self.members) - (skip is not None)

    def _say(self, msg: RoomSay) -> None:
        if msg.session not in self.members:
            return  # left between its `say` and now; its session already said not_in_room
        frame = codec.message(self.name, msg.nick, msg.text, 0, msg.ts)
        seq = self.history.append(frame)
        if self.store is not None:
            tell(self.store, Persist(self.name, frame))
        # Acked only after the seq is assigned and the message is kept (reliability.md),
        # and before the message itself reaches the sender.
        outbox = self.outboxes.get(msg.session)
        if outbox is not None:
            outbox.send_text(codec.encode(codec.ack(msg.client_id, seq)))
            self.counters.frames_out += 1
        else:
            tell(msg.user, Acked(msg.client_id, seq))
        self._broadcast(codec.encode(frame))
        if self.watchers:  # after the members: a plugin never delays the humans
            publish(self.watchers, RoomMessage(self.name, msg.nick, msg.text, seq, msg.ts))
        counters = self.counters
        counters.messages += 1
        counters.deliveries += len(self.members)
        counters.fanout_seconds.observe(max(0.0, self.clock.wall() - msg.ts))

    def _join(self, msg: RoomJoin) -> None:
        fresh = msg.session not in self.members
        self.members[msg.session] = (msg.user, msg.nick)
        if msg.since is None:
            history, complete = self.history.recent(), True
        else:
            history, complete = self.history.since(msg.since)
        nicks = sorted({nick for _ref, nick in self.members.values()})
        payload: bytes | None = codec.encode(codec.joined(self.name, nicks, history, complete))
        if msg.outbox is not None:
            # `joined` goes the way the room's messages will: it must reach the client first.
            self.outboxes[msg.session] = msg.outbox
            msg.outbox.send_text(payload)
            self.counters.frames_out += 1
            payload = None
        tell(msg.user, JoinedRoom(self.name, self.actor_ref, payload))
        if fresh:
            self._broadcast(codec.encode(codec.presence(self.name, "join", msg.nick)), skip=msg.session)
            if self.watchers:
                publish(self.watchers, RoomPresence(self.name, "join", msg.nick))

    def _leave(self, msg: RoomLeave) -> None:
        member = self.members.pop(msg.session, None)
        self.outboxes.pop(msg.session, None)
        if member is not None:
            self._broadcast(codec.encode(codec.presence(self.name, "leave", member[1])))
            if self.watchers:
                publish(self.watchers, RoomPresence(self.name, "leave", member[1]))

    def _rename(self, msg: RoomRename) -> None:
        member = self.members.get(msg.session)
        if member is None:
            return
        self.members[msg.session] = (member[0], msg.new)
        self._broadcast(codec.encode(codec.presence(self.name, "leave", msg.old)), skip=msg.session)
        self._broadcast(codec.encode(codec.presence(self.name, "join", msg.new)), skip=msg.session)
        if self.watchers:
            publish(self.watchers, RoomPresence(self.name, "leave", msg.old))
            publish(self.watchers, RoomPresence(self.name, "join", msg.new))

    def _retire(self) -> None:
        # The directory routes every join and leave, so it knows we are empty and
        # holds new joins for this name until RoomRetired reaches it.
        tell(self.directory, RoomRetired(self.name, self.history))
        self.actor_ref.stop(block=False)
