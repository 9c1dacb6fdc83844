"""The link: this node's only connection to Redis (``ClusterActor``).

Every Redis call of the node goes through here, and none of them runs in an actor's
mailbox, this one's included: a ``Call`` runs in a greenlet of its own and its answer
comes back as a ``Reply`` message; says go down one pipelined command stream and their
answers come back as ``SayDone``; the subscriber greenlet turns each channel message
into a ``RoomEvent`` (or a ``NodeEvent`` for the directory).  A Redis that stalls holds
greenlets, never a mailbox (issue 12.2).

Nothing is retried by the client library (redis-py's own retry would run a script a
second time after a timeout): a failed command makes the link go *down*; rooms and the
directory learn it as ``LinkDown``, and on reconnection every room takes a new snapshot
(``Resync``).  Says lost in flight are sent again by their rooms with the same
idempotency key, so a repeat answers the first seq instead of running twice.

The link also beats the node's heartbeat and buries dead nodes in bounded slices (one
small script per room, one per nick: never one long script that blocks Redis).

Over 500 lines on purpose (~680): it is the one place that talks to Redis, and its parts
(calls, subscriptions, the up/down generations, heartbeat and burials) all read and
change the same connection state; the URL and the command stream live beside it
(settings.py, stream.py).
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import gevent
import gevent.event
import redis
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..base import HubbubActor, tell
from . import keys as K
from .messages import (
    Call,
    ClusterUp,
    LinkDown,
    NodeEvent,
    Reclaim,
    Reply,
    Resync,
    RoomEvent,
    SayDone,
    SaySend,
    Subscribe,
    Unsubscribe,
)
from .settings import DEFAULT_NODE_TTL, DEFAULT_ROOM_TTL, Settings, parse_url
from .stream import CommandStream, Lost, why

__all__ = [
    "ClusterActor",
    "DEFAULT_NODE_TTL",
    "DEFAULT_ROOM_TTL",
    "LIVE",
    "PUB",
    "SAID_TTL_MS",
    "Settings",
    "parse_url",
    "STARTUP_WAIT",
]

log = logging.getLogger("hubbub.cluster")

COMMAND_TIMEOUT = 2.0
"""A Redis command slower than this counts as Redis being away."""
CONNECT_TIMEOUT = 1.0
POOL_SIZE = 32
"""Command connections per node; calls wait (in their greenlets) for a free one."""
BACKOFF = (0.05, 2.0)
"""First and longest pause between reconnection attempts (doubling, with jitter)."""
STARTUP_WAIT = 2.0
"""How long a starting node waits for Redis before it serves (and keeps trying)."""
SAID_TTL_MS = 600_000
"""How long a say's idempotency key lives: longer than any reconnection takes."""
BURY_BATCH = 100
"""Rooms or nicks of a dead node handled per SSCAN step while burying it."""

_REDIS_ERRORS = (redis.RedisError, OSError)

PUB = "\x00pub"
"""In a Call's or a say's ARGV: replaced by the publish command (SPUBLISH or PUBLISH)."""
LIVE = "\x00live"
"""In a Call's ARGV: replaced by the live nodes, comma-separated."""
_SCRIPTS = (
    "say",
    "presence",
    "sync",
    "drop_members",
    "claim",
    "release",
    "send",
    "append",
    "unlease",
)
_STREAMED = {"say": 3, "append": 2, "unlease": 2}
"""Scripts sent on the says' stream, with their number of keys."""


def _script_text(name: str) -> str:
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text()


# --- the link's own messages -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Connected:
    """The connector greenlet reached Redis."""

    shards: dict[str, tuple[Any, CommandStream]]
    """Per primary ("host:port"; one for a single Redis): subscriber connection, command stream."""
    pub: bytes
    live: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Confirmed:
    """Redis confirmed a (S)SUBSCRIBE."""

    gen: int
    channel: bytes


@dataclass(frozen=True, slots=True)
class _Beat:
    """Time to beat."""


@dataclass(frozen=True, slots=True)
class _Beaten:
    """A beat's result."""

    gen: int
    fresh: bool
    live: tuple[str, ...]
    dead: tuple[str, ...]


class ClusterActor(HubbubActor):
    """This node's link to Redis (see the module docstring)."""

    def __init__(self, url: str, parent: HubbubActor | None = None) -> None:
        super().__init__("cluster", parent)
        self.settings = s = parse_url(url)
        self.ttl = s.node_ttl
        self.room_ttl_ms = int(s.room_ttl * 1000)
        self.node_id = secrets.token_hex(4)
        self.node_channel = K.node_channel(self.node_id)
        self.heartbeat_ms = int(self.ttl * 1000 * 2 / 3)
        # Beat 4 times per heartbeat lifetime: 3 beats may be late before the others
        # give this node up; a dead node's traces go within 2/3 + 1/6 of the TTL.
        self.beat_every = self.ttl / 6
        common: dict[str, Any] = {
            "protocol": 2,
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "client_name": f"hubbub-{self.node_id}",
            # No retry at all: a retried script after a timeout may run twice.
            "retry": Retry(NoBackoff(), 0),
        }
        quiet: dict[str, Any] = {
            "socket_timeout": None
        }  # the subscriber and the stream wait as long as all is quiet
        if not s.url.startswith("unix:"):
            quiet["socket_keepalive"] = True  # a TCP option: redis-py refuses it for unix://
        if s.sentinels:
            sentinel = redis.sentinel.Sentinel(list(s.sentinels), socket_timeout=CONNECT_TIMEOUT)
            kw = {"db": s.db, "password": s.password, **common}
            self.redis = sentinel.master_for(s.service, socket_timeout=COMMAND_TIMEOUT, **kw)
            self._subscriber_pool = sentinel.master_for(s.service, **quiet, **kw).connection_pool
            self._stream_pool = sentinel.master_for(s.service, **quiet, **kw).connection_pool
        else:
            self.redis = redis.Redis(
                connection_pool=redis.BlockingConnectionPool.from_url(
                    s.url,
                    max_connections=POOL_SIZE,
                    timeout=COMMAND_TIMEOUT,
                    socket_timeout=COMMAND_TIMEOUT,
                    **common,
                )
            )
            self._subscriber_pool = redis.ConnectionPool.from_url(s.url, **quiet, **common)
            self._stream_pool = redis.ConnectionPool.from_url(s.url, **quiet, **common)
        self.clustered = False
        """Redis Cluster (found at the first connection): commands routed by slot, one
        subscriber connection and one command stream per primary."""
        self._quiet = {**quiet, **common}
        self.scripts = {name: self.redis.register_script(_script_text(name)) for name in _SCRIPTS}
        self.info = f"{socket.gethostname()} pid {os.getpid()}"
        self.up = False
        self.gen = 0
        self.pub = b"PUBLISH"
        """The room channels' publish command: SPUBLISH (sharded) where Redis has it (≥ 7)."""
        self.changed = time.time()
        self.problem: str | None = "connecting"
        self.live: tuple[str, ...] = ()
        self.reconnects = 0
        self.directory: Any = None
        """The directory's ref (set by the ActorSystem): this node's inbox goes there."""
        self.rooms: dict[bytes, Any] = {}
        """channel → room ref."""
        self.shards: dict[str, tuple[Any, CommandStream]] = {}
        """While up: per primary, the subscriber connection and the says' command stream."""
        self._greenlets: dict[str, Any] = {}
        self._burying: set[str] = set()
        self.first_up = gevent.event.Event()

    @property
    def live_nodes(self) -> int:
        return len(self.live)

    def describe_fields(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "redis": "up" if self.up else "down",
            "nodes": self.live_nodes,
            "channels": len(self.rooms),
            "reconnects": self.reconnects,
            "pid": os.getpid(),
        }

    def health(self) -> dict[str, Any]:
        """The ``cluster`` field of /healthz."""
        body: dict[str, Any] = {
            "node": self.node_id,
            "redis": "up" if self.up else "down",
            "nodes": self.live_nodes,
            "since": round(self.changed, 3),
        }
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
        self._close_shards("stopping")
        if not self.clustered:
            self.redis.connection_pool.disconnect()
        super().on_stop()

    def leave(self) -> None:
        """A clean exit (the ActorSystem calls it at shutdown): free this node's nicks and
        memberships now, with presence leaves, instead of after the TTL."""
        if not self.up:
            return
        try:
            self.redis.delete(K.node_key(self.node_id))
            with gevent.Timeout(3):
                self._bury(self.node_id, lock=False)
        except (*_REDIS_ERRORS, gevent.Timeout) as exc:
            log.warning(
                "cluster: could not leave cleanly (%s); the others will after %.0f s",
                why(exc),
                self.ttl,
            )

    def on_receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is SaySend:
            return self._say(message)
        if kind is Call:
            return self._call(message)
        if kind is Subscribe:
            return self._subscribe(message)
        if kind is Unsubscribe:
            return self._unsubscribe(message)
        if kind is _Confirmed:
            if message.gen == self.gen and (ref := self.rooms.get(message.channel)) is not None:
                tell(ref, Resync())
            return None
        if kind is Reclaim:
            return self._spawn(self._reclaim, message, self.gen)
        if kind is _Beat:
            return self._beat()
        if kind is _Beaten:
            return self._beaten(message)
        if kind is _Connected:
            return self._connected(message)
        if kind is Lost:
            if message.gen == self.gen:
                self._down(message.why)
            return None
        return super().on_receive(message)

    # --- calls ----------------------------------------------------------------------

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        gevent.spawn(fn, *args)

    def _call(self, call: Call) -> None:
        if not self.up:
            if call.reply_to is not None:
                tell(
                    call.reply_to,
                    Reply(call.token, ConnectionError(self.problem or "redis is unreachable")),
                )
            return
        gevent.spawn(self._run, call, self.gen, self.live)

    def _run(self, call: Call, gen: int, live: tuple[str, ...]) -> None:
        """One call, in its own greenlet: a stalled Redis holds this greenlet, nothing else."""
        try:
            if call.script == "cmd":
                value: Any = self.redis.execute_command(*call.args)
            else:
                if call.script == "claim":  # listed first, so that a lost claim is cleaned up
                    self.redis.sadd(
                        K.node_nicks(self.node_id), call.keys[0][len("hubbub:{n:") : -1]
                    )
                args = tuple(
                    self.pub if a == PUB else ",".join(live) if a == LIVE else a for a in call.args
                )
                if call.live:
                    args = (*args, *live)
                value = self.scripts[call.script](keys=list(call.keys), args=list(args))
        except redis.ResponseError as exc:
            exc.script_error = True  # type: ignore[attr-defined]  # ran and refused: not a broken link
            value = exc
        except _REDIS_ERRORS as exc:
            value = exc
            tell(self.actor_ref, Lost(gen, why(exc)))
        if call.reply_to is not None:
            tell(call.reply_to, Reply(call.token, value))

    def _shard(self, key: Any) -> tuple[Any, CommandStream] | None:
        """The subscriber connection and stream of the primary that holds ``key`` (no I/O:
        redis-py's slot table)."""
        if not self.clustered:
            return next(iter(self.shards.values()), None)
        node = self.redis.get_node_from_key(key)
        return self.shards.get(node.name) if node is not None else None

    def _say(self, msg: SaySend) -> None:
        shard = self._shard(msg.args[0]) if self.up else None
        stream = shard[1] if shard is not None else None
        if stream is None:
            tell(msg.room, SayDone(msg.n, ConnectionError(self.problem or "redis is unreachable")))
            return
        args = tuple(self.pub if a == PUB else a for a in msg.args)
        room, n = msg.room, msg.n

        def then(reply: Any) -> None:
            tell(room, SayDone(n, reply))

        stream.send(("EVALSHA", self.scripts[msg.script].sha, _STREAMED[msg.script], *args), then)

    # --- subscriptions --------------------------------------------------------------

    def _subscribe(self, msg: Subscribe) -> None:
        self.rooms[msg.channel] = msg.room
        if self.up:
            self._send(msg.channel, self._sub, msg.channel)
        else:  # it gets its Resync when Redis is back
            tell(msg.room, LinkDown())

    def _unsubscribe(self, msg: Unsubscribe) -> None:
        current = self.rooms.get(msg.channel)
        if current is None or current.actor_urn != msg.room.actor_urn:
            return  # a newer room of that name has the channel now
        del self.rooms[msg.channel]
        if self.up:
            self._send(
                msg.channel,
                b"SUNSUBSCRIBE" if self.pub == b"SPUBLISH" else b"UNSUBSCRIBE",
                msg.channel,
            )

    @property
    def _sub(self) -> bytes:
        return b"SSUBSCRIBE" if self.pub == b"SPUBLISH" else b"SUBSCRIBE"

    def _send(self, channel: bytes, *args: Any) -> None:
        # A write of a few bytes on the subscriber socket: the kernel buffers it.
        shard = self._shard(channel)
        if shard is None:
            self._down(f"no primary holds the slot of {channel!r}")
            return
        try:
            shard[0].send_command(*args)
        except _REDIS_ERRORS as exc:
            self._down(why(exc))

    def _read(self, gen: int, conn: Any) -> None:
        """The subscriber greenlet of one connection: route every event, until it breaks."""
        rooms, me, node_channel, directory = (
            self.rooms,
            self.actor_ref,
            self.node_channel,
            self.directory,
        )
        n = 0
        try:
            while True:
                reply = conn.read_response()
                kind = reply[0]
                if kind == b"smessage" or kind == b"message":
                    ref = rooms.get(reply[1])
                    if ref is not None:
                        tell(ref, RoomEvent(reply[2]))
                    elif reply[1] == node_channel and directory is not None:
                        tell(directory, NodeEvent(reply[2]))
                elif kind == b"ssubscribe" or kind == b"subscribe":
                    tell(me, _Confirmed(gen, reply[1]))
                n += 1
                if n % 64 == 0:
                    gevent.sleep(0)  # a busy channel must not starve the node (STYLE.md)
        except Exception as exc:  # noqa: BLE001 - whatever broke the connection, the answer is the same
            tell(me, Lost(gen, why(exc)))

    # --- up and down ----------------------------------------------------------------

    def _connect(self) -> None:
        """The connector greenlet: retry with backoff until Redis answers, then report."""
        delay = BACKOFF[0]
        while True:
            shards: dict[str, tuple[Any, CommandStream]] = {}
            try:
                info = self._server_info()
                version = str(info.get("redis_version", "0"))
                pub = b"SPUBLISH" if int(version.split(".")[0]) >= 7 else b"PUBLISH"
                if info.get("redis_mode") == "cluster" and not self.clustered:
                    self._cluster_client()
                pools = self._primary_pools()
                for name, (sub_pool, stream_pool) in pools.items():
                    conn = sub_pool.make_connection()
                    shards[name] = (
                        conn,
                        CommandStream(stream_pool.make_connection(), self.actor_ref, self.gen + 1),
                    )
                    conn.connect()
                    # The stream sends EVALSHA only: a restarted Redis has no scripts yet.
                    for script in _STREAMED:
                        shards[name][1].conn.send_command("SCRIPT", "LOAD", _script_text(script))
                        shards[name][1].conn.read_response()
                _fresh, live, _dead = self._beat_once()
            except _REDIS_ERRORS as exc:
                for conn, stream in shards.values():
                    conn.disconnect()
                    stream.close("not connected")
                if self.problem == "connecting":  # never connected: say so once
                    log.warning(
                        "cluster: redis unreachable (%s): rooms refuse says with "
                        "`unavailable` until it answers; connecting",
                        why(exc),
                    )
                    self.problem = why(exc)
                gevent.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, BACKOFF[1])
                continue
            tell(self.actor_ref, _Connected(shards, pub, live))
            return

    def _server_info(self) -> dict[str, Any]:
        """INFO server of the (first) Redis: its version, and whether it is a Redis Cluster."""
        if self.clustered:
            node = self.redis.get_primaries()[0]
            return self.redis.get_redis_connection(node).info("server")
        conn = self._subscriber_pool.make_connection()
        try:
            conn.connect()
            conn.send_command("INFO", "server")
            text = conn.read_response()
        finally:
            conn.disconnect()
        text = text.decode() if isinstance(text, bytes) else str(text)
        return dict(
            line.split(":", 1)
            for line in text.splitlines()
            if ":" in line and not line.startswith("#")
        )

    def _cluster_client(self) -> None:
        """Redis Cluster: a client that routes each command by its key's slot, and no
        retry of its own (a script retried after a timeout could run twice)."""
        from redis.cluster import RedisCluster

        self.redis = RedisCluster.from_url(
            self.settings.url,
            socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
            client_name=f"hubbub-{self.node_id}",
            protocol=2,
        )
        self.scripts = {name: self.redis.register_script(_script_text(name)) for name in _SCRIPTS}
        self.clustered = True
        log.info(
            "cluster: redis is a Redis Cluster of %d primaries", len(self.redis.get_primaries())
        )

    def _primary_pools(self) -> dict[str, tuple[Any, Any]]:
        """Per primary: a pool for its subscriber connection and one for its says' stream."""
        if not self.clustered:
            return {"redis": (self._subscriber_pool, self._stream_pool)}
        self.redis.nodes_manager.initialize()  # the slot table may have changed since the last time
        pools = {}
        for node in self.redis.get_primaries():
            pools[node.name] = (
                redis.ConnectionPool(host=node.host, port=node.port, **self._quiet),
                redis.ConnectionPool(host=node.host, port=node.port, **self._quiet),
            )
        return pools

    def _close_shards(self, why: str) -> None:
        shards, self.shards = self.shards, {}
        for conn, stream in shards.values():
            conn.disconnect()
            stream.close(why)

    def _connected(self, msg: _Connected) -> None:
        self._greenlets.pop("connect", None)
        self.gen += 1
        self.pub = msg.pub
        self.shards = msg.shards
        for name, (conn, stream) in msg.shards.items():
            stream.start()
            self._greenlets[f"read {name}"] = gevent.spawn(self._read, self.gen, conn)
        self.up, self.changed, self.live = True, time.time(), msg.live
        if self.problem != "connecting":
            self.reconnects += 1
            log.warning(
                "cluster: redis is back (node %s, %d nodes): resynchronising",
                self.node_id,
                len(msg.live),
            )
        else:
            log.info(
                "cluster: node %s joined through redis (%d nodes)", self.node_id, len(msg.live)
            )
        self.problem = None
        # Rooms that emptied while Redis was away cannot clean up after themselves.
        gevent.spawn(
            self._prune, {ch.decode()[len("hubbub:{r:") : -1] for ch in self.rooms}, self.gen
        )
        # Classic pub/sub for the node's inbox: a Redis Cluster broadcasts it to every shard.
        self._send(self.node_channel, b"SUBSCRIBE", self.node_channel)
        for channel in self.rooms:
            self._send(channel, self._sub, channel)
        if self.directory is not None:
            tell(self.directory, ClusterUp())
        self.first_up.set()

    def _down(self, why: str) -> None:
        if not self.up:
            return
        self.up, self.changed, self.problem = False, time.time(), why
        log.warning("cluster: redis unreachable (%s): says answer `unavailable`; reconnecting", why)
        for name in [n for n in self._greenlets if n.startswith("read ")]:
            self._greenlets.pop(name).kill(block=False)
        self._close_shards(why)
        for ref in set(self.rooms.values()):
            tell(ref, LinkDown())
        if self.directory is not None:
            tell(self.directory, LinkDown())
        self._greenlets["connect"] = gevent.spawn(self._connect)

    # --- heartbeat and burials ------------------------------------------------------

    def _arm_beat(self) -> None:
        self._greenlets["beat"] = gevent.spawn_later(self.beat_every, tell, self.actor_ref, _Beat())

    def _beat(self) -> None:
        self._arm_beat()
        if self.up:  # the connector beats when it gets through
            gevent.spawn(self._beat_in_greenlet, self.gen)

    def _beat_in_greenlet(self, gen: int) -> None:
        try:
            fresh, live, dead = self._beat_once()
        except _REDIS_ERRORS as exc:
            tell(self.actor_ref, Lost(gen, why(exc)))
            return
        tell(self.actor_ref, _Beaten(gen, fresh, live, dead))

    def _beat_once(self) -> tuple[bool, tuple[str, ...], tuple[str, ...]]:
        """Plain commands, one key each (Redis Cluster routes them): no cross-slot script."""
        r = self.redis
        old = r.set(K.node_key(self.node_id), self.info, px=self.heartbeat_ms, get=True)
        r.sadd(K.NODES, self.node_id)
        nodes = sorted(n.decode() for n in r.smembers(K.NODES))
        pipe = r.pipeline(transaction=False)
        for n in nodes:
            pipe.exists(K.node_key(n))
        alive = pipe.execute()
        live = tuple(n for n, a in zip(nodes, alive, strict=True) if a)
        dead = tuple(n for n, a in zip(nodes, alive, strict=True) if not a)
        return old is None, live, dead

    def _beaten(self, msg: _Beaten) -> None:
        if msg.gen != self.gen:
            return
        self.live = msg.live
        for n in msg.dead:
            if n not in self._burying:
                self._burying.add(n)
                gevent.spawn(self._bury_in_greenlet, n)
        if msg.fresh:
            # Redis lost our keys (a restart), or we were silent so long that the others
            # buried us: the same cure as a lost connection, a full resynchronisation.
            self._down("this node's keys were gone from Redis")

    def _bury_in_greenlet(self, node: str) -> None:
        try:
            self._bury(node)
        except _REDIS_ERRORS as exc:
            log.info("cluster: burying node %s stopped (%s); the next beat goes on", node, why(exc))
        finally:
            self._burying.discard(node)

    def _bury(self, node: str, lock: bool = True) -> None:
        """Everything a dead node left behind, in slices: one small script per room and per
        nick, never one long script that blocks Redis for everyone (issue 12.4)."""
        r = self.redis
        if lock and not r.set(
            f"{K.node_key(node)}:burying", self.node_id, nx=True, px=int(self.ttl * 1000)
        ):
            return  # another node is at it
        prefix = f"{node}/"
        for room in r.sscan_iter(K.node_rooms(node), count=BURY_BATCH):
            self._drop(room.decode(), prefix)
        for nick in r.sscan_iter(K.node_nicks(node), count=BURY_BATCH):
            self.scripts["release"](keys=[K.nick_key(nick.decode())], args=[prefix])
            gevent.sleep(0)
        r.delete(K.node_rooms(node), K.node_nicks(node))
        r.srem(K.NODES, node)

    def _drop(self, room: str, prefix: str) -> None:
        self.scripts["drop_members"](
            keys=list(K.room_keys(room)),
            args=[K.room_channel(room), prefix, self.pub, self.room_ttl_ms],
        )
        gevent.sleep(0)

    def _prune(self, keep: set[str], gen: int) -> None:
        """After a reconnection: forget this node's members in rooms it no longer serves."""
        try:
            for room in self.redis.smembers(K.node_rooms(self.node_id)):
                name = room.decode()
                if name not in keep:
                    self._drop(name, f"{self.node_id}/")
                    self.redis.srem(K.node_rooms(self.node_id), name)
        except _REDIS_ERRORS as exc:
            tell(self.actor_ref, Lost(gen, why(exc)))

    def _reclaim(self, msg: Reclaim, gen: int) -> None:
        """After a reconnection: this node's nicks are exactly ``msg.owners``; the ones
        another live node took meanwhile are answered back as lost."""
        r, me = self.redis, self.node_id
        lost = []
        try:
            for raw in r.smembers(K.node_nicks(me)):
                nick = raw.decode()
                if nick not in msg.owners:
                    self.scripts["release"](keys=[K.nick_key(nick)], args=[f"{me}/"])
                    r.srem(K.node_nicks(me), nick)
            for nick, owner in msg.owners.items():
                r.sadd(K.node_nicks(me), nick)
                if not self.scripts["claim"](keys=[K.nick_key(nick)], args=[owner, me, *self.live]):
                    lost.append(nick)
        except _REDIS_ERRORS as exc:
            tell(self.actor_ref, Lost(gen, why(exc)))
            return
        tell(msg.directory, Reply("reclaim", lost))
