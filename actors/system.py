"""The actor tree of one node, and the few calls the HTTP edge makes into it.

    NodeActor (root)
    ├── SchedulerActor          every timer of every user
    ├── DirectoryActor          nicks, rooms index
    │   └── RoomActor ...       one per room with members
    ├── UserActor ...           one per connection
    └── PluginActor ...         extra actor types (--plugin, actors/plugin.py)

The edge never reaches into an actor's state to change it: it starts a
UserActor per connection, ``ask``s the directory (with a timeout) to kick, and
reads the tree for /debug (plain attribute reads; see base.py for why that is safe).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from typing import Any

import gevent
import gevent.event
import pykka

from .base import HubbubActor, tell
from .clock import Clock, MonotonicClock
from .core.counters import Counters
from .directory import DirectoryActor
from .core.messages import CancelOwner, KickNick, Shutdown, UserGone
from .plugin import PluginActor, PluginHub
from .room import RoomActor
from .scheduler import SchedulerActor
from .core.session import Limits, Timeouts, UserState
from .store import StoreActor
from .user import UserActor

__all__ = ["NodeActor", "ActorSystem"]

log = logging.getLogger("hubbub.system")


class NodeActor(HubbubActor):
    """The root of the tree; supervises the scheduler, the directory and the users."""

    def __init__(self) -> None:
        super().__init__("node")
        self.fatal = gevent.event.Event()
        """Set when a child the node cannot do without failed: the server must stop."""
        self.started = time.time()
        self.scheduler: SchedulerActor | None = None
        self.directory: DirectoryActor | None = None
        self.counters: Counters | None = None
        self.plugins: PluginHub | None = None
        """Rooms and users find the plugin lists here (actors/plugin.py)."""

    def describe_fields(self) -> dict[str, Any]:
        return {"uptime": round(time.time() - self.started, 1)}

    def on_child_failed(self, child: HubbubActor, error: BaseException) -> None:
        super().on_child_failed(child, error)
        if self.counters is not None:
            self.counters.actor_failures[child.kind] += 1
        if isinstance(child, UserActor):
            # Policy: a failing user is closed (1011, done by the user itself) and
            # forgotten everywhere else; nobody else notices.
            sid = child.session.session_id
            assert self.scheduler is not None and self.directory is not None
            tell(self.scheduler.actor_ref, CancelOwner(sid, tuple(child.session.timers)))
            tell(self.directory.actor_ref, UserGone(sid))
        elif isinstance(child, PluginActor) and self.plugins is not None:
            self.plugins.child_failed(child, error)  # restart, or stop after repeated failures
        else:
            # The scheduler and the directory hold everyone's state: without them
            # the node cannot keep its promises.  Fail loudly.
            log.critical("%s failed; the node stops", child.kind)
            self.fatal.set()


class ActorSystem:
    """One node's actors.  ``user_class`` / ``room_class`` are the extension points for
    other actor types of those roles (tests use them to inject failures)."""

    def __init__(self, timeouts: Timeouts, history: int = 100, clock: Clock | None = None,
                 events: Any = None, limits: Limits | None = None, store: str | None = None,
                 user_class: type[UserActor] = UserActor, room_class: type[RoomActor] = RoomActor,
                 redis: str | None = None) -> None:
        self.timeouts = timeouts
        self.history = history
        self.clock = clock or MonotonicClock()
        self.events = events
        self.limits = limits or Limits()
        self.user_class = user_class
        self.counters = Counters()
        self.node: NodeActor = NodeActor.spawn()
        self.node.counters = self.counters
        directory_class, cluster_option = DirectoryActor, {}
        self.cluster: Any = None
        """The ClusterActor (the link to Redis) with --redis (actors/cluster/), else None."""
        if redis is not None:
            from . import cluster  # only with --redis: redis-py is an optional dependency
            if store:
                log.warning("--store is not used with --redis: room history lives in Redis")
                store = None
            self.cluster = cluster.ClusterActor.spawn(redis, parent=self.node)
            directory_class = cluster.ClusterDirectoryActor  # its rooms get a Redis port
            cluster_option = {"cluster": self.cluster}
        self.store: StoreActor | None = StoreActor.spawn(store, history, parent=self.node) if store else None
        self.scheduler: SchedulerActor = SchedulerActor.spawn(self.clock, parent=self.node)
        self.directory: DirectoryActor = directory_class.spawn(
            history, parent=self.node, room_class=room_class, counters=self.counters, store=self.store,
            **cluster_option)
        self.node.scheduler, self.node.directory = self.scheduler, self.directory
        if self.cluster is not None:
            self.cluster.directory = self.directory.actor_ref
            self.cluster.first_up.wait(cluster.STARTUP_WAIT)  # else it starts alone and keeps trying
        self.plugins = PluginHub(self.node, self.scheduler.actor_ref, self.directory.actor_ref,
                                 self.clock, self.node.started)
        self.node.plugins = self.plugins

    # --- users ----------------------------------------------------------------------

    def spawn_user(self, conn: Any) -> pykka.ActorRef[Any]:
        sid = secrets.token_hex(8)
        return self.user_class.start(sid, conn, self.timeouts, self.clock, self.scheduler.actor_ref,
                                     self.directory.actor_ref, parent=self.node, events=self.events,
                                     limits=self.limits, counters=self.counters)

    def users(self) -> list[UserActor]:
        return [a for a in list(self.node.children.values()) if isinstance(a, UserActor)]

    def rooms(self) -> list[RoomActor]:
        return [a for a in list(self.directory.children.values()) if isinstance(a, RoomActor)]

    def kick(self, nick: str, reason: str, timeout: float = 2.0) -> bool:
        answer = self.directory.actor_ref.ask(KickNick(nick, reason), timeout=timeout)
        if hasattr(answer, "wait"):  # a cluster's kick for another node: answered by the link
            answer = answer.wait(timeout)  # None (false) if it took longer
        return bool(answer)

    # --- observation ----------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {"actors": self.node.describe()}

    def stats(self) -> dict[str, Any]:
        states = Counter(u.session.state.value for u in self.users())
        actors = self._walk(self.node)
        depths = [a.actor_inbox.qsize() for a in actors]  # type: ignore[attr-defined]
        return {
            "users": sum(states.values()),
            "users_by_state": {s.value: states.get(s.value, 0) for s in UserState},
            "rooms": len(self.directory.rooms),
            "pending_timers": len(self.scheduler.timers),
            "actors": len(actors),
            "mailbox_max": max(depths, default=0),
            "mailbox_total": sum(depths),
        }

    def _walk(self, actor: HubbubActor) -> list[HubbubActor]:
        out = [actor]
        for child in list(actor.children.values()):
            out.extend(self._walk(child))
        return out

    # --- shutdown -------------------------------------------------------------------

    def shutdown(self, grace: float = 3.0) -> None:
        """bye `shutdown` + 1001 to everyone, wait (bounded) for them to go, stop all actors."""
        for user in self.users():
            tell(user.actor_ref, Shutdown())
        deadline = time.monotonic() + grace
        while self.users() and time.monotonic() < deadline:
            gevent.sleep(0.02)
        if self.store is not None:
            # Everything acked must be on disk before the process exits.
            self.store.actor_ref.stop(block=True, timeout=2.0)
        if self.cluster is not None:
            self.cluster.leave()  # the other nodes see its users go now, not after the TTL
        for actor in reversed(self._walk(self.node)):  # children before their parents
            actor.actor_ref.stop(block=False)
