"""The cluster's messages between the link, the directory and the rooms (immutable)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "Call",
    "ClusterUp",
    "LinkDown",
    "NodeEvent",
    "Reclaim",
    "Reply",
    "Resync",
    "RoomEvent",
    "Subscribe",
    "Unsubscribe",
    "SaySend",
    "SayDone",
]


@dataclass(frozen=True, slots=True)
class Subscribe:
    """A room wants its channel's events (into the link).  The link answers ``Resync``
    once Redis confirmed the subscription, and again after every reconnection."""

    channel: bytes
    """``hubbub:{r:<room>}``."""
    room: Any
    """The RoomActor's ref."""


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """A retiring room no longer wants its channel (into the link)."""

    channel: bytes
    """The channel."""
    room: Any
    """The ref that subscribed (a newer room of the same name keeps the channel)."""


@dataclass(frozen=True, slots=True)
class Call:
    """Run one script (into the link): it runs in a greenlet of its own, never in the
    link's mailbox, and the answer comes back as ``Reply`` (if ``reply_to``)."""

    script: str
    """The script's name (a ``lua/<name>.lua`` file)."""
    keys: tuple[Any, ...]
    """KEYS (all in one hash slot)."""
    args: tuple[Any, ...]
    """ARGV."""
    reply_to: Any = None
    """Who gets the Reply (None: nobody waits)."""
    token: Any = None
    """Echoed in the Reply."""
    live: bool = False
    """Append the live nodes to ARGV (claims, dms, kicks)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to a ``Call``."""

    token: Any
    """As in the Call."""
    value: Any
    """The script's answer, or the exception (``script_error`` set when Redis ran and refused it)."""


@dataclass(frozen=True, slots=True)
class SaySend:
    """A script for the pipelined command stream (into the link): a say, or a leased
    room's write-behind (``append``) and release (``unlease``), in the room's order."""

    args: tuple[Any, ...]
    """KEYS (the first: the room's meta, which picks the shard) then ARGV."""
    room: Any
    """Who gets SayDone."""
    n: int
    """The room's number for it (echoed in SayDone)."""
    script: str = "say"
    """say (3 keys), append or unlease (2 keys)."""


@dataclass(frozen=True, slots=True)
class SayDone:
    """Redis answered a say (into the room)."""

    n: int
    """The room's number for the say."""
    reply: Any
    """``[status, seq]``, or the exception."""


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """One event from the room's channel (into the room)."""

    data: bytes
    """As published: ``M<ev> <seq> <tag> <frame>``, ``P<ev> j|l <member> <nick>``, ``R<ev> ...``."""


@dataclass(frozen=True, slots=True)
class Resync:
    """The room's channel is subscribed (again): take a snapshot (into the room)."""


@dataclass(frozen=True, slots=True)
class LinkDown:
    """Redis is unreachable (into every room and the directory)."""


@dataclass(frozen=True, slots=True)
class NodeEvent:
    """One message from this node's channel (into the directory)."""

    data: bytes
    """``D<session> <dm frame>`` or ``K<session> <reason>``."""


@dataclass(frozen=True, slots=True)
class ClusterUp:
    """Redis is (back) up: claim this node's nicks again (into the directory)."""


@dataclass(frozen=True, slots=True)
class Reclaim:
    """This node's nicks are exactly these (into the link, after ClusterUp)."""

    owners: dict[str, str]
    """nick → owner (``<node>/<session>``)."""
    directory: Any
    """Who gets ``Reply("reclaim", [lost nicks])``."""
