"""Redis key and channel names.  Hash tags put each room's keys in one slot, each
nick's key in one, and each node's in one (Redis Cluster: a script touches one slot)."""

from __future__ import annotations

__all__ = [
    "NODES",
    "node_channel",
    "node_key",
    "node_nicks",
    "node_rooms",
    "nick_key",
    "room_channel",
    "room_keys",
    "said_key",
]

NODES = "hubbub:nodes"
"""Set: ids of nodes that registered."""


def room_keys(room: str) -> tuple[str, str, str]:
    """(meta, members, history) of a room: ``meta`` holds seq, ev and epoch."""
    base = f"hubbub:{{r:{room}}}"
    return f"{base}:meta", f"{base}:members", f"{base}:history"


def said_key(room: str, tag: bytes) -> bytes:
    """A say's idempotency key (``<room tag>:<n>``): a repeat gets the first seq."""
    return f"hubbub:{{r:{room}}}:said:".encode() + tag


def room_channel(room: str) -> bytes:
    return f"hubbub:{{r:{room}}}".encode()


def nick_key(nick: str) -> str:
    return f"hubbub:{{n:{nick}}}"


def node_key(node: str) -> str:
    """The heartbeat (expires 2/3 of the node TTL after the last beat)."""
    return f"hubbub:{{node:{node}}}"


def node_channel(node: str) -> bytes:
    return node_key(node).encode()


def node_nicks(node: str) -> str:
    return f"hubbub:{{node:{node}}}:nicks"


def node_rooms(node: str) -> str:
    return f"hubbub:{{node:{node}}}:rooms"
