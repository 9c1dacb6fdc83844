"""The cluster: several nodes, one chat, through Redis (``--redis URL``; docs/cluster.md).

A package of ports around the single-node actors:

* ``link.py`` — :class:`ClusterActor`, the only place that talks to Redis; it answers
  with messages, so no Redis call ever blocks an actor's mailbox;
* ``room.py`` — :class:`RedisRoomPort`, a room's sequencer (Redis) and the glue to
* ``mirror.py`` — :class:`RoomMirror`, the pure part: events in, effects out;
* ``directory.py`` — :class:`ClusterDirectoryActor`: nicks, dms and kicks across nodes;
* ``keys.py`` — key and channel names (hash-tagged: one slot per room, nick, node);
* ``lua/*.lua`` — the scripts, each touching the keys of one slot.
"""

from __future__ import annotations

from .directory import LOGIN_WAIT, ClusterDirectoryActor
from .link import (
    DEFAULT_NODE_TTL,
    DEFAULT_ROOM_TTL,
    STARTUP_WAIT,
    ClusterActor,
    Settings,
    parse_url,
)
from .mirror import RoomMirror
from .room import FIRST_SNAPSHOT_WAIT, RedisRoomPort

__all__ = [
    "ClusterActor",
    "ClusterDirectoryActor",
    "DEFAULT_NODE_TTL",
    "DEFAULT_ROOM_TTL",
    "FIRST_SNAPSHOT_WAIT",
    "LOGIN_WAIT",
    "RedisRoomPort",
    "RoomMirror",
    "STARTUP_WAIT",
    "Settings",
    "parse_url",
]
