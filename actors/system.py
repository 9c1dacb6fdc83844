"""The actor tree of one node, and the few calls the HTTP edge makes into it.

    NodeActor (root)
    ├── SchedulerActor          every timer of every user
    ├── DirectoryActor          nicks, rooms index
    │   └── RoomActor ...       one per room with members
    ├── UserActor ...           one per connection
    └── PluginActor ...         extra actor types (--plugin, actors/plugins/)

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

from .base import HubbubActor, tell, walk
from .clock import Clock, MonotonicClock
from .core.budgets import Budgets
from .core.counters import Counters
from .core.messages import CancelOwner, KickNick, Shutdown, UserGone
from .core.observe import Observers
from .core.session import Limits, Timeouts, UserState
from .directory import DirectoryActor
from .plugins.actor import PluginReport
from .plugins.hub import PluginHub
from .room import RoomActor
from .scheduler import SchedulerActor
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
        """The node's plugins (actors/plugins/hub.py): it supervises them."""

    def describe_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"uptime": round(time.time() - self.started, 1)}
        if self.plugins is not None and (given_up := self.plugins.describe_given_up()):
            fields["plugins_given_up"] = given_up  # stopped for good: still visible, with why
        return fields

    def on_child_failed(self, child: HubbubActor, error: BaseException, report: Any = None) -> None:
        super().on_child_failed(child, error, report)
        if self.counters is not None:
            self.counters.actor_failures[child.kind] += 1
        if isinstance(report, UserGone):
            # Policy: a failing user is closed (1011, done by the user itself) and
            # forgotten everywhere else, from what it reported; nobody else notices.
            assert self.scheduler is not None and self.directory is not None
            tell(self.scheduler.actor_ref, CancelOwner(report.session, report.timers))
            tell(self.directory.actor_ref, UserGone(report.session))
        elif isinstance(report, PluginReport) and self.plugins is not None:
            self.plugins.child_failed(report, error)  # restart, or stop after repeated failures
        else:
            # The scheduler and the directory hold everyone's state: without them
            # the node cannot keep its promises.  Fail loudly.
            log.critical("%s failed; the node stops", child.kind)
            self.fatal.set()


class ActorSystem:
    """One node's actors.  ``user_class`` / ``room_class`` are the extension points for
    other actor types of those roles (tests use them to inject failures)."""

    def __init__(
        self,
        timeouts: Timeouts,
        history: int = 100,
        clock: Clock | None = None,
        events: Any = None,
        limits: Limits | None = None,
        store: str | None = None,
        user_class: type[UserActor] = UserActor,
        room_class: type[RoomActor] = RoomActor,
        redis: str | None = None,
        budgets: Budgets | None = None,
        verifier: Any = None,
        require_token: bool = False,
        max_backlog: int = 1 << 20,
    ) -> None:
        self.timeouts = timeouts
        self.history = history
        self.clock = clock or MonotonicClock()
        self.events = events
        self.limits = limits or Limits()
        self.budgets = budgets or Budgets()
        self.verifier = verifier
        """With --auth-*: the JWT Verifier every session checks `profile.token` with."""
        self.user_class = user_class
        self.counters = Counters()
        self.observers = Observers()
        """The core's observer port: rooms and users publish, plugins subscribe."""
        self.node: NodeActor = NodeActor.spawn()
        self.node.counters = self.counters
        directory_class: type[DirectoryActor] = DirectoryActor
        cluster_option: dict[str, Any] = {}
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
        self.store: StoreActor | None = (
            StoreActor.spawn(store, history, parent=self.node) if store else None
        )
        self.scheduler: SchedulerActor = SchedulerActor.spawn(
            self.clock, parent=self.node, counters=self.counters
        )
        self.directory: DirectoryActor = directory_class.spawn(
            history,
            parent=self.node,
            room_class=room_class,
            counters=self.counters,
            store=self.store.actor_ref if self.store else None,
            observers=self.observers,
            budgets=self.budgets,
            clock=self.clock,
            page_bytes=self.budgets.page_bytes(max_backlog),
            require_token=require_token,
            **cluster_option,
        )
        self.node.scheduler, self.node.directory = self.scheduler, self.directory
        if self.cluster is not None:
            self.cluster.directory = self.directory.actor_ref
            self.cluster.first_up.wait(
                cluster.STARTUP_WAIT
            )  # else it starts alone and keeps trying
        self.plugins = PluginHub(
            self.node,
            self.scheduler.actor_ref,
            self.directory.actor_ref,
            self.clock,
            self.node.started,
            self.observers,
            shared_nicks=self.cluster is not None,
        )
        self.node.plugins = self.plugins

    # --- users ----------------------------------------------------------------------

    def spawn_user(self, conn: Any) -> pykka.ActorRef[Any]:
        """A UserActor for an upgraded connection, wired to its callbacks
        (``on_message``, ``on_pong``, ``on_overflow``, ``on_close``: see actors/user.py)."""
        sid = secrets.token_hex(8)
        user = self.user_class.spawn(
            sid,
            conn,
            self.timeouts,
            self.clock,
            self.scheduler.actor_ref,
            self.directory.actor_ref,
            parent=self.node,
            events=self.events,
            limits=self.limits,
            counters=self.counters,
            observers=self.observers,
            budgets=self.budgets,
            verifier=self.verifier,
        )
        user.attach(conn)
        return user.actor_ref

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
        actors = list(walk(self.node))
        # pykka types actor_inbox as its bare inbox protocol; ours is a Mailbox, with qsize.
        depths = [a.actor_inbox.qsize() for a in actors]  # type: ignore[attr-defined]
        return {
            "users": sum(states.values()),
            "users_by_state": {s.value: states.get(s.value, 0) for s in UserState},
            "rooms": len(self.directory.rooms),
            **self.budget_counts(),
            "pending_timers": len(self.scheduler.timers),
            "actors": len(actors),
            "mailbox_max": max(depths, default=0),
            "mailbox_total": sum(depths),
        }

    def budget_counts(self) -> dict[str, int]:
        """The history and nick budgets' counts, kept by the directory as it goes (O(1))."""
        d = self.directory
        return {
            "dormant_rooms": len(d.dormant),
            "history_bytes": d.pool.bytes,
            "history_evicted": d.pool.evicted,
            "held_nicks": len(d.nick_table.held),
        }

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
        for actor in reversed(list(walk(self.node))):  # children before their parents
            actor.actor_ref.stop(block=False)
