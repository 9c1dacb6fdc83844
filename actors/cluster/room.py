"""The Redis port of a room: its sequencer and its mirror of the other nodes.

A RoomActor given a :class:`RedisRoomPort` (actors/room.py ``port``) hands it its says,
joins, leaves and renames, and every message it does not know.  The port feeds the
pure :class:`~.mirror.RoomMirror` and carries out what it returns through the room's
public methods (``ack``, ``refuse``, ``deliver``, ``announce``, ``send_joined``) and
through the link (``Call``, ``SaySend``): it never talks to Redis itself and never waits.

Two waits are bounded (docs/cluster.md "Bounded waits"): a room that has no snapshot
yet holds joins and says for at most ``FIRST_SNAPSHOT_WAIT``; then joins are answered
from what this node knows (``complete: false`` for a ``since``) and says are refused
with ``unavailable``.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from typing import Any

import gevent

from ..base import tell
from ..core import codec
from ..core.messages import Deliver as DeliverMsg
from ..core.messages import RoomJoin, RoomSay
from . import keys as K
from .link import PUB, SAID_TTL_MS
from .messages import (
    Call,
    LinkDown,
    Reply,
    Resync,
    RoomEvent,
    SayDone,
    SaySend,
    Subscribe,
    Unsubscribe,
)
from .mirror import (
    LOCAL,
    WAITING,
    Ack,
    Announce,
    Deliver,
    LocalSay,
    Recheck,
    Refuse,
    Rejoin,
    RoomMirror,
    SendSay,
)
from .mirror import Resync as ResyncFx

__all__ = ["RedisRoomPort", "FIRST_SNAPSHOT_WAIT"]

log = logging.getLogger("hubbub.cluster")

FIRST_SNAPSHOT_WAIT = 2.0
"""Seconds a new room holds joins and says for its first snapshot."""
LOCAL_ROOMS = True
"""A room whose members are all on one node is numbered by that node under a lease
(docs/cluster.md "Rooms on one node"): its says never wait for Redis."""
UNAVAILABLE = (
    "the cluster cannot order messages in this room right now (Redis is unreachable); not sent"
)


@dataclass(frozen=True, slots=True)
class _Expire:
    """Say ``n`` or the held joins waited long enough for the first snapshot."""

    n: int | None
    """The say, or None for the held joins."""


@dataclass(frozen=True, slots=True)
class _Recheck:
    """Time to look at the members missing from a snapshot again."""


@dataclass(frozen=True, slots=True)
class _LeaseCheck:
    """Redis has been away as long as a heartbeat lives: may this node still number?"""


@dataclass(frozen=True, slots=True)
class _Retry:
    """Still waiting for another node to hand the room over: look again."""


_MINE = (RoomEvent, Resync, Reply, SayDone, LinkDown, _Expire, _Recheck, _LeaseCheck, _Retry)


class RedisRoomPort:
    """One room's sequencer (Redis) and mirror (see the module docstring)."""

    def __init__(self, link: Any, node_id: str, grace: float, room_ttl_ms: int) -> None:
        self.link = link
        """The link's ref (ClusterActor)."""
        self.node_id = node_id
        self.prefix = f"{node_id}/"
        self.node_rooms = K.node_rooms(node_id)
        self.grace = grace
        self.room_ttl_ms = room_ttl_ms
        self.room: Any = None
        self.mirror: RoomMirror
        self.says: dict[int, RoomSay] = {}
        self._n = 0
        self._sync_no = 0
        self._held: list[RoomJoin] = []
        self._listed = False
        self._dead = ""
        """A lease holder whose heartbeat the link found gone (the next snapshot takes over)."""

    # --- the room's side ------------------------------------------------------------

    def attach(self, room: Any) -> None:
        self.room = room
        self.name = room.name
        self.keys = K.room_keys(room.name)
        self.channel = K.room_channel(room.name)
        self.tag = secrets.token_hex(4).encode()
        self.mirror = RoomMirror(self.prefix, self.tag, room.history, self.grace)
        tell(self.link, Subscribe(self.channel, room.actor_ref))
        gevent.spawn_later(FIRST_SNAPSHOT_WAIT, tell, room.actor_ref, _Expire(None))

    def detach(self) -> None:
        m = self.mirror
        if m.leased:  # after its appends, on the same stream: Redis numbers this room again
            meta, _members, history = self.keys
            tell(
                self.link,
                SaySend(
                    (
                        meta,
                        history,
                        self.node_id,
                        PUB,
                        self.channel,
                        m.history.last_seq,
                        secrets.token_hex(6),
                    ),
                    self.room.actor_ref,
                    0,
                    "unlease",
                ),
            )
        tell(self.link, Unsubscribe(self.channel, self.room.actor_ref))
        if self._listed:
            tell(self.link, Call("cmd", (), ("SREM", self.node_rooms, self.name)))

    def describe(self) -> dict[str, Any]:
        m = self.mirror
        return {
            "cluster_members": len(m.roster),
            "synced": m.authoritative,
            "mode": m.state,
            "epoch": m.epoch,
        }

    def accepts(self, message: Any) -> bool:
        return isinstance(message, _MINE)

    def receive(self, message: Any) -> None:
        kind = type(message)
        m = self.mirror
        if kind is RoomEvent:
            self._apply(m.event(message.data, json.loads))
        elif kind is SayDone:
            if message.n < 0:  # a write-behind (its seq, negated)
                self._apply(m.appended(-message.n, message.reply))
            elif message.n > 0:
                self._apply(m.said(message.n, message.reply))
        elif kind is Resync:
            self._sync()
        elif kind is Reply:
            self._synced(message)
        elif kind is LinkDown:
            self._apply(m.link_down())
            if m.state == LOCAL:  # numbering goes on for as long as this node's heartbeat lives
                gevent.spawn_later(self.grace * 2 / 3, tell, self.room.actor_ref, _LeaseCheck())
            self._release_held()
        elif kind is _LeaseCheck:
            self._apply(m.lease_expired())
        elif kind is _Retry:
            if m.state == WAITING:
                self._sync()
        elif kind is _Expire:
            if message.n is None:
                self._release_held()
            else:
                self._apply(m.expired(message.n))
        elif kind is _Recheck:
            self._apply(m.recheck(self.room.clock.monotonic()))

    def say(self, msg: RoomSay) -> None:
        self._n += 1
        n = self._n
        self.says[n] = msg
        effects = self.mirror.say(n)
        if n in self.mirror.says:  # queued for the first snapshot: bounded
            gevent.spawn_later(FIRST_SNAPSHOT_WAIT, tell, self.room.actor_ref, _Expire(n))
        self._apply(effects)

    def join(self, msg: RoomJoin) -> None:
        m = self.mirror
        if (m.state == "syncing" and not m.told) or m.state == WAITING:
            # The first snapshot, or the lease holder's handover, is on its way (bounded).
            if not self._held and m.told:
                gevent.spawn_later(FIRST_SNAPSHOT_WAIT, tell, self.room.actor_ref, _Expire(None))
            self._held.append(msg)
            return
        self._join(msg)

    def left(self, session: str, nick: str) -> None:
        member = self.prefix + session
        if self.mirror.synced:
            self._presence("l", member, nick)  # everyone, this node too, hears it on the channel
        else:
            if self.mirror.state == LOCAL:
                self._presence("l", member, nick)  # Redis keeps the members; the room tells here
            self.mirror.left(member)
            self.room.announce("leave", nick)

    def renamed(self, session: str, old: str, new: str) -> None:
        member = self.prefix + session
        if self.mirror.synced:
            self._presence("r", member, new)
        else:
            if self.mirror.state == LOCAL:
                self._presence("r", member, new)
            self.mirror.renamed(member, new)
            self.room.announce("leave", old, skip=session)
            self.room.announce("join", new, skip=session)

    # --- internals ------------------------------------------------------------------

    def _join(self, msg: RoomJoin) -> None:
        room, m = self.room, self.mirror
        fresh = msg.session not in room.members
        room.members[msg.session] = (msg.user, msg.nick)
        member = self.prefix + msg.session
        if not self._listed:
            self._listed = True  # where the node has members: a burial finds them here
            tell(self.link, Call("cmd", (), ("SADD", self.node_rooms, self.name)))
        if m.synced or m.state == LOCAL:
            # Synchronised, the others (and this node's members) hear of it when its
            # event comes back: the roster follows the channel.  A lease holder tells
            # its members itself (below) and ignores the channel.
            self._presence("j", member, msg.nick)
        nicks, history, complete = m.joined(member, msg.nick, msg.since, msg.epoch)
        room.send_joined(msg, nicks, history, complete, m.epoch)
        if fresh and not m.synced:
            room.announce("join", msg.nick, skip=msg.session)

    def _release_held(self) -> None:
        held, self._held = self._held, []
        for msg in held:
            self._join(msg)

    def _presence(self, op: str, member: str, nick: str) -> None:
        meta, members, history = self.keys
        tell(
            self.link,
            Call(
                "presence",
                (meta, members, history),
                (self.channel, op, member, nick, PUB, self.room_ttl_ms),
            ),
        )

    def _sync(self) -> None:
        self.mirror.link_up()
        self._sync_no += 1
        room = self.room
        # Members waiting for this snapshot count too: a lease holder hands over only
        # when it sees another node's member.
        mine = [x for member, nick in self._here().items() for x in (member, nick)]
        meta, members, history = self.keys
        m = self.mirror
        flush = (
            [codec.encode(f) for f in m.history.recent() if f["seq"] > m.flushed]
            if m.leased
            else []
        )
        want = LOCAL_ROOMS and "unknown" not in m.says.values()
        tell(
            self.link,
            Call(
                "sync",
                (meta, members, history),
                (
                    self.channel,
                    self.prefix,
                    m.history.last_seq,
                    m.epoch or "",
                    secrets.token_hex(6),
                    PUB,
                    self.node_id,
                    self._dead,
                    "1" if want else "0",
                    len(flush),
                    *flush,
                    *mine,
                ),
                reply_to=room.actor_ref,
                token=("sync", self._sync_no),
            ),
        )

    def _synced(self, reply: Reply) -> None:
        if reply.token[0] == "holder":
            if reply.value == 0 and self.mirror.state == WAITING:
                self._dead = reply.token[1]  # gone: take the room over (a new epoch)
                self._sync()
            return
        if reply.token != ("sync", self._sync_no):
            return  # an older snapshot: a newer one is coming
        value = reply.value
        if isinstance(value, BaseException):
            if getattr(value, "script_error", False):
                log.error("cluster: room %s: snapshot refused by Redis: %s", self.name, value)
            return  # the link went down and says so; the next Resync tries again
        ev, seq, flat, raw_frames, epoch, mode, holder = value
        roster = {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}
        frames = [(raw, json.loads(raw)) for raw in raw_frames]
        self._apply(
            self.mirror.snapshot(
                int(ev),
                int(seq),
                roster,
                frames,
                epoch.decode(),
                self.room.clock.monotonic(),
                mode.decode(),
            )
        )
        self._dead = ""
        if (
            self.mirror.state == WAITING
        ):  # until the holder hands over, or dies (then the lease is void)
            # Is the holder alive?  Its heartbeat key says (a separate command: another slot).
            tell(
                self.link,
                Call(
                    "cmd",
                    (),
                    ("EXISTS", K.node_key(holder.decode())),
                    reply_to=self.room.actor_ref,
                    token=("holder", holder.decode()),
                ),
            )
            gevent.spawn_later(max(0.05, self.grace / 6), tell, self.room.actor_ref, _Retry())
        self._own_members()
        if self.mirror.state != WAITING:
            self._release_held()

    def _own_members(self) -> None:
        """Members who joined or left here while the snapshot was on its way: tell Redis."""
        roster = self.mirror.roster
        here = self._here()
        for member, nick in here.items():
            if roster.get(member) != nick:
                op = "r" if member in roster else "j"
                roster[member] = nick  # its event will change nothing: no second presence
                self._presence(op, member, nick)
        for member, nick in list(roster.items()):
            if member.startswith(self.prefix) and member not in here:
                del roster[member]
                self._presence("l", member, nick)

    def _here(self) -> dict[str, str]:
        """member → nick of this node's members, those whose join waits included."""
        here = {self.prefix + s: nick for s, (_ref, nick) in self.room.members.items()}
        here.update((self.prefix + j.session, j.nick) for j in self._held)
        return here

    def _apply(self, effects: list[Any]) -> None:
        room = self.room
        room.history = self.mirror.history  # the mirror's: a snapshot may replace it
        for fx in effects:
            kind = type(fx)
            if kind is Deliver:
                room.deliver(fx.frame, fx.raw, recorded=True)
            elif kind is Announce:
                room.announce(fx.event, fx.nick, fx.skip)
            elif kind is Ack:
                say = self.says.pop(fx.n, None)
                if say is not None:
                    room.ack(say, fx.seq)
            elif kind is SendSay:
                self._send(fx.n)
            elif kind is LocalSay:
                self._local_say(fx.n)
            elif kind is Refuse:
                say = self.says.pop(fx.n, None)
                if say is not None:
                    room.refuse(say, "unavailable", UNAVAILABLE)
            elif kind is Rejoin:
                self._rejoin(fx.after)
            elif kind is ResyncFx:
                self._sync()
            elif kind is Recheck:
                wait = max(0.01, fx.at - room.clock.monotonic())
                gevent.spawn_later(wait, tell, room.actor_ref, _Recheck())

    def _send(self, n: int) -> None:
        say = self.says[n]
        frame = codec.encode(codec.message(self.name, say.nick, say.text, 0, say.ts))
        # Redis puts the seq in: split the encoded frame around it (a quote inside a
        # string is escaped, so '"seq":0' occurs only as the key).
        head, _, tail = frame.rpartition(b'"seq":0')
        meta, _members, history = self.keys
        tag = b"%s:%d" % (self.tag, n)
        tell(
            self.link,
            SaySend(
                (
                    meta,
                    history,
                    K.said_key(self.name, tag),
                    self.channel,
                    head + b'"seq":',
                    tail,
                    self.mirror.history.keep,
                    tag,
                    self.mirror.epoch or "",
                    SAID_TTL_MS,
                    PUB,
                ),
                self.room.actor_ref,
                n,
            ),
        )

    def _local_say(self, n: int) -> None:
        """This node holds the lease: number it here, ack, deliver, and write it behind."""
        say = self.says.pop(n)
        room, m = self.room, self.mirror
        frame = codec.message(self.name, say.nick, say.text, 0, say.ts)
        seq = m.number(frame)
        raw = codec.encode(frame)
        room.ack(say, seq)
        room.deliver(frame, raw, recorded=True)
        meta, _members, history = self.keys
        tell(
            self.link,
            SaySend(
                (meta, history, self.node_id, m.epoch or "", seq, raw, m.history.keep),
                room.actor_ref,
                -seq,
                "append",
            ),
        )

    def _rejoin(self, after: int | None) -> None:
        """Every member here starts its view of the room over (a new epoch, or a gap)."""
        room, m = self.room, self.mirror
        nicks = sorted({*m.roster.values(), *(nick for _ref, nick in room.members.values())})
        history = [f for f in m.history.recent() if after is None or f["seq"] > after]
        payload = codec.encode(codec.joined(self.name, nicks, history, False, m.epoch))
        for session, (ref, _nick) in room.members.items():
            room.reply(session, ref, payload, DeliverMsg(payload))
