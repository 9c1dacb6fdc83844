"""RoomActor: one per room.  Members, fan-out, presence, history.

A `say` is stored under the next `seq` first, the sender is acked, then the
message is encoded ONCE and the same ``Deliver`` object is told to every member.
The directory creates rooms, routes joins and leaves to them, and retires them
when empty (the history goes back to the directory, so `seq` continues).
"""

from __future__ import annotations

from typing import Any

from .core import codec
from .base import HubbubActor, tell
from .clock import Clock, MonotonicClock
from .core.counters import Counters
from .core.history import RoomHistory
from .core.messages import (
    Acked, Deliver, JoinedRoom, Persist, Retire, RoomIgnores, RoomJoin, RoomLeave, RoomMessage, RoomPage,
    RoomPresence, RoomRename, RoomRetired, RoomSay,
)
from .core.identity import fold
from .plugin import publish, room_watchers

__all__ = ["RoomActor"]


class RoomActor(HubbubActor):
    def __init__(self, name: str, history: RoomHistory, directory: Any,
                 parent: HubbubActor | None = None, counters: Counters | None = None,
                 clock: Clock | None = None, store: Any = None, page_bytes: int = 256 << 10) -> None:
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
        self.outboxes: dict[str, Any] = {}
        """session id → the member's connection, for members that have one (users)."""
        self.watchers = room_watchers(self)
        """Plugins watching every room (a live list, usually empty; actors/plugin.py)."""
        self.page_bytes = page_bytes
        """Largest `joined`/`history` page: the newest messages that fit (docs/protocol.md)."""
        self.ignores: dict[str, frozenset[str]] = {}
        """session → folded nicks it ignores, only for members that ignore someone."""
        history.set_dormant(False)

    def describe_fields(self) -> dict[str, Any]:
        return {"room": self.name, "members": len(self.members), "seq": self.history.last_seq}

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
        if isinstance(message, RoomPage):
            return self._page(message)
        if isinstance(message, RoomIgnores):
            return self._set_ignores(message.session, message.ignores)
        return super().on_receive(message)

    def _broadcast(self, payload: bytes, skip: str | None = None, sender: str | None = None) -> None:
        # Fan-out: the encoded bytes are queued straight on each member's connection.
        # send_text never blocks (a slow member only grows its own backlog, and is cut
        # at --max-backlog), so going through 500 member actors would only add 500
        # greenlet wake-ups to every message: the latency the benchmarks measured.
        # Members without a connection (plugins, other nodes' bridges) get a Deliver.
        outboxes = self.outboxes
        delivery = None
        skips: Any = (skip,)
        if sender is not None and self.ignores:
            # Only when someone in the room ignores someone: the usual fan-out pays one test.
            key = fold(sender)
            skips = {skip, *(s for s, ign in self.ignores.items() if key in ign)}
        sent = 0
        for session, (ref, _nick) in self.members.items():
            if session in skips:
                continue
            sent += 1
            outbox = outboxes.get(session)
            if outbox is not None:
                outbox.send_text(payload)
            else:
                if delivery is None:
                    delivery = Deliver(payload)
                tell(ref, delivery)
        self.counters.frames_out += sent

    def _say(self, msg: RoomSay) -> None:
        if msg.session not in self.members:
            return  # left between its `say` and now; its session already said not_in_room
        frame = codec.message(self.name, msg.nick, msg.text, 0, msg.ts)
        seq, payload = self.history.add(frame)
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
        self._broadcast(payload, sender=msg.nick)
        if self.watchers:  # after the members: a plugin never delays the humans
            publish(self.watchers, RoomMessage(self.name, msg.nick, msg.text, seq, msg.ts))
        counters = self.counters
        counters.messages += 1
        counters.deliveries += len(self.members)
        counters.fanout_seconds.observe(max(0.0, self.clock.wall() - msg.ts))

    def _join(self, msg: RoomJoin) -> None:
        fresh = msg.session not in self.members
        self.members[msg.session] = (msg.user, msg.nick)
        self._set_ignores(msg.session, msg.ignores)
        # Paged: the newest messages that fit page_bytes, so that a `joined` can never by
        # itself push its reader over --max-backlog (issue 15: 80 messages of 64 KB made a
        # 5 MB `joined` that cut every newcomer).  `more` says older pages exist.
        history, more, complete = self.history.page(since=msg.since, max_bytes=self.page_bytes)
        nicks = sorted({nick for _ref, nick in self.members.values()})
        payload: bytes | None = codec.encode_joined(self.name, nicks, history, complete, more)
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
        self.ignores.pop(msg.session, None)
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

    def _set_ignores(self, session: str, ignores: frozenset[str]) -> None:
        if ignores and session in self.members:
            self.ignores[session] = ignores
        else:
            self.ignores.pop(session, None)

    def _page(self, msg: RoomPage) -> None:
        if msg.session not in self.members:
            return  # left meanwhile; its session answered not_in_room already or will
        limit = msg.limit if msg.limit is not None else self.history.keep
        page, more, complete = self.history.page(since=msg.since, before=msg.before, limit=limit,
                                                 max_bytes=self.page_bytes)
        payload = codec.encode_history(self.name, page, more, complete)
        outbox = self.outboxes.get(msg.session)
        if outbox is not None:
            outbox.send_text(payload)
            self.counters.frames_out += 1
        else:
            tell(msg.user, Deliver(payload))

    def _retire(self) -> None:
        self.history.set_dormant(True)
        # The directory routes every join and leave, so it knows we are empty and
        # holds new joins for this name until RoomRetired reaches it.
        tell(self.directory, RoomRetired(self.name, self.history))
        self.actor_ref.stop(block=False)
