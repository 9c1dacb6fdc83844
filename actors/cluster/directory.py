"""The directory of a cluster node: nicks unique across the cluster, `dm` and kick to
users of other nodes, and a Redis port for every room.

Local first: a nick held here, a dm or kick to a user here, never touch Redis.  Every
Redis step is a ``Call`` to the link whose ``Reply`` comes back as a message: the
directory never waits.  A nick claim waits for Redis at most ``LOGIN_WAIT``; while
Redis is unreachable, or past that, the user gets `error` ``unavailable`` (its
`profile` had no effect: it may try again), never a nick that another node might
also be giving out.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import gevent
import gevent.event

from ..base import HubbubActor, tell
from ..core import codec
from ..core.messages import (
    ClaimNick,
    Deliver,
    DmResult,
    Kick,
    KickNick,
    NickResult,
    RoomRetired,
    SendDm,
    UserGone,
)
from ..directory import DirectoryActor
from ..room import RoomActor
from . import keys as K
from .link import ClusterActor
from .messages import Call, ClusterUp, LinkDown, NodeEvent, Reclaim, Reply
from .room import RedisRoomPort

__all__ = ["ClusterDirectoryActor", "LOGIN_WAIT"]

log = logging.getLogger("hubbub.cluster")

LOGIN_WAIT = 2.0
"""Seconds a nick claim waits for Redis before the user is told `unavailable`."""


class _Answer:
    """Something the link can ``tell`` a Reply to: it fills a gevent AsyncResult (the
    HTTP edge waits on it, with its own timeout; the directory does not)."""

    def __init__(self) -> None:
        self.result: gevent.event.AsyncResult = gevent.event.AsyncResult()

    def tell(self, reply: Reply) -> None:
        value = reply.value
        self.result.set(not isinstance(value, BaseException) and bool(value))


def _unavailable(user: Any, what: str) -> None:
    tell(user, Deliver(codec.encode(codec.error("unavailable", what))))


class ClusterDirectoryActor(DirectoryActor):
    def __init__(
        self,
        history_size: int,
        parent: HubbubActor | None = None,
        room_class: type[RoomActor] = RoomActor,
        counters: Any = None,
        store: Any = None,
        cluster: ClusterActor | None = None,
        **options: Any,
    ) -> None:
        # options: the observer port and the budgets, as the base directory takes them.
        super().__init__(
            history_size, parent, room_class=room_class, counters=counters, store=None, **options
        )
        assert cluster is not None
        self.link = cluster.actor_ref
        self.node_id = cluster.node_id
        self.grace = cluster.ttl
        self.room_ttl_ms = cluster.room_ttl_ms
        self.up = False
        """As the link last told (ClusterUp / LinkDown)."""
        self.claims: dict[Any, tuple[ClaimNick, str]] = {}
        """token → (claim, old nick): claims Redis has not answered yet."""
        self.claiming: dict[str, str] = {}
        """nick → session: a nick being claimed here (a second local claim is refused)."""
        self._tokens = itertools.count()
        self.late: dict[Any, ClaimNick] = {}
        """token → claim whose user was told `unavailable` before Redis answered."""

    def room_port(self, name: str) -> Any:
        return RedisRoomPort(self.link, self.node_id, self.grace, self.room_ttl_ms)

    def on_receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is Reply:
            return self._reply(message)
        if kind is NodeEvent:
            return self._node_event(message)
        if kind is ClusterUp:
            self.up = True
            owners = {nick: self._owner(session) for nick, session in self.nicks.items()}
            tell(self.link, Reclaim(owners, self.actor_ref))
            return None
        if kind is LinkDown:
            self.up = False
            return None
        return super().on_receive(message)

    def _owner(self, session: str) -> str:
        return f"{self.node_id}/{session}"

    # --- nicks ----------------------------------------------------------------------

    def _claim(self, msg: ClaimNick) -> None:
        if msg.nick in self.nicks:
            return super()._claim(msg)  # held here: the answer is local
        if self.claiming.get(msg.nick, msg.session) != msg.session:
            tell(msg.user, NickResult(msg.nick, False))
            return None
        if not self.up:
            tell(msg.user, NickResult(msg.nick, False, "unavailable"))
            return None
        user = self.users.get(msg.session)
        old = user.nick if user is not None and user.nick is not None else ""
        token = ("claim", next(self._tokens))
        self.claims[token] = (msg, old)
        self.claiming[msg.nick] = msg.session
        tell(
            self.link,
            Call(
                "claim",
                (K.nick_key(msg.nick),),
                (self._owner(msg.session), self.node_id),
                reply_to=self.actor_ref,
                token=token,
                live=True,
            ),
        )
        gevent.spawn_later(
            LOGIN_WAIT, tell, self.actor_ref, Reply(token, TimeoutError("no answer in time"))
        )
        return None

    def _claimed(self, token: Any, value: Any) -> None:
        pending = self.claims.pop(token, None)
        if pending is None:
            late = self.late.pop(token, None)
            if late is not None and value == 1 and self.nicks.get(late.nick) != late.session:
                # Redis ran it after the user was told `unavailable`: give the nick back.
                self._release(late.nick, late.session)
            return
        msg, old = pending
        if isinstance(value, BaseException) or not value or not old or old == msg.nick:
            if self.claiming.get(msg.nick) == msg.session:
                del self.claiming[msg.nick]
        if isinstance(value, BaseException):
            if isinstance(value, TimeoutError):
                # Redis may still run it: its answer, when it comes, gives the nick back.
                self.late[token] = msg
            tell(msg.user, NickResult(msg.nick, False, "unavailable"))
            return
        if not value:
            tell(msg.user, NickResult(msg.nick, False))
            return
        if old and old != msg.nick:
            # A rename: the old nick is free in Redis before the user hears profile_ok.
            self._release(old, msg.session, then=("renamed", msg))
            return
        super()._claim(msg)

    def _release(self, nick: str, session: str, then: Any = None) -> None:
        if self.up:
            tell(self.link, Call("cmd", (), ("SREM", K.node_nicks(self.node_id), nick)))
            tell(
                self.link,
                Call(
                    "release",
                    (K.nick_key(nick),),
                    (self._owner(session),),
                    reply_to=self.actor_ref if then else None,
                    token=then,
                ),
            )
        elif then is not None:
            self._reply(Reply(then, 1))  # the next Reclaim frees it

    def _gone(self, msg: UserGone) -> None:
        user = self.users.get(msg.session)
        super()._gone(msg)
        if user is not None and user.nick is not None and user.nick not in self.nicks:
            self._release(user.nick, msg.session)  # while down: the next Reclaim drops it

    def _retired(self, msg: RoomRetired) -> None:
        # No dormant histories on a cluster node: Redis keeps them (issue 12.4: a node's
        # memory for emptied rooms is zero bytes, not 10,000 histories).
        super()._retired(msg)
        history = self.dormant.pop(msg.room, None)
        if history is not None:
            history.release()  # its bytes leave the node's history pool with it

    # --- dm and kick ----------------------------------------------------------------

    def _dm(self, msg: SendDm) -> None:
        if msg.to in self.nicks:
            return super()._dm(msg)
        if not self.up:
            _unavailable(msg.user, "other nodes cannot be reached right now (Redis is unreachable)")
            return None
        payload = codec.encode(codec.dm(msg.sender, msg.text, msg.ts))
        tell(
            self.link,
            Call(
                "send",
                (K.nick_key(msg.to),),
                ("D", payload),
                reply_to=self.actor_ref,
                token=("dm", msg),
                live=True,
            ),
        )
        return None

    def _kick(self, msg: KickNick) -> Any:
        if msg.nick in self.nicks or not self.up:
            return super()._kick(msg)
        answer = _Answer()
        tell(
            self.link,
            Call(
                "send",
                (K.nick_key(msg.nick),),
                ("K", msg.reason.encode()),
                reply_to=answer,
                live=True,
            ),
        )
        return answer.result

    def _reply(self, reply: Reply) -> None:
        token, value = reply.token, reply.value
        if token == "reclaim":
            return self._reclaimed(value)
        if token[0] == "claim":
            return self._claimed(token, value)
        if token[0] == "renamed":
            claim: ClaimNick = token[1]
            if self.claiming.get(claim.nick) == claim.session:
                del self.claiming[claim.nick]
            if claim.session in self.users:
                super()._claim(claim)
            return None
        if token[0] == "dm":
            msg: SendDm = token[1]
            if isinstance(value, BaseException):
                _unavailable(msg.user, "the dm could not be handed to Redis; it was not sent")
            elif value:
                self.counters.dms += 1
                tell(msg.user, DmResult(msg.client_id, True))
            else:
                tell(msg.user, DmResult(msg.client_id, False))
        return None

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

    def _reclaimed(self, lost: Any) -> None:
        if isinstance(lost, BaseException):
            return
        for nick in lost:
            session = self.nicks.get(nick)
            if session is not None:
                log.warning("cluster: nick %r was taken on another node while Redis was away", nick)
                tell(
                    self.users[session].ref,
                    Kick("your nick was taken on another node while the cluster was split"),
                )

    _handlers: dict[type, Any] = {}


ClusterDirectoryActor._handlers = {
    **DirectoryActor._handlers,
    ClaimNick: ClusterDirectoryActor._claim,
    UserGone: ClusterDirectoryActor._gone,
    SendDm: ClusterDirectoryActor._dm,
    KickNick: ClusterDirectoryActor._kick,
    RoomRetired: ClusterDirectoryActor._retired,
}
