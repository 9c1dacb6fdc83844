"""A cluster room's mirror of the room as Redis orders it: pure, events in, effects out.

Shaped like the session (actors/core/session.py): the port (room.py) feeds it what
happened (a snapshot arrived, an event came on the channel, Redis answered a say, the
link went down) with ``now``, and does what it returns.  No I/O, no clock, no actors:
tests/unit/test_cluster_mirror.py drives it on a fake clock.

The promise it keeps (docs/cluster.md "One order per room"): Redis is the only
sequencer, so a say goes to Redis or is refused (``unavailable``); every message is
delivered here once, in seq order, and only if newer than the last one delivered;
the history's ``epoch`` says which Redis history the seqs belong to, and a snapshot in
another epoch starts the members' view over (``Rejoin``) instead of mixing two orders.

A say's life: ``queued`` (waiting for the first snapshot, bounded by the port), ``sent``
(on the wire), ``unknown`` (the connection broke before the answer: Redis may have run
it).  An unknown say is sent again after the next snapshot with the same tag; the
script's idempotency key makes a repeat answer the first seq instead of running twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.history import RoomHistory

__all__ = [
    "Ack",
    "Announce",
    "Deliver",
    "LocalSay",
    "Refuse",
    "Rejoin",
    "Recheck",
    "Resync",
    "RoomMirror",
    "SendSay",
]


# --- effects ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deliver:
    """A message Redis numbered, already in the mirror's history: to every member here."""

    frame: dict[str, Any]
    """The `message` frame (with its seq)."""
    raw: bytes
    """Its encoding, as published (sent as is)."""


@dataclass(frozen=True, slots=True)
class Announce:
    """A `presence` change for the members here."""

    event: str
    """``join`` or ``leave``."""
    nick: str
    """Whose."""
    skip: str | None = None
    """A session of this node not told (its own join, leave or rename)."""


@dataclass(frozen=True, slots=True)
class Ack:
    """Say ``n`` has seq ``seq``: ack its sender."""

    n: int
    """The port's number for the say."""
    seq: int
    """Its seq."""


@dataclass(frozen=True, slots=True)
class Refuse:
    """Say ``n`` had no effect: tell its sender `error` ``unavailable``."""

    n: int
    """The port's number for the say."""


@dataclass(frozen=True, slots=True)
class SendSay:
    """Send say ``n`` to Redis (again, after a lost connection: same tag, idempotent)."""

    n: int
    """The port's number for the say."""


@dataclass(frozen=True, slots=True)
class LocalSay:
    """Number say ``n`` here (this node holds the room's lease), ack it, deliver it, and
    write it behind into Redis."""

    n: int
    """The port's number for the say."""


@dataclass(frozen=True, slots=True)
class Rejoin:
    """Every member here gets a fresh `joined` (``complete: false``): the room's history
    changed epoch (what they saw belongs to a history Redis lost), or has a gap."""

    after: int | None = None
    """Only history after this seq (a gap: what they saw before it stays valid)."""


@dataclass(frozen=True, slots=True)
class Resync:
    """Take a new snapshot (events went missing, or the epoch moved under a say)."""


@dataclass(frozen=True, slots=True)
class Recheck:
    """Call :meth:`RoomMirror.recheck` at ``at`` (members missing from a snapshot)."""

    at: float
    """Monotonic time."""


# --- the mirror ----------------------------------------------------------------------

DOWN, SYNCING, SYNCED, LOCAL, WAITING = "down", "syncing", "synced", "local", "waiting"
_MODES = {"shared": SYNCED, "local": LOCAL, "wait": WAITING}


class RoomMirror:
    """One room on one node, as Redis orders it (see the module docstring)."""

    def __init__(self, prefix: str, tag: bytes, history: RoomHistory, grace: float) -> None:
        self.prefix = prefix
        """``<node>/``: members of this node."""
        self.tag = tag
        """This room incarnation's mark on its says (``<tag>:<n>``)."""
        self.grace = grace
        """How long a member missing from a snapshot stays listed (the node TTL)."""
        self.history = history
        """What the members here were told, numbered by Redis (joins and `since` read it)."""
        self.epoch: str | None = None
        """The epoch of the history (None before the first snapshot)."""
        self.ev = 0
        """The last event of the channel applied here."""
        self.state = SYNCING
        """A new room waits for its first snapshot (the port bounds the wait)."""
        self.roster: dict[str, str] = {}
        """member → nick: the whole cluster's members as this room last heard."""
        self.told = False
        """Members here were told who is in the room (a snapshot must announce changes)."""
        self.suspects: dict[str, float] = {}
        """member → deadline: missing from the last snapshot, maybe only late."""
        self.says: dict[int, str] = {}
        """n → queued | sent | unknown."""
        self.link = True
        """The link is up (as last told)."""
        self.leased = False
        """This node held the room's lease at the last snapshot (its messages may need flushing)."""
        self.flushed = 0
        """While leased: the last seq Redis confirmed having (append.lua)."""
        self.asked = False
        """Another node asked for the lease while a snapshot was on its way."""
        self.handing = False
        """Asked for the lease: says wait; the snapshot that hands over is taken once Redis
        has every message numbered here (the history may not keep them all)."""

    @property
    def synced(self) -> bool:
        """Redis numbers the messages and the channel is trusted."""
        return self.state == SYNCED

    @property
    def authoritative(self) -> bool:
        """The history here misses nothing (Redis's, or this node's own as lease holder)."""
        return self.state in (SYNCED, LOCAL)

    # --- the link ------------------------------------------------------------------

    def link_up(self) -> None:
        """The channel is subscribed: a snapshot is on its way."""
        self.link = True
        self.state = SYNCING
        self.handing = False

    def link_down(self) -> list[Any]:
        """The link lost Redis: nothing from the channel is trusted until the next snapshot.

        A lease holder goes on numbering its room (nobody else may while its heartbeat
        lives: the port ends that with :meth:`lease_expired`)."""
        self.link = False
        if self.state == LOCAL:
            return []
        self.state = DOWN
        out: list[Any] = []
        for n, state in list(self.says.items()):
            if state == "queued":  # never reached Redis: refusing is the truth
                del self.says[n]
                out.append(Refuse(n))
            else:
                self.says[n] = "unknown"
        return out

    def lease_expired(self) -> list[Any]:
        """Redis stayed away as long as a heartbeat lives: the others may have given this
        node up and taken the room over; numbering here must stop."""
        if self.state == LOCAL and not self.link:
            self.state = DOWN
        return []

    # --- says ----------------------------------------------------------------------

    def say(self, n: int) -> list[Any]:
        if self.state == SYNCED:
            self.says[n] = "sent"
            return [SendSay(n)]
        if self.state == LOCAL:
            return [LocalSay(n)]
        if self.state in (SYNCING, WAITING):
            self.says[n] = "queued"
            return []
        return [Refuse(n)]

    def number(self, frame: dict[str, Any]) -> int:
        """A lease holder's say: the next seq, kept in the history."""
        frame["seq"] = self.history.last_seq + 1
        self.history.record(frame)
        return frame["seq"]

    def appended(self, seq: int, reply: Any) -> list[Any]:
        """Redis's answer to a write-behind."""
        if isinstance(reply, BaseException):
            if getattr(reply, "script_error", False) and self.state == LOCAL:
                self.state = SYNCING
                return [Resync()]
            return []
        if int(reply) >= 0:
            self.flushed = max(self.flushed, seq)
            if self.handing and self.flushed >= self.history.last_seq:
                self.handing = False
                return [Resync()]
            return []
        if self.state == LOCAL:  # the lease is gone, or one went missing: a snapshot sorts it out
            self.state = SYNCING
            return [Resync()]
        return []

    def expired(self, n: int) -> list[Any]:
        """Say ``n`` waited too long for the first snapshot."""
        if self.says.get(n) == "queued":
            del self.says[n]
            return [Refuse(n)]
        return []

    def said(self, n: int, reply: Any) -> list[Any]:
        """Redis's answer to say ``n``: ``[status, seq]``, or an exception."""
        state = self.says.get(n)
        if state is None:
            return []  # acked already, when the message came back on the channel
        if isinstance(reply, BaseException):
            if getattr(reply, "script_error", False):
                del self.says[n]  # Redis refused the script: it did not run
                return [Refuse(n)]
            return []  # the connection broke: LinkDown follows and makes it unknown
        status, seq = int(reply[0]), int(reply[1])
        if status < 0:
            # The room's epoch in Redis is not ours (Redis lost it): not run; try again
            # after a snapshot in the new epoch.
            self.says[n] = "queued"
            self.state = SYNCING
            return [Resync()]
        del self.says[n]
        return [Ack(n, seq)]

    # --- the snapshot --------------------------------------------------------------

    def snapshot(
        self,
        ev: int,
        seq: int,
        roster: dict[str, str],
        frames: list[tuple[bytes, dict[str, Any]]],
        epoch: str,
        now: float,
        mode: str = "shared",
    ) -> list[Any]:
        out: list[Any] = []
        if self.told:
            # (After a new epoch the fresh `joined` lists the members: no presence then.)
            roster = self._reconcile(roster, now, out if epoch == self.epoch else [])
        kept_from = frames[0][1]["seq"] if frames else seq + 1
        gap = self.told and seq > self.history.last_seq and kept_from > self.history.last_seq + 1
        new_epoch = self.epoch is not None and epoch != self.epoch
        if new_epoch or gap:
            # Redis lost the history the members here saw (another epoch), or more was
            # said while this room was not listening than Redis keeps (a gap it cannot
            # fill): start their view over rather than skip messages silently.
            after = None if new_epoch else self.history.last_seq
            self.history = self.history.replaced(seq, [f for _raw, f in frames])
            self.roster = roster
            out.append(Rejoin(after))
        else:
            for raw, frame in frames:
                if frame["seq"] > self.history.last_seq:  # said while this room was not listening
                    self.history.record(frame)
                    out.append(Deliver(frame, raw))
            self.history = self.history.merged(seq, [f for _raw, f in frames])
            self.roster = roster
        self.epoch, self.ev, self.state, self.told = epoch, ev, _MODES[mode], True
        self.leased = self.state == LOCAL
        if self.leased:
            self.flushed = seq
        if self.asked and self.state == LOCAL:
            self.state = SYNCING  # asked to hand over meanwhile
            out.extend(self._hand_over())
        self.asked = False
        for n, state in list(self.says.items()):
            if self.state == SYNCED:
                self.says[n] = "sent"
                out.append(SendSay(n))
            elif self.state == LOCAL and state == "queued":
                del self.says[n]
                out.append(LocalSay(n))
        if self.suspects:
            out.append(Recheck(min(self.suspects.values())))
        return out

    def _reconcile(self, roster: dict[str, str], now: float, out: list[Any]) -> dict[str, str]:
        """Announce how the others changed while the room was not listening.

        A member missing from the snapshot may only be late: after a Redis restart every
        node puts its own members back when it resynchronises, in no particular order.
        So it stays listed for the grace time and is told as gone only if it has not come
        back by then (the same bound as for the users of a dead node).
        """
        old = self.roster
        for member, nick in roster.items():
            self.suspects.pop(member, None)
            if member.startswith(self.prefix):
                continue  # this node's members: the room's own view is the truth
            before = old.get(member)
            if before != nick:
                if before is not None:
                    out.append(Announce("leave", before))
                out.append(Announce("join", nick))
        missing = {
            m: nick for m, nick in old.items() if m not in roster and not m.startswith(self.prefix)
        }
        for member in missing:
            self.suspects.setdefault(member, now + self.grace)
        return {**roster, **missing}

    def _hand_over(self) -> list[Any]:
        """Hand the lease over once Redis has every message numbered here."""
        if self.flushed >= self.history.last_seq:
            return [Resync()]
        self.handing = True
        return []

    def recheck(self, now: float) -> list[Any]:
        """Members missing since a snapshot that did not come back in time are gone."""
        out: list[Any] = []
        for member, deadline in list(self.suspects.items()):
            if deadline <= now:
                del self.suspects[member]
                nick = self.roster.pop(member, None)
                if nick is not None:
                    out.append(Announce("leave", nick))
        if self.suspects:
            out.append(Recheck(min(self.suspects.values())))
        return out

    # --- the channel ---------------------------------------------------------------

    def event(self, data: bytes, decode: Any) -> list[Any]:
        """One event from the room's channel (``decode``: bytes → frame dict)."""
        kind = data[:1]
        if kind == b"H" and self.state in (LOCAL, SYNCING):
            if self.state == SYNCING:
                self.asked = True  # the snapshot on its way may give this node the lease
                return []
            self.state = SYNCING  # another node's member came: says wait from now on
            return self._hand_over()
        if self.state == WAITING and kind == b"S":
            self.state = SYNCING  # the lease holder handed over: Redis numbers from now on
            return [Resync()]
        if self.state != SYNCED:
            return []  # the next snapshot covers it
        head, _, rest = data.partition(b" ")
        ev = int(head[1:])
        if ev <= self.ev:
            return []  # in the snapshot already
        if ev != self.ev + 1:
            self.state = SYNCING  # events went missing: start over from a snapshot
            return [Resync()]
        self.ev = ev
        kind = head[:1]
        out: list[Any] = []
        if kind == b"M":
            seq_text, _, rest = rest.partition(b" ")
            tag, _, payload = rest.partition(b" ")
            seq = int(seq_text)
            mine, _, n = tag.partition(b":")
            if mine == self.tag and self.says.pop(int(n), None) is not None:
                out.append(Ack(int(n), seq))  # ahead of the message: the sender sees its ack first
            if seq > self.history.last_seq:
                frame = decode(payload)
                self.history.record(frame)
                out.append(Deliver(frame, payload))
        # Presence is told only when it changes what this room's members were told: after
        # a resynchronisation the others re-register members everybody here knows.
        elif kind == b"P":
            op, member, nick = rest.decode().split(" ")
            self.suspects.pop(member, None)
            if op == "j":
                if self.roster.get(member) != nick:
                    self.roster[member] = nick
                    out.append(Announce("join", nick, self._local(member)))
            elif self.roster.pop(member, None) is not None:
                out.append(Announce("leave", nick, self._local(member)))
        elif kind == b"R":
            member, old, new = rest.decode().split(" ")
            if self.roster.get(member) != new:
                self.roster[member] = new
                skip = self._local(member)
                out.append(Announce("leave", old, skip))
                out.append(Announce("join", new, skip))
        return out

    def _local(self, member: str) -> str | None:
        return member[len(self.prefix) :] if member.startswith(self.prefix) else None

    # --- members of this node ------------------------------------------------------

    def joined(
        self, member: str, nick: str, since: int | None, epoch: str | None
    ) -> tuple[list[str], list[dict[str, Any]], bool]:
        """What a joiner of this node is told: (members, history, complete).

        ``complete`` is true only when nothing after ``since`` can be missing: the room
        is synchronised (a room that is not may have missed what others said), the
        client's ``since`` belongs to this epoch, and the history still keeps it all.
        """
        if not self.synced:
            self.roster[member] = nick  # the channel will not tell: set it here
        nicks = sorted({*self.roster.values(), nick})
        if since is None:
            return nicks, self.history.recent(), True
        if epoch is not None and epoch != self.epoch:
            return nicks, self.history.recent(), False
        history, complete = self.history.since(since)
        return nicks, history, complete and self.authoritative

    def left(self, member: str) -> None:
        """A member of this node left while the room is not synchronised."""
        self.roster.pop(member, None)

    def renamed(self, member: str, nick: str) -> None:
        """A member of this node was renamed while the room is not synchronised."""
        self.roster[member] = nick
