"""Every frame format of the chat protocol, in one file.

Client frames are decoded into frozen dataclasses; anything malformed raises
:class:`DecodeError` carrying the contract's error code.  Server frames are built
by the small functions at the bottom and encoded once (:func:`encode`): a room
hands the same bytes to every member.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PROTOCOL_VERSION",
    "NAME_RE",
    "DecodeError",
    "ClientMessage",
    "Hello",
    "Profile",
    "Join",
    "Leave",
    "Say",
    "Dm",
    "Pong",
    "Ping",
    "Bye",
    "decode",
    "encode",
    "valid_name",
]

PROTOCOL_VERSION = 1

# Nicks and room names: 1-32 ASCII letters, digits, `_`, `-`.  ASCII only on
# purpose: Unicode letters would allow look-alike nicks ("аlice" with a Cyrillic a).
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,32}\Z")


def valid_name(value: object) -> bool:
    return isinstance(value, str) and NAME_RE.match(value) is not None


class DecodeError(Exception):
    """A client frame the server cannot accept; ``code`` is the contract's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Hello:
    client: str | None = None
    """Free-form client name and version, for logs."""


@dataclass(frozen=True, slots=True)
class Profile:
    nick: str
    """Unique display name (NAME_RE)."""
    info: dict[str, Any] | None = None
    """Optional free-form profile data."""


@dataclass(frozen=True, slots=True)
class Join:
    room: str
    """Room name (NAME_RE)."""
    since: int | None = None
    """Last `seq` the client saw in this room: recover what came after."""
    epoch: str | None = None
    """The room's `epoch` the client's `since` belongs to (a cluster's rooms have one)."""


@dataclass(frozen=True, slots=True)
class Leave:
    room: str
    """Room name."""


@dataclass(frozen=True, slots=True)
class Say:
    room: str
    """Room the sender is a member of."""
    text: str
    """Message body."""
    id: str | None = None
    """Client's id, echoed in the `ack`."""


@dataclass(frozen=True, slots=True)
class Dm:
    to: str
    """Target nick."""
    text: str
    """Message body."""
    id: str | None = None
    """Client's id, echoed in the `ack` (extension: the contract's dm has no id)."""


@dataclass(frozen=True, slots=True)
class Pong:
    """Answer to the server's `ping` (any payload)."""


@dataclass(frozen=True, slots=True)
class Ping:
    """The client checks the server is alive; answered with `pong`."""


@dataclass(frozen=True, slots=True)
class Bye:
    """The client leaves; the server closes with 1000."""


ClientMessage = Hello | Profile | Join | Leave | Say | Dm | Pong | Ping | Bye


def _utf8(value: str, key: str) -> str:
    # JSON may escape a lone surrogate ("\ud800"): a str Python accepts but UTF-8
    # cannot carry, so echoing it back would fail in every recipient's encoder.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DecodeError("bad_message", f"`{key}` is not valid Unicode (lone surrogate)") from None
    return value


def _opt_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise DecodeError("bad_message", f"`{key}` must be a string")
    return value if value is None else _utf8(value, key)


def _name(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise DecodeError("bad_message", f"`{key}` must be a string")
    if not NAME_RE.match(value):
        raise DecodeError(
            "bad_message", f"`{key}` must be 1-32 letters, digits, '_' or '-'"
        )
    return value


def _text(obj: dict[str, Any]) -> str:
    value = obj.get("text")
    if not isinstance(value, str) or not value:
        raise DecodeError("bad_message", "`text` must be a non-empty string")
    return _utf8(value, "text")


def _hello(o: dict[str, Any]) -> Hello:
    return Hello(_opt_str(o, "client"))


def _profile(o: dict[str, Any]) -> Profile:
    nick = o.get("nick")
    if not isinstance(nick, str):
        raise DecodeError("bad_message", "`nick` must be a string")
    if not NAME_RE.match(nick):
        raise DecodeError("bad_nick", "a nick is 1-32 letters, digits, '_' or '-'")
    info = o.get("info")
    if info is not None and not isinstance(info, dict):
        raise DecodeError("bad_message", "`info` must be an object")
    return Profile(nick, info)


def _join(o: dict[str, Any]) -> Join:
    since = o.get("since")
    # bool is an int subclass in Python; `true` is not a sequence number.
    if since is not None and (type(since) is not int or since < 0):
        raise DecodeError("bad_message", "`since` must be a non-negative integer")
    epoch = o.get("epoch")
    if epoch is not None and not isinstance(epoch, str):
        raise DecodeError("bad_message", "`epoch` must be a string")
    return Join(_name(o, "room"), since, epoch)


_DECODERS: dict[str, Callable[[dict[str, Any]], ClientMessage]] = {
    "hello": _hello,
    "profile": _profile,
    "join": _join,
    "leave": lambda o: Leave(_name(o, "room")),
    "say": lambda o: Say(_name(o, "room"), _text(o), _opt_str(o, "id")),
    "dm": lambda o: Dm(_name(o, "to"), _text(o), _opt_str(o, "id")),
    "pong": lambda o: Pong(),
    "ping": lambda o: Ping(),
    "bye": lambda o: Bye(),
}


def decode(text: str | bytes) -> ClientMessage:
    """One client frame → one message; raises DecodeError (bad_json / bad_message / bad_nick)."""
    if not isinstance(text, str):
        raise DecodeError("bad_message", "binary frames are not part of the protocol")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise DecodeError("bad_json", "the frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise DecodeError("bad_message", "a frame must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise DecodeError("bad_message", "`type` must be a string")
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise DecodeError("bad_message", f"unknown type {kind[:40]!r}")
    return decoder(obj)


def message_type(msg: ClientMessage) -> str:
    """The wire name of a decoded message ("hello", "say", ...)."""
    return type(msg).__name__.lower()


# --- server → client ------------------------------------------------------------

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode(frame: dict[str, Any]) -> bytes:
    """A server frame as UTF-8 JSON bytes, ready for a text frame."""
    return _dumps(frame).encode()


def welcome(session: str, timeouts: dict[str, float]) -> dict[str, Any]:
    return {"type": "welcome", "protocol": PROTOCOL_VERSION, "session": session, "timeouts": timeouts}


def profile_ok(nick: str) -> dict[str, Any]:
    return {"type": "profile_ok", "nick": nick}


def joined(room: str, members: list[str], history: list[dict[str, Any]], complete: bool,
           epoch: str | None = None) -> dict[str, Any]:
    frame = {"type": "joined", "room": room, "members": members, "history": history, "complete": complete}
    if epoch is not None:  # a cluster's rooms only (docs/protocol.md "Epochs")
        frame["epoch"] = epoch
    return frame


def left(room: str) -> dict[str, Any]:
    return {"type": "left", "room": room}


def presence(room: str, event: str, nick: str) -> dict[str, Any]:
    return {"type": "presence", "room": room, "event": event, "nick": nick}


def message(room: str, sender: str, text: str, seq: int, ts: float) -> dict[str, Any]:
    return {"type": "message", "room": room, "from": sender, "text": text, "seq": seq, "ts": ts}


def dm(sender: str, text: str, ts: float) -> dict[str, Any]:
    return {"type": "dm", "from": sender, "text": text, "ts": ts}


def ack(client_id: str | None, seq: int | None) -> dict[str, Any]:
    return {"type": "ack", "id": client_id, "seq": seq}


def ping(ts: float) -> dict[str, Any]:
    return {"type": "ping", "ts": ts}


def pong(ts: float) -> dict[str, Any]:
    return {"type": "pong", "ts": ts}


def error(code: str, text: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": text}


def bye(reason: str, detail: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "bye", "reason": reason}
    if detail:
        frame["message"] = detail
    return frame
