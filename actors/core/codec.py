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

from .budgets import Shape

__all__ = [
    "PROTOCOL_VERSION",
    "Shape",
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
    "History",
    "Ignore",
    "Unignore",
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
    info: bytes | None = None
    """Optional free-form profile data, checked against the Shape budget and kept as its
    compact JSON encoding: bytes, not a tree of Python objects (issue 15: a 63 KB frame of
    nested `{}` kept as dicts held 1.58 MB)."""
    token: str | None = None
    """A signed token (JWT) that proves the nick is the sender's (--auth-*)."""
    resume: str | None = None
    """The secret an earlier `profile_ok` gave: reclaims a nick held after a drop."""


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


@dataclass(frozen=True, slots=True)
class History:
    """One older page of a room's history (extension: `joined` may carry only the newest)."""

    room: str
    """Room the sender is a member of."""
    before: int | None = None
    """Only messages with a smaller seq (None: up to the newest)."""
    since: int | None = None
    """Only messages with a larger seq."""
    limit: int | None = None
    """At most this many messages (the page byte budget applies too)."""


@dataclass(frozen=True, slots=True)
class Ignore:
    """Stop receiving this nick's dms and room messages (extension)."""

    nick: str


@dataclass(frozen=True, slots=True)
class Unignore:
    """Undo an `ignore` (extension)."""

    nick: str


ClientMessage = (
    Hello | Profile | Join | Leave | Say | Dm | Pong | Ping | Bye | History | Ignore | Unignore
)


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
        raise DecodeError("bad_message", f"`{key}` must be 1-32 letters, digits, '_' or '-'")
    return value


def _text(obj: dict[str, Any]) -> str:
    value = obj.get("text")
    if not isinstance(value, str) or not value:
        raise DecodeError("bad_message", "`text` must be a non-empty string")
    return _utf8(value, "text")


def _hello(o: dict[str, Any], shape: Shape) -> Hello:
    client = _opt_str(o, "client")
    if client is not None and len(client) > shape.max_client:
        raise DecodeError("bad_message", f"`client` is longer than {shape.max_client} characters")
    return Hello(client)


def check_shape(value: Any, shape: Shape, key: str) -> bytes:
    """``value`` within the Shape budget, as compact JSON bytes; else DecodeError.

    Walks breadth-first with running totals, so a hostile value costs at most
    ``max_items`` steps before it is refused, whatever its size."""
    items = 0
    level: list[Any] = [value]
    for depth in range(1, shape.max_depth + 2):
        nxt: list[Any] = []
        for v in level:
            if isinstance(v, str):
                if len(v) > shape.max_string:
                    raise DecodeError(
                        "bad_message",
                        f"`{key}`: a string is longer than {shape.max_string} characters",
                    )
                _utf8(v, key)
            elif isinstance(v, (dict, list)):
                if depth > shape.max_depth:
                    raise DecodeError(
                        "bad_message", f"`{key}` is nested deeper than {shape.max_depth} levels"
                    )
                items += len(v)
                if items > shape.max_items:
                    raise DecodeError(
                        "bad_message", f"`{key}` has more than {shape.max_items} keys and items"
                    )
                if isinstance(v, dict):
                    nxt.extend(v.keys())
                    nxt.extend(v.values())
                else:
                    nxt.extend(v)
        if not nxt:
            break
        level = nxt
    data = _dumps(value).encode()
    if len(data) > shape.max_bytes:
        raise DecodeError("bad_message", f"`{key}` is larger than {shape.max_bytes} bytes as JSON")
    return data


def _profile(o: dict[str, Any], shape: Shape) -> Profile:
    nick = o.get("nick")
    if not isinstance(nick, str):
        raise DecodeError("bad_message", "`nick` must be a string")
    if not NAME_RE.match(nick):
        raise DecodeError("bad_nick", "a nick is 1-32 letters, digits, '_' or '-'")
    info = o.get("info")
    if info is not None and not isinstance(info, dict):
        raise DecodeError("bad_message", "`info` must be an object")
    token = _opt_str(o, "token")
    if token is not None and len(token) > 8192:
        raise DecodeError("bad_message", "`token` is longer than 8192 characters")
    resume = _opt_str(o, "resume")
    if resume is not None and len(resume) > 64:
        raise DecodeError("bad_message", "`resume` is longer than 64 characters")
    return Profile(nick, None if info is None else check_shape(info, shape, "info"), token, resume)


def _seq(o: dict[str, Any], key: str) -> int | None:
    value = o.get(key)
    # bool is an int subclass in Python; `true` is not a sequence number.
    if value is not None and (type(value) is not int or value < 0):
        raise DecodeError("bad_message", f"`{key}` must be a non-negative integer")
    return value


def _join(o: dict[str, Any], shape: Shape) -> Join:
    epoch = o.get("epoch")
    if epoch is not None and not isinstance(epoch, str):
        raise DecodeError("bad_message", "`epoch` must be a string")
    return Join(_name(o, "room"), _seq(o, "since"), epoch)


def _history(o: dict[str, Any], shape: Shape) -> History:
    limit = _seq(o, "limit")
    if limit == 0:
        raise DecodeError("bad_message", "`limit` must be at least 1")
    return History(_name(o, "room"), _seq(o, "before"), _seq(o, "since"), limit)


def _nick(o: dict[str, Any]) -> str:
    nick = o.get("nick")
    if not valid_name(nick):
        raise DecodeError("bad_nick", "a nick is 1-32 letters, digits, '_' or '-'")
    return nick  # type: ignore[return-value]


_DECODERS: dict[str, Callable[[dict[str, Any], Shape], ClientMessage]] = {
    "hello": _hello,
    "profile": _profile,
    "join": _join,
    "leave": lambda o, s: Leave(_name(o, "room")),
    "say": lambda o, s: Say(_name(o, "room"), _text(o), _opt_str(o, "id")),
    "dm": lambda o, s: Dm(_name(o, "to"), _text(o), _opt_str(o, "id")),
    "pong": lambda o, s: Pong(),
    "ping": lambda o, s: Ping(),
    "bye": lambda o, s: Bye(),
    "history": _history,
    "ignore": lambda o, s: Ignore(_nick(o)),
    "unignore": lambda o, s: Unignore(_nick(o)),
}

DEFAULT_SHAPE = Shape()

# A frame's own structure, checked before json.loads builds it: a 63 KB frame of `{}`
# is 21,000 dicts (1.3 MB) before any field is looked at.  No client frame needs more
# than a handful of containers; unknown fields may carry some, up to about the nesting
# any JSON parser takes (Python's stops near 1,000 levels).  Over it is a parser limit,
# hence `bad_json`, like JSON nested too deep.
FRAME_CONTAINERS = 1024
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)


def _structure(text: str) -> str | None:
    """Why ``text`` holds too many objects and arrays, or None (fine)."""
    # Fast path, two C-speed counts: brackets inside strings count too, so only a frame
    # over the limit pays for the exact count (strings stripped).
    if text.count("{") + text.count("[") <= FRAME_CONTAINERS:
        return None
    bare = _STRING.sub("", text)
    if bare.count("{") + bare.count("[") > FRAME_CONTAINERS:
        return f"more than {FRAME_CONTAINERS} objects and arrays in one frame"
    return None


def decode(text: str | bytes, shape: Shape = DEFAULT_SHAPE) -> ClientMessage:
    """One client frame → one message; raises DecodeError (bad_json / bad_message / bad_nick)."""
    if not isinstance(text, str):
        raise DecodeError("bad_message", "binary frames are not part of the protocol")
    problem = _structure(text)
    if problem is not None:
        raise DecodeError("bad_json", problem)
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
    return decoder(obj, shape)


def message_type(msg: ClientMessage) -> str:
    """The wire name of a decoded message ("hello", "say", ...)."""
    return type(msg).__name__.lower()


# --- server → client ------------------------------------------------------------

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode(frame: dict[str, Any]) -> bytes:
    """A server frame as UTF-8 JSON bytes, ready for a text frame."""
    return _dumps(frame).encode()


def welcome(session: str, timeouts: dict[str, float]) -> dict[str, Any]:
    return {
        "type": "welcome",
        "protocol": PROTOCOL_VERSION,
        "session": session,
        "timeouts": timeouts,
    }


def profile_ok(nick: str, resume: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "profile_ok", "nick": nick}
    if resume is not None:
        frame["resume"] = resume
    return frame


def joined(
    room: str,
    members: list[str],
    history: list[dict[str, Any]],
    complete: bool,
    epoch: str | None = None,
) -> dict[str, Any]:
    frame = {
        "type": "joined",
        "room": room,
        "members": members,
        "history": history,
        "complete": complete,
    }
    if epoch is not None:  # a cluster's rooms only (docs/protocol.md "Epochs")
        frame["epoch"] = epoch
    return frame


def encode_joined(
    room: str, members: list[str], history: list[bytes], complete: bool, more: bool = False
) -> bytes:
    """`joined` around history kept as encoded `message` frames: spliced, never decoded."""
    head = _dumps({"type": "joined", "room": room, "members": members}).encode()
    tail = b'],"complete":' + (b"true" if complete else b"false")
    if more:
        tail += b',"more":true'
    return head[:-1] + b',"history":[' + b",".join(history) + tail + b"}"


def encode_history(room: str, messages: list[bytes], more: bool, complete: bool) -> bytes:
    """The answer to a `history` request (extension), spliced like `joined`."""
    head = _dumps({"type": "history", "room": room}).encode()
    return (
        head[:-1]
        + b',"messages":['
        + b",".join(messages)
        + b'],"more":'
        + (b"true" if more else b"false")
        + b',"complete":'
        + (b"true" if complete else b"false")
        + b"}"
    )


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


def ignoring(nicks: list[str]) -> dict[str, Any]:
    """The answer to `ignore`/`unignore` (extension): every nick ignored now, folded."""
    return {"type": "ignoring", "nicks": nicks}


def error(code: str, text: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": text}


def bye(reason: str, detail: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "bye", "reason": reason}
    if detail:
        frame["message"] = detail
    return frame
