"""The cluster: several nodes, one chat, through Redis (``--redis URL``; docs/cluster.md).

With a Redis URL the node swaps two actor types and adds one:

* :class:`ClusterActor` (a child of the NodeActor) owns the Redis connections: a
  small pool for commands, and one subscriber connection read by one greenlet that
  routes room events to the RoomActors and this node's inbox to the directory.  It
  beats the node's heartbeat key, buries dead nodes, and when Redis goes away it
  reconnects with backoff and tells everyone to resynchronise.
* :class:`ClusterDirectoryActor` also claims nicks in Redis, and sends a ``dm`` or a
  kick for a nick held on another node to that node's channel.
* :class:`ClusterRoomActor`: ``seq``, history and the member list of a room live in
  Redis.  Every change is one Lua script that updates them and PUBLISHes the event
  on the room's channel atomically, so the publish order is the ``seq`` order, and
  every node (the sender's too) delivers what it hears on the channel to its own
  members: exactly once, in one order.

What never goes through Redis: the timers and the five rules (each node's scheduler
enforces them for its own users), pings, and anything per user for maintenance.  A
node's liveness is ONE key it refreshes; its nicks and memberships point at it.

Redis keys (``<node>`` is a random id per process, ``<member>`` is ``<node>/<session>``):

    hubbub:nodes                   set     ids of nodes that registered
    hubbub:node:<node>             string  heartbeat, expires after 2/3 of the node TTL
    hubbub:node:<node>:nicks       set     nicks this node holds
    hubbub:node:<node>:rooms       set     rooms where this node has members
    hubbub:nick:<nick>             string  <member> that holds the nick
    hubbub:room:<room>:counters    hash    seq (last message), ev (last event)
    hubbub:room:<room>:history     list    the last --history messages (JSON frames)
    hubbub:room:<room>:members     hash    <member> -> nick, the whole cluster's

Channels: ``hubbub:room:<room>`` carries the room's events, each numbered by ``ev``
(``M<ev> <seq> <tag> <frame>``, ``P<ev> j|l <member> <nick>``, ``R<ev> <member> <old> <new>``);
``hubbub:node:<node>`` carries dms (``D<session> <frame>``) and kicks
(``K<session> <reason>``) for that node's users.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import secrets
import socket
import time
import urllib.parse
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .core import codec
from .base import HubbubActor, tell
from .directory import DirectoryActor
from .core.history import RoomHistory
from .core.messages import (
    Acked,
    ClaimNick,
    Deliver,
    DmResult,
    JoinedRoom,
    Kick,
    KickNick,
    NickResult,
    RoomJoin,
    RoomLeave,
    RoomMessage,
    RoomPresence,
    RoomRename,
    RoomSay,
    SendDm,
    UserGone,
)
from .plugin import publish
from .room import RoomActor

__all__ = [
    "ClusterActor", "ClusterDirectoryActor", "ClusterRoomActor", "ClusterHistory",
    "DEFAULT_NODE_TTL", "parse_url", "room_class_for",
]

log = logging.getLogger("hubbub.cluster")

DEFAULT_NODE_TTL = 30.0
"""Seconds within which a dead node's users leave presence and its nicks are free.
Set per cluster in the URL: ``redis://host:6379/0?node_ttl=10``."""
COMMAND_TIMEOUT = 2.0
"""A Redis command slower than this counts as Redis being away."""
CONNECT_TIMEOUT = 1.0
POOL_SIZE = 32
"""Command connections per node; rooms and the directory wait for a free one."""
BACKOFF = (0.05, 2.0)
"""First and longest pause between reconnection attempts (doubling, with jitter)."""
STARTUP_WAIT = 2.0
"""How long a starting node waits for Redis before it serves alone (and keeps trying)."""
SUBSCRIBE_WAIT = 3.0
"""How long a new room waits for its channel subscription before it starts alone."""

_REDIS_ERRORS = (redis.RedisError, OSError)


def parse_url(url: str) -> tuple[str, float]:
    """Split hubbub's own setting off the Redis URL: (URL for redis-py, node TTL in seconds).

    The TTL lives in the URL because it is a property of the cluster, not of one node:
    every node is given the same URL, so they all agree on when a silent node is dead.
    """
    # Not urlunsplit: it turns "unix:///path" into "unix:/path", which redis-py refuses.
    base, _, query = url.partition("?")
    ttl, rest = DEFAULT_NODE_TTL, []
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if key != "node_ttl":
            rest.append((key, value))
            continue
        try:
            ttl = float(value)
        except ValueError:
            ttl = math.nan
        if not (math.isfinite(ttl) and ttl > 0):
            raise ValueError(f"--redis: node_ttl must be a number of seconds > 0 (got {value!r})")
    return base + ("?" + urllib.parse.urlencode(rest) if rest else ""), ttl


# --- Lua: every change to shared state is one script, so it is atomic --------------------

# Removes a node's members from one room, announcing each leave on the room's channel.
_DROP_MEMBERS = """
local function drop_members(room, prefix)
  local rkey = 'hubbub:room:' .. room
  local mkey = rkey .. ':members'
  local flat = redis.call('HGETALL', mkey)
  for i = 1, #flat, 2 do
    if string.sub(flat[i], 1, #prefix) == prefix then
      redis.call('HDEL', mkey, flat[i])
      local ev = redis.call('HINCRBY', rkey .. ':counters', 'ev', 1)
      redis.call('PUBLISH', rkey, 'P' .. ev .. ' l ' .. flat[i] .. ' ' .. flat[i + 1])
    end
  end
end
"""

# Everything a node left behind: memberships (with presence leaves), nicks, its sets.
_BURY = _DROP_MEMBERS + """
local function bury(n)
  local prefix = n .. '/'
  for _, room in ipairs(redis.call('SMEMBERS', 'hubbub:node:' .. n .. ':rooms')) do
    drop_members(room, prefix)
  end
  for _, nick in ipairs(redis.call('SMEMBERS', 'hubbub:node:' .. n .. ':nicks')) do
    local key = 'hubbub:nick:' .. nick
    local cur = redis.call('GET', key)
    if cur and string.sub(cur, 1, #prefix) == prefix then redis.call('DEL', key) end
  end
  redis.call('DEL', 'hubbub:node:' .. n .. ':rooms', 'hubbub:node:' .. n .. ':nicks')
  redis.call('SREM', 'hubbub:nodes', n)
end
"""

# KEYS: counters, history.  ARGV: channel, frame before the seq, frame after it, keep,
# the say's tag (the sending room knows its own says by it when they come back).
# INCR, store and PUBLISH in one script: the publish order is the seq order.
_SAY = """
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local ev = redis.call('HINCRBY', KEYS[1], 'ev', 1)
local frame = ARGV[2] .. seq .. ARGV[3]
local keep = tonumber(ARGV[4])
if keep > 0 then
  redis.call('RPUSH', KEYS[2], frame)
  redis.call('LTRIM', KEYS[2], -keep, -1)
end
redis.call('PUBLISH', ARGV[1], 'M' .. ev .. ' ' .. seq .. ' ' .. ARGV[5] .. ' ' .. frame)
return seq
"""

# KEYS: counters, members, node rooms.  ARGV: channel, op (j, l, r), member, nick, room,
# '1' when the node has no member left in the room (l).  Announced only if it changed.
_PRESENCE = """
local op, member, nick = ARGV[2], ARGV[3], ARGV[4]
if op == 'j' then
  redis.call('SADD', KEYS[3], ARGV[5])
  if redis.call('HSET', KEYS[2], member, nick) == 1 then
    local ev = redis.call('HINCRBY', KEYS[1], 'ev', 1)
    redis.call('PUBLISH', ARGV[1], 'P' .. ev .. ' j ' .. member .. ' ' .. nick)
  end
elseif op == 'l' then
  local had = redis.call('HGET', KEYS[2], member)
  if had then
    redis.call('HDEL', KEYS[2], member)
    local ev = redis.call('HINCRBY', KEYS[1], 'ev', 1)
    redis.call('PUBLISH', ARGV[1], 'P' .. ev .. ' l ' .. member .. ' ' .. had)
  end
  if ARGV[6] == '1' then redis.call('SREM', KEYS[3], ARGV[5]) end
else
  local old = redis.call('HGET', KEYS[2], member)
  if old and old ~= nick then
    redis.call('HSET', KEYS[2], member, nick)
    local ev = redis.call('HINCRBY', KEYS[1], 'ev', 1)
    redis.call('PUBLISH', ARGV[1], 'R' .. ev .. ' ' .. member .. ' ' .. old .. ' ' .. nick)
  end
end
return 1
"""

# A room's snapshot, taken after its channel subscription was confirmed.  It also puts
# this node's members back (after a Redis restart, or when the node was given up for
# dead), removes those it no longer has, and keeps seq from going backwards.
# KEYS: counters, history, members, node rooms.  ARGV: channel, "<node>/", lowest seq,
# room, then member, nick pairs.  Returns {ev, seq, members (flat), history, seq before}.
_SYNC = """
local prefix = ARGV[2]
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local before = seq
local floor = tonumber(ARGV[3])
if seq < floor then
  redis.call('HSET', KEYS[1], 'seq', floor)
  seq = floor
end
local mine = {}
for i = 5, #ARGV, 2 do mine[ARGV[i]] = ARGV[i + 1] end
local flat = redis.call('HGETALL', KEYS[3])
for i = 1, #flat, 2 do
  if string.sub(flat[i], 1, #prefix) == prefix and not mine[flat[i]] then
    redis.call('HDEL', KEYS[3], flat[i])
    local ev = redis.call('HINCRBY', KEYS[1], 'ev', 1)
    redis.call('PUBLISH', ARGV[1], 'P' .. ev .. ' l ' .. flat[i] .. ' ' .. flat[i + 1])
  end
end
for i = 5, #ARGV, 2 do
  local member, nick = ARGV[i], ARGV[i + 1]
  local cur = redis.call('HGET', KEYS[3], member)
  if cur ~= nick then
    redis.call('HSET', KEYS[3], member, nick)
    local ev = redis.call('HINCRBY', KEYS[1], 'ev', 1)
    if cur then
      redis.call('PUBLISH', ARGV[1], 'R' .. ev .. ' ' .. member .. ' ' .. cur .. ' ' .. nick)
    else
      redis.call('PUBLISH', ARGV[1], 'P' .. ev .. ' j ' .. member .. ' ' .. nick)
    end
  end
end
if #ARGV >= 5 then redis.call('SADD', KEYS[4], ARGV[4]) end
local ev = tonumber(redis.call('HGET', KEYS[1], 'ev') or '0')
return {ev, seq, redis.call('HGETALL', KEYS[3]), redis.call('LRANGE', KEYS[2], 0, -1), before}
"""

# KEYS: history.  ARGV: keep, then messages oldest first: appends those newer than the
# newest kept (Redis lost its copy, or never had what a node said while it was away).
_SEED = """
local last = 0
local newest = redis.call('LINDEX', KEYS[1], -1)
if newest then last = cjson.decode(newest)['seq'] end
for i = 2, #ARGV do
  local seq = cjson.decode(ARGV[i])['seq']
  if seq > last then
    redis.call('RPUSH', KEYS[1], ARGV[i])
    last = seq
  end
end
if tonumber(ARGV[1]) > 0 then redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1) end
return 1
"""

# A nick held by a member of a node whose heartbeat is gone is free; so is one that
# Redis says this very node holds (the directory, which asked, knows it is free here).
_NICK_TAKEN = """
local function taken(cur, owner, node)
  if not cur or cur == owner then return false end
  local n = string.match(cur, '^([^/]*)/')
  return n ~= node and redis.call('EXISTS', 'hubbub:node:' .. n) == 1
end
"""

# ARGV: nick, owner, node, old nick ('' if none).  1: now the owner's; 0: taken.
_CLAIM = _NICK_TAKEN + """
local key = 'hubbub:nick:' .. ARGV[1]
if taken(redis.call('GET', key), ARGV[2], ARGV[3]) then return 0 end
local nicks = 'hubbub:node:' .. ARGV[3] .. ':nicks'
redis.call('SET', key, ARGV[2])
redis.call('SADD', nicks, ARGV[1])
if ARGV[4] ~= '' then
  local okey = 'hubbub:nick:' .. ARGV[4]
  if redis.call('GET', okey) == ARGV[2] then redis.call('DEL', okey) end
  redis.call('SREM', nicks, ARGV[4])
end
return 1
"""

# ARGV: nick, owner, node.
_RELEASE = """
local key = 'hubbub:nick:' .. ARGV[1]
if redis.call('GET', key) == ARGV[2] then
  redis.call('DEL', key)
  redis.call('SREM', 'hubbub:node:' .. ARGV[3] .. ':nicks', ARGV[1])
end
return 1
"""

# After a reconnection: this node's nicks are exactly these.  ARGV: node, then nick,
# owner pairs.  Returns the nicks another live node took meanwhile.
_RECLAIM = _NICK_TAKEN + """
local node = ARGV[1]
local nicks = 'hubbub:node:' .. node .. ':nicks'
local mine = {}
for i = 2, #ARGV, 2 do mine[ARGV[i]] = ARGV[i + 1] end
for _, nick in ipairs(redis.call('SMEMBERS', nicks)) do
  if not mine[nick] then
    local key = 'hubbub:nick:' .. nick
    local cur = redis.call('GET', key)
    if cur and string.sub(cur, 1, #node + 1) == node .. '/' then redis.call('DEL', key) end
    redis.call('SREM', nicks, nick)
  end
end
local lost = {}
for i = 2, #ARGV, 2 do
  local key = 'hubbub:nick:' .. ARGV[i]
  if taken(redis.call('GET', key), ARGV[i + 1], node) then
    table.insert(lost, ARGV[i])
  else
    redis.call('SET', key, ARGV[i + 1])
    redis.call('SADD', nicks, ARGV[i])
  end
end
return lost
"""

# ARGV: nick, kind (D or K), body.  Publishes to the holder's node; 0 if nobody holds it.
_SEND = """
local cur = redis.call('GET', 'hubbub:nick:' .. ARGV[1])
if not cur then return 0 end
local n, s = string.match(cur, '^([^/]*)/(.*)$')
if redis.call('EXISTS', 'hubbub:node:' .. n) == 0 then return 0 end
return redis.call('PUBLISH', 'hubbub:node:' .. n, ARGV[2] .. s .. ' ' .. ARGV[3])
"""

# ARGV: node, heartbeat ms, info.  Beats, then buries every node whose heartbeat is
# gone.  Returns {1 if this node's heartbeat was gone (first beat, Redis restarted, or
# the others gave it up for dead), live nodes}.
_BEAT = _BURY + """
local key = 'hubbub:node:' .. ARGV[1]
local fresh = redis.call('EXISTS', key) == 0
redis.call('SET', key, ARGV[3], 'PX', ARGV[2])
redis.call('SADD', 'hubbub:nodes', ARGV[1])
local live = 0
for _, n in ipairs(redis.call('SMEMBERS', 'hubbub:nodes')) do
  if redis.call('EXISTS', 'hubbub:node:' .. n) == 1 then live = live + 1 else bury(n) end
end
return {fresh and 1 or 0, live}
"""

# ARGV: node, then the rooms it still serves: forget its members everywhere else
# (rooms that emptied while Redis was away).
_PRUNE = _DROP_MEMBERS + """
local prefix = ARGV[1] .. '/'
local rooms = 'hubbub:node:' .. ARGV[1] .. ':rooms'
local keep = {}
for i = 2, #ARGV do keep[ARGV[i]] = true end
for _, room in ipairs(redis.call('SMEMBERS', rooms)) do
  if not keep[room] then
    drop_members(room, prefix)
    redis.call('SREM', rooms, room)
  end
end
return 1
"""

# ARGV: node.  A clean exit: the same as being buried, now instead of after the TTL.
_LEAVE = _BURY + """
redis.call('DEL', 'hubbub:node:' .. ARGV[1])
bury(ARGV[1])
return 1
"""


class Scripts:
    """The registered scripts (EVALSHA, loaded again by redis-py after a Redis restart)."""

    def __init__(self, client: redis.Redis) -> None:
        for name, text in (("say", _SAY), ("presence", _PRESENCE), ("sync", _SYNC), ("seed", _SEED),
                           ("claim", _CLAIM), ("release", _RELEASE), ("reclaim", _RECLAIM),
                           ("send", _SEND), ("beat", _BEAT), ("prune", _PRUNE), ("leave", _LEAVE)):
            setattr(self, name, client.register_script(text))


def room_keys(name: str) -> tuple[str, str, str]:
    """(counters, history, members) keys of a room."""
    base = f"hubbub:room:{name}"
    return f"{base}:counters", f"{base}:history", f"{base}:members"


# --- messages (cluster only; the single-node ones are in messages.py) -------------------


@dataclass(frozen=True, slots=True)
class Subscribe:
    """A room wants its channel's events (into the ClusterActor)."""

    channel: bytes
    """``hubbub:room:<room>``."""
    room: Any
    """The RoomActor's ref: events are told to it."""
    result: Any
    """gevent AsyncResult: set True once Redis confirmed the subscription, False if it cannot."""


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """A retiring room no longer wants its channel (into the ClusterActor)."""

    channel: bytes
    """``hubbub:room:<room>``."""
    room: Any
    """The ref that subscribed (a newer room of the same name keeps the channel)."""


@dataclass(frozen=True, slots=True)
class Trouble:
    """A Redis command failed: Redis counts as away (into the ClusterActor)."""

    gen: int
    """The connection generation the command ran under (older ones are ignored)."""
    why: str
    """What failed, for the log and /healthz."""


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """One event from the room's channel (into a ClusterRoomActor)."""

    data: bytes
    """As published: ``M<ev> <seq> <tag> <frame>``, ``P<ev> j|l <member> <nick>``, ``R<ev> ...``."""


@dataclass(frozen=True, slots=True)
class Resync:
    """Redis is back and the room's channel is subscribed again: take a new snapshot."""


@dataclass(frozen=True, slots=True)
class NodeEvent:
    """One message from this node's channel (into the ClusterDirectoryActor)."""

    data: bytes
    """``D<session> <dm frame>`` or ``K<session> <reason>``."""


@dataclass(frozen=True, slots=True)
class ClusterUp:
    """Redis is (back) up: claim this node's nicks again (into the ClusterDirectoryActor)."""


@dataclass(frozen=True, slots=True)
class _Connected:
    """The connector greenlet reached Redis and beat once."""

    conn: Any
    """The new subscriber connection."""
    stream: CommandStream
    """The new command stream (not started)."""
    live: int
    """Live nodes, this one included."""


@dataclass(frozen=True, slots=True)
class _Lost:
    """The subscriber connection of generation ``gen`` broke."""

    gen: int
    """Its generation."""
    why: str
    """The error."""


@dataclass(frozen=True, slots=True)
class _Confirmed:
    """Redis confirmed a SUBSCRIBE on the subscriber connection of generation ``gen``."""

    gen: int
    """Its generation."""
    channel: bytes
    """The channel."""


@dataclass(frozen=True, slots=True)
class _Beat:
    """Time to refresh the heartbeat and look for dead nodes."""


@dataclass(frozen=True, slots=True)
class _Recheck:
    """Time to give up on members that were missing from a room's snapshot."""


@dataclass(frozen=True, slots=True)
class _SayDone:
    """Redis answered one of the room's says (the seq), or the say failed."""

    n: int
    """The room's number for the say (in its tag)."""
    reply: Any
    """The seq (int), or the exception."""
    gen: int
    """The cluster generation it was sent under."""


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# --- the connections ----------------------------------------------------------------


class CommandStream:
    """Commands whose answers nobody waits for, pipelined on one connection.

    redis-py's client makes every command a round trip through the pool (about
    150 µs of Python per EVALSHA, measured), and a room waiting for each of its says
    could not say faster than Redis answers.  Here a room queues the packed command and
    goes on; one writer greenlet sends everything queued in one write, and one reader
    greenlet hands each answer, in order, to the callback that came with its command.
    """

    def __init__(self, conn: Any, cluster: Any, gen: int) -> None:
        self.conn = conn
        self.cluster = cluster
        """The ClusterActor's ref: told _Lost when the connection breaks."""
        self.gen = gen
        conn.connect()
        self._queue: list[tuple[Any, Callable[[Any], Any]]] = []
        self._waiting: deque[Callable[[Any], Any]] = deque()
        self._wake = gevent.event.Event()
        self._greenlets: list[Any] = []
        self.closed = False

    def start(self) -> None:
        self._greenlets = [gevent.spawn(self._write), gevent.spawn(self._read)]

    def send(self, args: tuple[Any, ...], then: Callable[[Any], Any]) -> None:
        """Queue a command; ``then(reply or exception)`` runs in the reader greenlet."""
        if self.closed:
            then(ConnectionError("the command stream is closed"))
            return
        self._queue.append((self.conn.pack_command(*args), then))
        self._wake.set()

    def close(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        for g in self._greenlets:
            g.kill(block=False)
        self.conn.disconnect()
        error = ConnectionError(why)
        failed = [then for _packed, then in self._queue] + list(self._waiting)
        self._queue, self._waiting = [], deque()
        for then in failed:
            then(error)

    def _write(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            self._waiting.extend(then for _packed, then in batch)
            try:
                self.conn.send_packed_command([chunk for packed, _then in batch for chunk in packed],
                                              check_health=False)
            except _REDIS_ERRORS as exc:
                tell(self.cluster, _Lost(self.gen, _why(exc)))
                return

    def _read(self) -> None:
        while True:
            try:
                reply: Any = self.conn.read_response()
            except redis.ResponseError as exc:  # one command failed; the stream is fine
                reply = exc
            except Exception as exc:  # noqa: BLE001 - the connection broke, whatever the cause
                tell(self.cluster, _Lost(self.gen, _why(exc)))
                return
            self._waiting.popleft()(reply)


class ClusterActor(HubbubActor):
    """This node's link to Redis: connections, heartbeat, dead nodes, reconnection.

    ``up`` and ``gen`` are read by the directory and the rooms (plain attribute reads,
    one OS thread): a room uses Redis only while ``up`` and synchronised under the
    current ``gen``; every reconnection starts a new generation, and each room takes a
    fresh snapshot before it trusts the channel again.
    """

    def __init__(self, url: str, parent: HubbubActor | None = None) -> None:
        super().__init__("cluster", parent)
        clean, self.ttl = parse_url(url)
        self.node_id = secrets.token_hex(4)
        self.node_channel = f"hubbub:node:{self.node_id}".encode()
        self.heartbeat_ms = int(self.ttl * 1000 * 2 / 3)
        # Beat 4 times per heartbeat lifetime: 3 beats may be late before the others
        # give this node up; a dead node's traces go within 2/3 + 1/6 of the TTL.
        self.beat_every = self.ttl / 6
        common: dict[str, Any] = {"protocol": 2, "socket_connect_timeout": CONNECT_TIMEOUT,
                                  "client_name": f"hubbub-{self.node_id}"}
        # One retry, no backoff: it replaces a pooled connection that a Redis restart
        # closed; anything longer would hold a room while Redis is down.
        self.redis = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
            clean, max_connections=POOL_SIZE, timeout=COMMAND_TIMEOUT, socket_timeout=COMMAND_TIMEOUT,
            retry=Retry(NoBackoff(), 1), **common))
        # The subscriber and the stream block in reads for as long as all is quiet: a
        # Redis that hangs is noticed by the heartbeat, which uses the pool.
        quiet = {"socket_timeout": None}
        if not clean.startswith("unix:"):
            quiet["socket_keepalive"] = True  # a TCP option: redis-py refuses it for unix://
        self._subscriber_pool = redis.ConnectionPool.from_url(clean, **quiet, **common)
        self._stream_pool = redis.ConnectionPool.from_url(clean, **quiet, **common)
        self.stream: CommandStream | None = None
        """The says' connection (while up)."""
        self.scripts = Scripts(self.redis)
        self.info = f"{socket.gethostname()} pid {os.getpid()}"
        self.up = False
        self.gen = 0
        self.changed = time.time()
        self.problem: str | None = "connecting"
        self.live_nodes = 0
        self.reconnects = 0
        self.directory: Any = None
        """The directory's ref (set by the ActorSystem): this node's inbox goes there."""
        self.rooms: dict[bytes, Any] = {}
        """channel → room ref: where the reader sends each room's events."""
        self._pending: defaultdict[bytes, deque[Callable[[bool], Any]]] = defaultdict(deque)
        self._conn: Any = None
        self._greenlets: dict[str, Any] = {}
        self.first_up = gevent.event.Event()

    def describe_fields(self) -> dict[str, Any]:
        return {"node": self.node_id, "redis": "up" if self.up else "down", "nodes": self.live_nodes,
                "channels": len(self.rooms), "reconnects": self.reconnects, "pid": os.getpid()}

    def health(self) -> dict[str, Any]:
        """The ``cluster`` field of /healthz."""
        body: dict[str, Any] = {"node": self.node_id, "redis": "up" if self.up else "down",
                                "nodes": self.live_nodes, "since": round(self.changed, 3)}
        if self.problem:
            body["problem"] = self.problem
        return body

    # --- lifecycle ------------------------------------------------------------------

    def on_start(self) -> None:
        self._greenlets["connect"] = gevent.spawn(self._connect)
        self._arm_beat()

    def on_stop(self) -> None:
        for g in self._greenlets.values():
            g.kill(block=False)
        if self._conn is not None:
            self._conn.disconnect()
        if self.stream is not None:
            self.stream.close("stopping")
        self.redis.connection_pool.disconnect()
        super().on_stop()

    def leave(self) -> None:
        """A clean exit (called by the ActorSystem at shutdown): free this node's nicks and
        memberships now, with presence leaves, instead of after the TTL."""
        if self.up:
            try:
                self.scripts.leave(args=[self.node_id])
            except _REDIS_ERRORS as exc:
                log.warning("cluster: could not leave cleanly (%s); the others will after %.0f s",
                            _why(exc), self.ttl)

    def on_receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is Subscribe:
            return self._subscribe(message)
        if kind is Unsubscribe:
            return self._unsubscribe(message)
        if kind is _Confirmed:
            if message.gen == self.gen and (waiting := self._pending.get(message.channel)):
                waiting.popleft()(True)
            return None
        if kind is _Beat:
            return self._beat()
        if kind is _Connected:
            return self._connected(message)
        if kind is _Lost or kind is Trouble:
            if message.gen == self.gen:
                self._down(message.why)
            return None
        return super().on_receive(message)

    # --- subscriptions --------------------------------------------------------------

    def _subscribe(self, msg: Subscribe) -> None:
        self.rooms[msg.channel] = msg.room
        if not self.up:
            msg.result.set(False)  # it starts alone and gets Resync when Redis is back
            return
        self._pending[msg.channel].append(msg.result.set)
        self._send("SUBSCRIBE", msg.channel)

    def _unsubscribe(self, msg: Unsubscribe) -> None:
        current = self.rooms.get(msg.channel)
        if current is None or current.actor_urn != msg.room.actor_urn:
            return  # a newer room of that name has the channel now
        del self.rooms[msg.channel]
        if self.up:
            self._send("UNSUBSCRIBE", msg.channel)

    def _send(self, *args: Any) -> None:
        try:
            self._conn.send_command(*args)
        except _REDIS_ERRORS as exc:
            self._down(_why(exc))

    def _read(self, gen: int, conn: Any) -> None:
        """The subscriber greenlet of one connection: route every event, until it breaks."""
        rooms, me, node_channel = self.rooms, self.actor_ref, self.node_channel
        n = 0
        try:
            while True:
                reply = conn.read_response()
                kind = reply[0]
                if kind == b"message":
                    ref = rooms.get(reply[1])
                    if ref is not None:
                        tell(ref, RoomEvent(reply[2]))
                    elif reply[1] == node_channel and self.directory is not None:
                        tell(self.directory, NodeEvent(reply[2]))
                elif kind == b"subscribe":
                    tell(me, _Confirmed(gen, reply[1]))
                n += 1
                if n % 64 == 0:
                    gevent.sleep(0)  # a busy channel must not starve the node (STYLE.md)
        except Exception as exc:  # noqa: BLE001 - whatever broke the connection, the answer is the same
            tell(me, _Lost(gen, _why(exc)))

    # --- up and down ----------------------------------------------------------------

    def _connect(self) -> None:
        """The connector greenlet: retry with backoff until Redis answers, then report."""
        delay = BACKOFF[0]
        while True:
            conn = self._subscriber_pool.make_connection()
            stream = None
            try:
                conn.connect()
                stream = CommandStream(self._stream_pool.make_connection(), self.actor_ref, self.gen + 1)
                # The stream sends EVALSHA only: a restarted Redis has no scripts yet.
                self.redis.script_load(_SAY)
                _fresh, live = self.scripts.beat(args=[self.node_id, self.heartbeat_ms, self.info])
            except _REDIS_ERRORS as exc:
                conn.disconnect()
                if stream is not None:
                    stream.close("not connected")
                if self.problem == "connecting":  # never connected: say so once
                    log.warning("cluster: redis unreachable (%s): serving local users only, "
                                "connecting", _why(exc))
                    self.problem = _why(exc)
                log.debug("cluster: redis still unreachable: %s", _why(exc))
                gevent.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, BACKOFF[1])
                continue
            tell(self.actor_ref, _Connected(conn, stream, int(live)))
            return

    def _connected(self, msg: _Connected) -> None:
        self._greenlets.pop("connect", None)
        self.gen += 1
        self._conn, self.stream = msg.conn, msg.stream
        msg.stream.start()
        self._greenlets["read"] = gevent.spawn(self._read, self.gen, msg.conn)
        try:
            # Rooms that emptied while Redis was away cannot clean up after themselves.
            names = [ch.decode()[len("hubbub:room:"):] for ch in self.rooms]
            self.scripts.prune(args=[self.node_id, *names])
        except _REDIS_ERRORS as exc:
            self.up = True  # so that _down does its job
            self._down(_why(exc))
            return
        self.up, self.live_nodes, self.changed = True, msg.live, time.time()
        if self.problem != "connecting":
            self.reconnects += 1
            log.warning("cluster: redis is back (node %s, %d nodes): resynchronising", self.node_id, msg.live)
        else:
            log.info("cluster: node %s joined through redis (%d nodes)", self.node_id, msg.live)
        self.problem = None
        for channel, ref in self.rooms.items():
            self._pending[channel].append(lambda ok, ref=ref: ok and tell(ref, Resync()))
        channels = [self.node_channel, *self.rooms]
        for i in range(0, len(channels), 1000):
            self._send("SUBSCRIBE", *channels[i:i + 1000])
        if self.directory is not None:
            tell(self.directory, ClusterUp())
        self.first_up.set()

    def _down(self, why: str) -> None:
        if not self.up:
            return
        self.up, self.changed, self.problem = False, time.time(), why
        log.warning("cluster: redis unreachable (%s): serving local users only, reconnecting", why)
        conn, self._conn = self._conn, None
        reader = self._greenlets.pop("read", None)
        if reader is not None:
            reader.kill(block=False)
        if conn is not None:
            conn.disconnect()
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.close(why)  # fails the says in flight: their rooms answer them alone
        pending, self._pending = self._pending, defaultdict(deque)
        for waiting in pending.values():
            for then in waiting:
                then(False)
        self._greenlets["connect"] = gevent.spawn(self._connect)

    def _arm_beat(self) -> None:
        self._greenlets["beat"] = gevent.spawn_later(self.beat_every, tell, self.actor_ref, _Beat())

    def _beat(self) -> None:
        self._arm_beat()
        if not self.up:
            return  # the connector beats when it gets through
        try:
            fresh, live = self.scripts.beat(args=[self.node_id, self.heartbeat_ms, self.info])
        except _REDIS_ERRORS as exc:
            self._down(_why(exc))
            return
        self.live_nodes = int(live)
        if fresh:
            # Redis lost our keys (a restart), or we were silent so long that the others
            # buried us: the same cure as a lost connection, a full resynchronisation.
            self._down("this node's keys were gone from Redis")


# --- the directory ------------------------------------------------------------------


class ClusterDirectoryActor(DirectoryActor):
    """The directory of one node of a cluster: nicks are unique across the cluster, and
    `dm` and kick reach users of other nodes through their node's channel.

    Local first: a nick held here, a dm or kick to a user here, never touch Redis.
    While Redis is away nicks are checked here only; when it is back every nick is
    claimed again, and a user whose nick another node took meanwhile is kicked.
    """

    def __init__(self, history_size: int, parent: HubbubActor | None = None,
                 room_class: type[RoomActor] = RoomActor, counters: Any = None, store: Any = None,
                 cluster: ClusterActor | None = None, **budget_options: Any) -> None:
        super().__init__(history_size, parent, room_class=room_class, counters=counters, store=None,
                         **budget_options)
        assert cluster is not None
        self.cluster = cluster
        """The ClusterActor object; rooms find it here too (their parent)."""
        self.node_id = cluster.node_id

    def _owner(self, session: str) -> str:
        return f"{self.node_id}/{session}"

    def _trouble(self, gen: int, exc: BaseException) -> None:
        tell(self.cluster.actor_ref, Trouble(gen, _why(exc)))

    def _claim(self, msg: ClaimNick) -> None:
        cluster = self.cluster
        if msg.nick not in self.nicks and cluster.up:
            user = self.users.get(msg.session)
            old = user.nick if user is not None and user.nick is not None else ""
            gen = cluster.gen
            try:
                ok = cluster.scripts.claim(args=[msg.nick, self._owner(msg.session), self.node_id, old])
            except _REDIS_ERRORS as exc:
                self._trouble(gen, exc)
                ok = True  # decided here for now; claimed again when Redis is back
            if not ok:
                tell(msg.user, NickResult(msg.nick, False))
                return
        super()._claim(msg)

    def _gone(self, msg: UserGone) -> None:
        user = self.users.get(msg.session)
        super()._gone(msg)
        cluster = self.cluster
        if user is not None and user.nick is not None and user.nick not in self.nicks and cluster.up:
            gen = cluster.gen
            try:
                cluster.scripts.release(args=[user.nick, self._owner(msg.session), self.node_id])
            except _REDIS_ERRORS as exc:
                self._trouble(gen, exc)

    def _dm(self, msg: SendDm) -> None:
        if msg.to in self.nicks or not self.cluster.up:
            return super()._dm(msg)
        payload = codec.encode(codec.dm(msg.sender, msg.text, msg.ts))
        if self._send(msg.to, "D", payload):
            self.counters.dms += 1
            tell(msg.user, DmResult(msg.client_id, True))
        else:
            tell(msg.user, DmResult(msg.client_id, False))
        return None

    def _kick(self, msg: KickNick) -> bool:
        if msg.nick in self.nicks or not self.cluster.up:
            return super()._kick(msg)
        return self._send(msg.nick, "K", msg.reason.encode())

    def _send(self, nick: str, kind: str, body: bytes) -> bool:
        gen = self.cluster.gen
        try:
            return bool(self.cluster.scripts.send(args=[nick, kind, body]))
        except _REDIS_ERRORS as exc:
            self._trouble(gen, exc)
            return False

    def _node_event(self, msg: NodeEvent) -> None:
        data = msg.data
        session, _, body = data[1:].partition(b" ")
        user = self.users.get(session.decode())
        if user is None:
            return  # gone since the sender looked the nick up
        if data[:1] == b"D":
            tell(user.ref, Deliver(body))
        elif data[:1] == b"K":
            tell(user.ref, Kick(body.decode()))

    def _cluster_up(self, msg: ClusterUp) -> None:
        cluster = self.cluster
        pairs = [x for nick, session in self.nicks.items() for x in (nick, self._owner(session))]
        gen = cluster.gen
        try:
            lost = cluster.scripts.reclaim(args=[self.node_id, *pairs])
        except _REDIS_ERRORS as exc:
            self._trouble(gen, exc)
            return
        for nick in lost:
            session = self.nicks.get(nick.decode())
            if session is not None:
                log.warning("cluster: nick %r was taken on another node while Redis was away", nick)
                tell(self.users[session].ref, Kick("your nick was taken on another node while the cluster was split"))

    _handlers: dict[type, Any] = {}


ClusterDirectoryActor._handlers = {
    **DirectoryActor._handlers,
    ClaimNick: ClusterDirectoryActor._claim,
    UserGone: ClusterDirectoryActor._gone,
    SendDm: ClusterDirectoryActor._dm,
    KickNick: ClusterDirectoryActor._kick,
    NodeEvent: ClusterDirectoryActor._node_event,
    ClusterUp: ClusterDirectoryActor._cluster_up,
}


# --- rooms --------------------------------------------------------------------------


class ClusterHistory(RoomHistory):
    """A room's local mirror of its history: messages numbered by Redis are recorded as
    they are delivered, so joins and `since` on this node need no round trip."""

    @classmethod
    def adopt(cls, history: RoomHistory) -> ClusterHistory:
        if isinstance(history, cls):
            return history
        pool = history.pool
        history.detach()
        return cls(history.keep, history.last_seq, history.recent(), history.max_bytes, pool)

    # record() is RoomHistory's: messages kept as their encoded bytes.

    def merged(self, last_seq: int, frames: list[dict[str, Any]]) -> ClusterHistory:
        """This mirror with Redis's copy laid over it (Redis wins where both have a seq)."""
        last_seq = max(last_seq, self.last_seq)
        first = frames[0]["seq"] if frames else last_seq + 1
        older = [m for m in self.recent() if m["seq"] < first]
        pool = self.pool
        self.detach()
        return ClusterHistory(self.keep, last_seq, older + frames, self.max_bytes, pool)


class ClusterRoom:
    """The cluster behaviour of a room, mixed in before a RoomActor class.

    Synchronised (Redis up, snapshot taken under the current generation): every change
    goes to Redis as one script and comes back on the channel, and only then reaches
    this node's members, the sender's ack excepted.  Not synchronised (Redis away, or
    the snapshot still to come): the room works like a single-node room, for the
    members on this node only, with seq going on from the last one it saw; the next
    snapshot puts its members back into Redis and keeps seq from going backwards.
    """

    # Provided by RoomActor:
    name: str
    history: Any
    members: dict[str, tuple[Any, str]]
    outboxes: dict[str, Any]
    counters: Any
    clock: Any
    watchers: Any
    actor_ref: Any
    parent: Any

    def __init__(self, name: str, history: RoomHistory, directory: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(name, ClusterHistory.adopt(history), directory, *args, **kwargs)  # type: ignore[call-arg]
        # The parent is the ClusterDirectoryActor: rooms find the cluster there, so the
        # directory's way of starting rooms stays the single-node one.
        self.cluster: ClusterActor = self.parent.cluster
        self.prefix = f"{self.cluster.node_id}/"
        self.channel = f"hubbub:room:{name}".encode()
        self.keys = room_keys(name)
        self.node_rooms = f"hubbub:node:{self.cluster.node_id}:rooms"
        self.roster: dict[str, str] = {}
        """member → nick: the whole cluster's members as this room last heard."""
        self.ev = 0
        """The last event of the channel applied here."""
        self.synced_gen = -1
        """The cluster generation of the last snapshot (-1: none: the room is alone)."""
        self.suspects: dict[str, float] = {}
        """member → deadline: missing from the last snapshot, maybe only late (_reconcile)."""
        self.tag = secrets.token_hex(4).encode()
        """This room incarnation's mark on its says (``<tag>:<n>``)."""
        self._says = 0
        self._unacked: dict[int, tuple[RoomSay, int]] = {}
        """n → (the say, generation): sent to Redis, sender not acked yet."""
        self._told = False
        """This room told its members who is in the room (a room restarted after a
        failure inherits members that its predecessor told: it announces no changes
        before its first snapshot)."""

    def describe_fields(self) -> dict[str, Any]:
        fields = super().describe_fields()  # type: ignore[misc]
        fields.update({"cluster_members": len(self.roster), "synced": self._synced()})
        return fields

    def on_start(self) -> None:
        super().on_start()  # type: ignore[misc]
        # The snapshot must be taken after Redis confirmed the subscription: anything
        # published in between would be in neither.  The wait is bounded: a room that
        # gives up starts alone and takes its snapshot when the confirmation comes (or
        # when Redis is back, if it was away).
        result = gevent.event.AsyncResult()
        tell(self.cluster.actor_ref, Subscribe(self.channel, self.actor_ref, result))
        if not result.wait(SUBSCRIBE_WAIT):
            # Redis is slow rather than away: start alone, catch up once it confirms.
            ref = self.actor_ref
            result.rawlink(lambda done: done.value and tell(ref, Resync()))
        elif result.get():
            self._sync()

    def on_receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is RoomEvent:
            return self._event(message.data)
        if kind is Resync:
            return self._sync()
        if kind is _SayDone:
            return self._said(message)
        if kind is _Recheck:
            return self._recheck()
        return super().on_receive(message)  # type: ignore[misc]

    def _synced(self) -> bool:
        return self.cluster.up and self.synced_gen == self.cluster.gen

    def _trouble(self, gen: int, exc: BaseException) -> None:
        self.synced_gen = -1
        tell(self.cluster.actor_ref, Trouble(gen, _why(exc)))

    def _presence(self, op: str, member: str, nick: str, last: bool = False) -> bool:
        """Run the presence script; False (and the room is alone) if Redis failed."""
        counters, _history, members = self.keys
        gen = self.cluster.gen
        try:
            self.cluster.scripts.presence(keys=[counters, members, self.node_rooms],
                                          args=[self.channel, op, member, nick, self.name, "1" if last else "0"])
            return True
        except _REDIS_ERRORS as exc:
            self._trouble(gen, exc)
            return False

    # --- snapshot -------------------------------------------------------------------

    def _sync(self) -> None:
        cluster = self.cluster
        if not cluster.up:
            return
        gen = cluster.gen
        mine = [x for session, (_ref, nick) in self.members.items() for x in (self.prefix + session, nick)]
        counters, history, members = self.keys
        try:
            ev, seq, flat, frames, before = cluster.scripts.sync(
                keys=[counters, history, members, self.node_rooms],
                args=[self.channel, self.prefix, self.history.last_seq, self.name, *mine])
            if before < self.history.last_seq and self.history.keep:
                # Redis is behind this room: it restarted without its data, or never had
                # what was said here while it was away.  Give it what this node kept.
                ours = [codec.encode(m) for m in self.history.recent() if m["seq"] > before]
                if ours:
                    cluster.scripts.seed(keys=[history], args=[self.history.keep, *ours])
        except _REDIS_ERRORS as exc:
            self._trouble(gen, exc)
            return
        roster = {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}
        kept = [json.loads(f) for f in frames]
        if self.members:  # someone here saw the room before: tell them what they missed
            if self._told:
                roster = self._reconcile(roster)
            for raw, frame in zip(frames, kept, strict=True):
                if frame["seq"] > self.history.last_seq:  # said while this room was not listening
                    self._deliver(frame, raw)
        self.roster, self._told = roster, True
        self.history = self.history.merged(int(seq), kept)
        self.ev, self.synced_gen = int(ev), gen

    def _reconcile(self, roster: dict[str, str]) -> dict[str, str]:
        """Tell this node's members how the others changed while the room was not listening;
        returns the roster to keep.

        A member missing from the snapshot may only be late: after a Redis restart every
        node puts its own members back when it resynchronises, in no particular order.
        So it stays listed for one node TTL and is told as gone only if it has not come
        back by then (the same bound as for the users of a dead node).
        """
        old, mine = self.roster, self.prefix
        for member, nick in roster.items():
            self.suspects.pop(member, None)
            if member.startswith(mine):
                continue  # this node's members: the room's own view is the truth
            before = old.get(member)
            if before != nick:
                if before is not None:
                    self._announce("leave", before)
                self._announce("join", nick)
        missing = {m: nick for m, nick in old.items() if m not in roster and not m.startswith(mine)}
        if missing:
            deadline = self.clock.monotonic() + self.cluster.ttl
            for member in missing:
                self.suspects.setdefault(member, deadline)
            gevent.spawn_later(self.cluster.ttl, tell, self.actor_ref, _Recheck())
        return {**roster, **missing}

    def _recheck(self) -> None:
        """Members missing since the last snapshot that did not come back in time are gone."""
        now = self.clock.monotonic()
        for member, deadline in list(self.suspects.items()):
            if deadline <= now:
                del self.suspects[member]
                nick = self.roster.pop(member, None)
                if nick is not None:
                    self._announce("leave", nick)
        if self.suspects:  # the loop's clock may run a little behind this one: look again
            wait = max(0.01, min(self.suspects.values()) - now)
            gevent.spawn_later(wait, tell, self.actor_ref, _Recheck())

    # --- the channel ----------------------------------------------------------------

    def _event(self, data: bytes) -> None:
        if not self._synced():
            return  # the next snapshot covers it
        head, _, rest = data.partition(b" ")
        ev = int(head[1:])
        if ev <= self.ev:
            return  # in the snapshot already
        if ev != self.ev + 1:
            self._sync()  # events went missing (cannot happen on one connection): start over
            return
        self.ev = ev
        kind = head[:1]
        if kind == b"M":
            seq_text, _, rest = rest.partition(b" ")
            tag, _, payload = rest.partition(b" ")
            seq = int(seq_text)
            if self._unacked:
                self._ack_own(tag, seq)
            if seq > self.history.last_seq:
                self._deliver(json.loads(payload), payload)
        # Presence is told only when it changes what this room's members were told: after
        # a resynchronisation the others re-register members everybody here knows.
        elif kind == b"P":
            op, member, nick = rest.decode().split(" ")
            self.suspects.pop(member, None)
            if op == "j":
                if self.roster.get(member) != nick:
                    self.roster[member] = nick
                    self._announce("join", nick, self._local(member))
            elif self.roster.pop(member, None) is not None:
                self._announce("leave", nick, self._local(member))
        elif kind == b"R":
            member, old, new = rest.decode().split(" ")
            if self.roster.get(member) != new:
                self.roster[member] = new
                skip = self._local(member)
                self._announce("leave", old, skip)
                self._announce("join", new, skip)

    def _local(self, member: str) -> str | None:
        """The session of a member of this node (skipped in its own presence), else None."""
        return member[len(self.prefix):] if member.startswith(self.prefix) else None

    def _deliver(self, frame: dict[str, Any], payload: bytes) -> None:
        self.history.record(frame, payload)
        self._broadcast(payload, sender=frame["from"])  # type: ignore[attr-defined]
        if self.watchers:
            publish(self.watchers, RoomMessage(self.name, frame["from"], frame["text"], frame["seq"], frame["ts"]))
        counters = self.counters
        counters.deliveries += len(self.members)
        counters.fanout_seconds.observe(max(0.0, self.clock.wall() - frame["ts"]))

    def _announce(self, event: str, nick: str, skip: str | None = None) -> None:
        self._broadcast(codec.encode(codec.presence(self.name, event, nick)), skip=skip)  # type: ignore[attr-defined]
        if self.watchers:
            publish(self.watchers, RoomPresence(self.name, event, nick))

    # --- what members do ------------------------------------------------------------

    def _say(self, msg: RoomSay) -> None:
        if msg.session not in self.members or not self._synced():
            return super()._say(msg)  # type: ignore[misc]  # alone: local seq, local fan-out
        frame = codec.encode(codec.message(self.name, msg.nick, msg.text, 0, msg.ts))
        # Redis puts the seq in: split the encoded frame around it (a quote inside a
        # string is escaped, so '"seq":0' occurs only as the key).
        head, _, tail = frame.rpartition(b'"seq":0')
        counters, history, _members = self.keys
        cluster = self.cluster
        self._says += 1
        n = self._says
        self._unacked[n] = (msg, cluster.gen)
        # Not waiting for the answer: the sender is acked by whichever comes first, the
        # answer or the message itself on the channel (recognised by its tag), so the
        # ack always precedes the message and the room never waits on Redis.
        cluster.stream.send(  # type: ignore[union-attr]  # up, so it has a stream
            ("EVALSHA", cluster.scripts.say.sha, 2, counters, history, self.channel,
             head + b'"seq":', tail, self.history.keep, b"%s:%d" % (self.tag, n)),
            lambda reply, n=n, ref=self.actor_ref, gen=cluster.gen: tell(ref, _SayDone(n, reply, gen)))
        return None

    def _said(self, msg: _SayDone) -> None:
        pending = self._unacked.pop(msg.n, None)
        if pending is None:
            return  # acked when the message came back
        say, _gen = pending
        if isinstance(msg.reply, Exception):
            # Redis may or may not have it.  The room is alone from now on and ignores
            # the channel until its next snapshot, so answering here duplicates nothing.
            self._trouble(msg.gen, msg.reply)
            super()._say(say)  # type: ignore[misc]
            return
        self._ack(say, int(msg.reply))

    def _ack_own(self, tag: bytes, seq: int) -> None:
        """A say of this room came back before Redis's answer: ack it first."""
        mine, _, n = tag.partition(b":")
        if mine == self.tag and (pending := self._unacked.pop(int(n), None)) is not None:
            self._ack(pending[0], seq)

    def _ack(self, say: RoomSay, seq: int) -> None:
        # The way RoomActor acks: on the member's connection when it has one, the path
        # its messages take, so that the ack is ahead of the message.
        outbox = self.outboxes.get(say.session)
        if outbox is not None:
            outbox.send_text(codec.encode(codec.ack(say.client_id, seq)))
            self.counters.frames_out += 1
        else:
            tell(say.user, Acked(say.client_id, seq))
        self.counters.messages += 1

    def _join(self, msg: RoomJoin) -> None:
        self._told = True
        fresh = msg.session not in self.members
        member = self.prefix + msg.session
        self.members[msg.session] = (msg.user, msg.nick)
        # Synchronised, the others hear of the join when its event comes back: the
        # roster follows the channel, so the members list and later presence agree.
        alone = not (self._synced() and self._presence("j", member, msg.nick))
        if alone:
            self.roster[member] = msg.nick
        if msg.since is None:
            history, complete = self.history.recent(), True
        else:
            history, complete = self.history.since(msg.since)
        nicks = sorted({*self.roster.values(), msg.nick})
        payload: bytes | None = codec.encode(codec.joined(self.name, nicks, history, complete))
        if msg.outbox is not None:  # as RoomActor does: `joined` ahead of the room's frames
            self.outboxes[msg.session] = msg.outbox
            msg.outbox.send_text(payload)
            self.counters.frames_out += 1
            payload = None
        tell(msg.user, JoinedRoom(self.name, self.actor_ref, payload))
        if alone and fresh:
            self._announce("join", msg.nick, msg.session)

    def _leave(self, msg: RoomLeave) -> None:
        member = self.members.pop(msg.session, None)
        self.outboxes.pop(msg.session, None)
        if member is None:
            return
        key = self.prefix + msg.session
        if not (self._synced() and self._presence("l", key, member[1], last=not self.members)):
            self.roster.pop(key, None)
            self._announce("leave", member[1])

    def _rename(self, msg: RoomRename) -> None:
        member = self.members.get(msg.session)
        if member is None:
            return
        self.members[msg.session] = (member[0], msg.new)
        key = self.prefix + msg.session
        if not (self._synced() and self._presence("r", key, msg.new)):
            self.roster[key] = msg.new
            self._announce("leave", msg.old, msg.session)
            self._announce("join", msg.new, msg.session)

    def _retire(self) -> None:
        tell(self.cluster.actor_ref, Unsubscribe(self.channel, self.actor_ref))
        super()._retire()  # type: ignore[misc]


class ClusterRoomActor(ClusterRoom, RoomActor):
    """The cluster room (see :class:`ClusterRoom`)."""


def room_class_for(room_class: type[RoomActor]) -> type[RoomActor]:
    """The cluster version of a room class (RoomActor, or a subclass given to ActorSystem)."""
    if issubclass(room_class, ClusterRoom):
        return room_class
    if room_class is RoomActor:
        return ClusterRoomActor
    return type(f"Cluster{room_class.__name__}", (ClusterRoom, room_class), {})
