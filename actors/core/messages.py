"""Messages actors tell each other: frozen dataclasses, a docstring per field.

Actors only ``tell``.  The one place that ``ask``s is the HTTP edge (kick, debug),
always with a timeout.  References to other actors travel as pykka ``ActorRef``s
(typed ``Any`` here to keep this module free of pykka).

Over 500 lines on purpose: one file lists every message of the node (each a few lines
of fields and their docstrings), so a reader finds what any actor may receive here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "ClientFrame",
    "PongFrame",
    "ConnectionLost",
    "Overflow",
    "Kick",
    "Shutdown",
    "TimerFired",
    "Deliver",
    "NickResult",
    "JoinedRoom",
    "Acked",
    "DmResult",
    "RoomMoved",
    "Schedule",
    "Cancel",
    "CancelOwner",
    "ClaimNick",
    "JoinRoom",
    "LeaveRoom",
    "SendDm",
    "UserGone",
    "KickNick",
    "RoomRetired",
    "RoomJoin",
    "RoomLeave",
    "RoomSay",
    "RoomRename",
    "Retire",
    "Persist",
    "LoadHistory",
    "HistoryLoaded",
    "RoomIgnores",
    "RoomPage",
    "ChildFailed",
    "RoomMessage",
    "RoomPresence",
    "UserConnected",
    "UserProfiled",
    "UserDisconnected",
]

# --- into a UserActor -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientFrame:
    """One complete data message read from the socket."""

    data: str | bytes
    """Text (str) or binary (bytes) payload, as received."""


@dataclass(frozen=True, slots=True)
class PongFrame:
    """A WebSocket pong control frame arrived: it counts as a `pong`."""


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    """The socket is gone (closed by either side, reset, or timed out after our close)."""

    code: int | None = None
    """The close code the connection ended with, when the transport knows it."""


@dataclass(frozen=True, slots=True)
class Overflow:
    """The outbound backlog went over --max-backlog: the client does not read."""


@dataclass(frozen=True, slots=True)
class Kick:
    """Disconnect the user with `kicked` / 4005. Any actor may send it."""

    reason: str = ""
    """Human detail, shown to the user in `bye.message`."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """The server is stopping: `bye` `shutdown`, close 1001."""


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer the owner armed at the scheduler reached its deadline."""

    name: str
    """Timer name (hello, profile, ping, pong, session, ...)."""
    token: Any
    """The owner's token from Schedule: lets the owner ignore stale timeouts."""


@dataclass(frozen=True, slots=True)
class Deliver:
    """Bytes to write to the user's socket as one text frame (already encoded JSON)."""

    payload: bytes
    """UTF-8 JSON; one object is shared by every recipient of a fan-out."""
    sender: str | None = None
    """The nick it comes from, when the recipient may be ignoring it (dms)."""


@dataclass(frozen=True, slots=True)
class NickResult:
    """The directory's answer to ClaimNick."""

    nick: str
    """The nick asked for."""
    ok: bool
    """True if it is now this user's; False if taken."""
    code: str | None = None
    """Error code when refused (``nick_taken`` when None; ``unavailable``: a cluster could
    not check it now, it had no effect)."""
    message: str = ""
    """Human text when refused."""
    resume: str | None = None
    """The secret that reclaims this nick after a drop (sent in `profile_ok`)."""


@dataclass(frozen=True, slots=True)
class JoinedRoom:
    """A room accepted the user: its ref (for `say`) and the encoded `joined` frame."""

    room: str
    """Room name."""
    ref: Any
    """The RoomActor's ref: the user tells it `say`s directly."""
    payload: bytes | None
    """Encoded `joined` frame (members, history, complete); None when the room already
    queued it on the member's connection."""


@dataclass(frozen=True, slots=True)
class Acked:
    """A room stored a `say` under a seq: the sender may be acked."""

    client_id: str | None
    """The `id` the client sent."""
    seq: int | None
    """The room's sequence number for the message."""


@dataclass(frozen=True, slots=True)
class DmResult:
    """The directory's answer to SendDm."""

    client_id: str | None
    """The `id` the client sent."""
    ok: bool
    """False: no such user (or ``code``)."""
    code: str | None = None
    """Error code when refused for another reason (rate_limited: the target's budget)."""


@dataclass(frozen=True, slots=True)
class RoomMoved:
    """A room was restarted after a failure: `say`s go to the new ref."""

    room: str
    """Room name."""
    ref: Any
    """The new RoomActor's ref."""


# --- into the SchedulerActor --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Schedule:
    """Arm (or re-arm) timer `name` of `owner_id` at monotonic time `due`."""

    owner_id: str
    """Unique id of the owner (session id)."""
    owner: Any
    """Ref that receives TimerFired."""
    name: str
    """Timer name; one live timer per (owner, name)."""
    due: float
    """Deadline on the monotonic clock."""
    token: Any = None
    """Returned in TimerFired."""
    every: float | None = None
    """Re-arm every this many seconds after each firing, until cancelled."""
    conn: Any = None
    """With a connection, a firing needs no decision (the periodic ping): the scheduler
    writes a `ping` straight to it, encoded once per firing batch, and does not tell
    the owner (its mailbox never sees the ping)."""


@dataclass(frozen=True, slots=True)
class TimerBatch:
    """Several Schedule/Cancel in one message, applied in order: what one handled event
    changed of its owner's timers (a login's hello arms two and disarms one). One
    message instead of one per timer: a third of the scheduler's mail at login."""

    ops: tuple[Any, ...]
    """Schedule and Cancel messages, in the order they were decided."""


@dataclass(frozen=True, slots=True)
class Cancel:
    """Disarm one timer."""

    owner_id: str
    """Owner id."""
    name: str
    """Timer name."""


@dataclass(frozen=True, slots=True)
class CancelOwner:
    """Disarm all the named timers of an owner that is going away."""

    owner_id: str
    """Owner id."""
    names: tuple[str, ...]
    """Its timer names."""


# --- into the DirectoryActor --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimNick:
    """Make `nick` this session's (renaming it if it had one)."""

    session: str
    """Session id."""
    user: Any
    """UserActor ref; answered with NickResult."""
    nick: str
    """Requested nick."""
    verified: bool = False
    """A valid token proved the nick is the sender's."""
    resume: str | None = None
    """The resume secret the client sent."""


@dataclass(frozen=True, slots=True)
class JoinRoom:
    """Add the user to a room (creating it if needed)."""

    session: str
    """Session id."""
    user: Any
    """UserActor ref; the room answers with JoinedRoom."""
    nick: str
    """Current nick."""
    room: str
    """Room name."""
    since: int | None
    """Recover messages after this seq."""
    outbox: Any = None
    """The user's connection (``send_text``), for the room's direct fan-out; None for actors without one."""
    epoch: str | None = None
    """The room epoch ``since`` belongs to (cluster rooms: another epoch → complete false)."""
    ignores: frozenset[str] = frozenset()
    """Folded nicks this user ignores: their room messages are not fanned out to it."""


@dataclass(frozen=True, slots=True)
class LeaveRoom:
    """Remove the user from a room."""

    session: str
    """Session id."""
    room: str
    """Room name."""


@dataclass(frozen=True, slots=True)
class SendDm:
    """Deliver a direct message to the user holding nick `to`."""

    session: str
    """Sender's session id."""
    user: Any
    """Sender's ref; answered with DmResult."""
    sender: str
    """Sender's nick."""
    to: str
    """Target nick."""
    text: str
    """Body."""
    client_id: str | None
    """Echoed in the ack."""
    ts: float
    """Wall-clock time the dm was sent."""


@dataclass(frozen=True, slots=True)
class UserGone:
    """A session ended: free its nick and remove it from every room."""

    session: str
    """Session id."""
    timers: tuple[str, ...] = ()
    """Its armed timer names (when a failed user reports itself to the node)."""
    hold: bool = False
    """Hold its nick for its owner for --nick-grace (a user whose connection ended;
    not a plugin, whose restart claims its nick again at once)."""


@dataclass(frozen=True, slots=True)
class KickNick:
    """Kick the user holding `nick` (asked by the HTTP edge; answers True/False)."""

    nick: str
    """Target nick."""
    reason: str
    """Human detail."""


@dataclass(frozen=True, slots=True)
class RoomRetired:
    """An empty room stopped; its history comes back to the directory."""

    room: str
    """Room name."""
    history: Any
    """The room's RoomHistory, to seed the next incarnation."""


# --- into a RoomActor ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoomJoin:
    """A member joins (or re-joins)."""

    session: str
    """Session id."""
    user: Any
    """UserActor ref."""
    nick: str
    """Nick shown to others."""
    since: int | None
    """Recover messages after this seq."""
    outbox: Any = None
    """The member's connection: room frames are queued on it directly (see RoomActor)."""
    epoch: str | None = None
    """The room epoch ``since`` belongs to (cluster rooms: another epoch → complete false)."""
    ignores: frozenset[str] = frozenset()
    """Folded nicks this member ignores."""


@dataclass(frozen=True, slots=True)
class RoomIgnores:
    """A member's ignore list changed."""

    session: str
    """Session id."""
    ignores: frozenset[str]
    """Folded nicks it ignores now."""


@dataclass(frozen=True, slots=True)
class RoomPage:
    """A member asks for an older page of history (the `history` request)."""

    session: str
    """Session id."""
    user: Any
    """UserActor ref, answered with Deliver when the member has no connection."""
    before: int | None
    since: int | None
    limit: int | None


@dataclass(frozen=True, slots=True)
class RoomLeave:
    """A member leaves (explicitly or because its session ended)."""

    session: str
    """Session id."""


@dataclass(frozen=True, slots=True)
class RoomSay:
    """A member says something."""

    session: str
    """Sender's session id."""
    user: Any
    """Sender's ref; gets Acked before the fan-out."""
    nick: str
    """Sender's nick."""
    text: str
    """Body."""
    client_id: str | None
    """Echoed in the ack."""
    ts: float
    """Wall-clock time stamped on the message."""


@dataclass(frozen=True, slots=True)
class RoomRename:
    """A member changed nick: others see leave(old) + join(new)."""

    session: str
    """Session id."""
    old: str
    """Previous nick."""
    new: str
    """New nick."""


@dataclass(frozen=True, slots=True)
class Retire:
    """The room is empty: hand the history back and stop."""


# --- into the StoreActor ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Persist:
    """Write one stored room message to durable history (batched by the store)."""

    room: str
    """Room name."""
    frame: dict[str, Any]
    """The `message` frame, with its seq (not mutated after this point)."""


@dataclass(frozen=True, slots=True)
class LoadHistory:
    """Read a room's durable history; answered with HistoryLoaded to ``reply_to``."""

    room: str
    """Room name."""
    keep: int
    """How many of the newest messages to return."""
    reply_to: Any
    """Ref of the asker (the directory)."""


@dataclass(frozen=True, slots=True)
class HistoryLoaded:
    """The store's answer to LoadHistory (everything buffered before it counted)."""

    room: str
    """Room name."""
    last_seq: int
    """The last seq ever stored for the room (0: none)."""
    messages: list[dict[str, Any]]
    """The newest ``keep`` `message` frames, oldest first."""


# --- supervision --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChildFailed:
    """A child actor raised; its parent decides what happens next."""

    child: Any
    """The failed actor object (stopped)."""
    error: BaseException
    """What it raised."""
    report: Any = None
    """What the parent needs to clean up or restart, said by the child itself as it failed
    (its ``last_words()``), so that no parent reads a child's fields."""


# --- published to the observer port (actors/core/observe.py) ------------------------
# Told only to subscribers (plugins, through actors/plugins/): with nobody subscribed
# none of these is ever built.


@dataclass(frozen=True, slots=True)
class RoomMessage:
    """A room stored a message (told after the fan-out to the members)."""

    room: str
    """Room name."""
    nick: str
    """Sender's nick."""
    text: str
    """Body."""
    seq: int
    """The room's sequence number: per room, a plugin receives these in seq order."""
    ts: float
    """Wall-clock time stamped on the message."""


@dataclass(frozen=True, slots=True)
class RoomPresence:
    """Someone joined or left a room (a rename is a leave then a join)."""

    room: str
    """Room name."""
    event: str
    """`join` or `leave`."""
    nick: str
    """Who."""


@dataclass(frozen=True, slots=True)
class UserConnected:
    """A connection opened (state Undefined: no nick yet)."""

    session: str
    """Session id."""


@dataclass(frozen=True, slots=True)
class UserProfiled:
    """A `profile` was accepted (first nick, new nick or new info)."""

    session: str
    """Session id."""
    nick: str
    """The nick the user now holds."""


@dataclass(frozen=True, slots=True)
class UserDisconnected:
    """A connection ended and its actor stopped."""

    session: str
    """Session id."""
    nick: str | None
    """Its last nick, or None if it never had one."""
    reason: str
    """The disconnect reason (`bye`, `kicked`, `pong_timeout`, ..., `client_closed`)."""
