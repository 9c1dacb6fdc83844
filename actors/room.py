"""RoomActor: one per room.  Members, fan-out, presence, history.

A `say` is stored under the next `seq` first, the sender is acked, then the
message is encoded ONCE and the same ``Deliver`` object is told to every member.
The directory creates rooms, routes joins and leaves to them, and retires them
when empty (the history goes back to the directory, so `seq` continues).

A room has one **port** for a cluster (``port``; None on a single node): with one,
the room's sequencer is Redis and its members include other nodes' (actors/cluster/).
The port decides *when*; the room's public methods below (``ack``, ``deliver``,
``announce``, ``send_joined``, ``refuse``) are the only things it calls back.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from .base import HubbubActor, publish, tell
from .clock import Clock, MonotonicClock
from .core import codec
from .core.counters import Counters
from .core.history import RoomHistory
from .core.identity import fold
from .core.messages import (
    Acked,
    Deliver,
    JoinedRoom,
    Persist,
    Retire,
    RoomIgnores,
    RoomJoin,
    RoomLeave,
    RoomMessage,
    RoomPage,
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
    ignores: dict[str, frozenset[str]]
    """session id → folded nicks it ignores (members that ignore someone)."""


class RoomActor(HubbubActor):
    def __init__(
        self,
        name: str,
        history: RoomHistory,
        directory: Any,
        parent: HubbubActor | None = None,
        counters: Counters | None = None,
        clock: Clock | None = None,
        store: Any = None,
        observers: Observers | None = None,
        restore: RoomState | None = None,
        port: Any = None,
        page_bytes: int = 256 << 10,
    ) -> None:
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
        self.ignores: dict[str, frozenset[str]] = {}
        """session → folded nicks it ignores, only for members that ignore someone."""
        if restore is not None:  # a restart after a failure: the members stay, silently
            self.members, self.outboxes = dict(restore.members), dict(restore.outboxes)
            self.ignores = dict(restore.ignores)
        self.watchers = (observers or Observers()).rooms
        """Subscribers to every room's events (a live list, usually empty; actors/core/observe.py)."""
        self.port = port
        """The cluster's sequencer and mirror (actors/cluster/room.py), or None: this room
        sequences its messages itself, with its own RoomHistory."""
        self.fanouts: deque[tuple[float, float, int]] = deque(maxlen=16)
        """The last says: (wall time, seconds until every member was told, members) for /debug."""
        self.page_bytes = page_bytes
        """Largest `joined`/`history` page: the newest messages that fit (docs/protocol.md)."""
        history.set_dormant(False)

    def on_start(self) -> None:
        if self.port is not None:
            self.port.attach(self)

    def describe_fields(self) -> dict[str, Any]:
        fields = {"room": self.name, "members": len(self.members), "seq": self.history.last_seq}
        if self.port is not None:
            fields.update(self.port.describe())
        return fields

    def last_words(self) -> RoomState:
        return RoomState(
            self.name, self.history, dict(self.members), dict(self.outboxes), dict(self.ignores)
        )

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
        if self.port is not None and self.port.accepts(message):
            return self.port.receive(message)
        return super().on_receive(message)

    def _broadcast(
        self, payload: bytes, skip: str | None = None, sender: str | None = None
    ) -> None:
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
        # With nothing else waiting in this room's mailbox, each member's frame is written
        # as the loop reaches it (send_now): the first member does not wait for the last
        # one's queueing. With more messages waiting they are queued and coalesce: one
        # write per member for all of them, from a hub callback once this drain yields.
        now = not self.actor_inbox.qsize()  # type: ignore[attr-defined]
        sent = 0
        for session, (ref, _nick) in self.members.items():
            if session in skips:
                continue
            sent += 1
            outbox = outboxes.get(session)
            if outbox is not None:
                if now:
                    outbox.send_now(payload)
                else:
                    outbox.send_text(payload)
            else:
                if delivery is None:
                    delivery = Deliver(payload)
                tell(ref, delivery)
        self.counters.frames_out += sent

    def _say(self, msg: RoomSay) -> None:
        if msg.session not in self.members:
            return  # left between its `say` and now; its session already said not_in_room
        if self.port is not None:
            return self.port.say(msg)  # the cluster's sequencer: ack and message come later
        frame = codec.message(self.name, msg.nick, msg.text, 0, msg.ts)
        seq, payload = self.history.add(frame)
        if self.store is not None:
            tell(self.store, Persist(self.name, frame))
        # Acked only after the seq is assigned and the message is kept (reliability.md),
        # and before the message itself reaches the sender.
        self.ack(msg, seq)
        self.deliver(frame, payload, recorded=True)
        return None

    # --- what a port calls back (and the single-node path uses too) -----------------

    def reply(
        self, session: str, user: Any, payload: bytes, fallback: Any, now: bool = False
    ) -> None:
        """A frame for one member: on its connection when it has one (the path the room's
        messages take, so it keeps its place before them), else ``fallback`` to its actor.
        ``now``: written at once, with what waits on that connection (``send_now``)."""
        outbox = self.outboxes.get(session)
        if outbox is not None:
            if now:
                outbox.send_now(payload)
            else:
                outbox.send_text(payload)
            self.counters.frames_out += 1
        else:
            tell(user, fallback)

    def ack(self, say: RoomSay, seq: int) -> None:
        """The sender's `ack`: after the seq is assigned, before the message reaches it.
        Written at once: a sender's next `say` must not wait for its place in the
        members' order (senders early in it would get their acks first, and say more)."""
        payload = codec.encode(codec.ack(say.client_id, seq))
        self.reply(say.session, say.user, payload, Acked(say.client_id, seq), now=True)
        self.counters.messages += 1

    def refuse(self, say: RoomSay, code: str, text: str) -> None:
        """An `error` for a `say` that had no effect (e.g. ``unavailable``)."""
        payload = codec.encode(codec.error(code, text))
        self.reply(say.session, say.user, payload, Deliver(payload))

    def deliver(self, frame: dict[str, Any], payload: bytes, recorded: bool = False) -> None:
        """A sequenced message to every member here (``recorded``: already in the history)."""
        if not recorded:
            self.history.record(frame, payload)
        self._broadcast(payload, sender=frame["from"])  # `from`: the members who ignore it skip it
        if self.watchers:  # after the members: a plugin never delays the humans
            publish(
                self.watchers,
                RoomMessage(self.name, frame["from"], frame["text"], frame["seq"], frame["ts"]),
            )
        counters = self.counters
        counters.deliveries += len(self.members)
        took = max(0.0, self.clock.wall() - frame["ts"])
        counters.fanout_seconds.observe(took)
        self.fanouts.append((frame["ts"], took, len(self.members)))

    def announce(self, event: str, nick: str, skip: str | None = None) -> None:
        """`presence` to the members here (but ``skip``), and to the watching plugins."""
        self._broadcast(codec.encode(codec.presence(self.name, event, nick)), skip=skip)
        if self.watchers:
            publish(self.watchers, RoomPresence(self.name, event, nick))

    def send_joined(
        self,
        msg: RoomJoin,
        nicks: list[str],
        history: list[dict[str, Any]],
        complete: bool,
        epoch: str | None = None,
    ) -> None:
        """The `joined` answer (the room's ref goes to the user with it)."""
        self.send_joined_payload(
            msg, codec.encode(codec.joined(self.name, nicks, history, complete, epoch))
        )

    def send_joined_payload(self, msg: RoomJoin, payload: bytes | None) -> None:
        if msg.outbox is not None:
            # `joined` goes the way the room's messages will: it must reach the client first.
            self.outboxes[msg.session] = msg.outbox
            msg.outbox.send_text(payload)
            self.counters.frames_out += 1
            payload = None
        tell(msg.user, JoinedRoom(self.name, self.actor_ref, payload))

    def _join(self, msg: RoomJoin) -> None:
        if self.port is not None:
            self.port.join(msg)
            self._set_ignores(msg.session, msg.ignores)  # after: the port adds the member
            return None
        fresh = msg.session not in self.members
        self.members[msg.session] = (msg.user, msg.nick)
        self._set_ignores(msg.session, msg.ignores)
        # Paged: the newest messages that fit page_bytes, so that a `joined` can never by
        # itself push its reader over --max-backlog (80 messages of 64 KB made a 5 MB
        # `joined` that cut every newcomer).  `more` says older pages exist.
        history, more, complete = self.history.page(since=msg.since, max_bytes=self.page_bytes)
        nicks = sorted({nick for _ref, nick in self.members.values()})
        self.send_joined_payload(
            msg, codec.encode_joined(self.name, nicks, history, complete, more)
        )
        if fresh:
            self.announce("join", msg.nick, skip=msg.session)
        return None

    def _leave(self, msg: RoomLeave) -> None:
        member = self.members.pop(msg.session, None)
        self.outboxes.pop(msg.session, None)
        self.ignores.pop(msg.session, None)
        if member is None:
            return
        if self.port is not None:
            self.port.left(msg.session, member[1])
        else:
            self.announce("leave", member[1])

    def _rename(self, msg: RoomRename) -> None:
        member = self.members.get(msg.session)
        if member is None:
            return
        self.members[msg.session] = (member[0], msg.new)
        if self.port is not None:
            self.port.renamed(msg.session, msg.old, msg.new)
            return
        self.announce("leave", msg.old, skip=msg.session)
        self.announce("join", msg.new, skip=msg.session)

    def _set_ignores(self, session: str, ignores: frozenset[str]) -> None:
        if ignores and session in self.members:
            self.ignores[session] = ignores
        else:
            self.ignores.pop(session, None)

    def _page(self, msg: RoomPage) -> None:
        if msg.session not in self.members:
            return  # left meanwhile; its session answered not_in_room already or will
        limit = msg.limit if msg.limit is not None else self.history.keep
        page, more, complete = self.history.page(
            since=msg.since, before=msg.before, limit=limit, max_bytes=self.page_bytes
        )
        payload = codec.encode_history(self.name, page, more, complete)
        self.reply(msg.session, msg.user, payload, Deliver(payload))

    def _retire(self) -> None:
        if self.port is not None:
            self.port.detach()
        # The directory routes every join and leave, so it knows we are empty and
        # holds new joins for this name until RoomRetired reaches it.
        tell(self.directory, RoomRetired(self.name, self.history))
        self.actor_ref.stop(block=False)
