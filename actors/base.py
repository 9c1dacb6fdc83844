"""The shared actor base: daemon greenlets, parent/children links, describe() for /debug.

pykka gives actors and a flat registry; it has no tree and no supervision.  This
base adds both:

* ``parent`` / ``children`` links.  They are plain attributes, changed only when
  an actor starts or stops.  Every actor runs as a greenlet in one OS thread and
  none of this code yields, so the links are always consistent when the debug
  edge walks them.  Everything else between actors goes through messages.
* ``describe()`` — the node of the ``/debug/actors`` tree.  Subclasses add fields
  by overriding :meth:`describe_fields`.
* Supervision: when an actor raises, pykka logs and stops it; our ``on_failure``
  then tells the parent ``ChildFailed`` and the parent's :meth:`on_child_failed`
  decides (restart a room, clean up after a user, ...).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, ClassVar

import gevent
import gevent.lock
import pykka

from .core.messages import ChildFailed

__all__ = ["HubbubActor", "publish", "tell"]

log = logging.getLogger("hubbub.actors")


class Inbox:
    """An actor's mailbox: pykka's inbox protocol (put/get/empty) plus qsize for /debug.

    A gevent Queue costs ~2.7 KB per actor, mostly its deque's first block: here the
    deque exists only while messages wait, and a semaphore counts them.
    """

    __slots__ = ("_items", "_count")

    def __init__(self) -> None:
        self._items: deque[Any] | None = None
        self._count = gevent.lock.Semaphore(0)

    def put(self, item: Any) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        self._count.release()

    def get(self) -> Any:
        self._count.acquire()
        items = self._items
        assert items is not None
        item = items.popleft()
        if not items:
            self._items = None
        return item

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items) if self._items else 0


class HubbubActor(pykka.ThreadingActor):
    # Daemon threads (greenlets after monkey-patching): non-daemon ones make each
    # start cost O(threads) through threading._maintain_shutdown_locks (STYLE.md).
    # Kept for pykka's sake; _start_actor_loop below skips threading.Thread altogether.
    use_daemon_thread: ClassVar[bool] = True

    # pykka's hooks for actor runtimes (pykka/_actor.py): the inbox and the loop.
    # Under gevent a monkey-patched threading.Thread and queue.Queue are greenlets
    # and gevent locks underneath, but they drag a Thread object, three Conditions and
    # a deep parked stack along with every actor.  A gevent queue and a bare greenlet
    # do the same job: 42.6 -> 36.1 KB RSS per logged-in user (2,000 users, with the
    # 1 KiB read buffer of hubbub/websocket.py).
    @staticmethod
    def _create_actor_inbox() -> Any:
        return Inbox()

    def _start_actor_loop(self) -> None:
        gevent.spawn(self._actor_loop)

    def __init__(self, actor_id: str, parent: HubbubActor | None = None) -> None:
        super().__init__()
        self.actor_id = actor_id
        self.parent = parent
        self.children: dict[str, HubbubActor] = {}
        if parent is not None:
            parent.children[actor_id] = self

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> Any:
        """pykka's start without pykka's registry: the tree (parent/children) is ours.

        ActorRegistry is one flat list: every unregister is a linear scan, so at 18,000
        users each disconnect cost ~0.2 ms and a shutdown seconds (measured).  The tree
        already knows every live actor, once.
        """
        obj = cls(*args, **kwargs)
        obj._start_actor_loop()
        return obj.actor_ref

    @classmethod
    def spawn(cls, *args: Any, **kwargs: Any) -> Any:
        """Start the actor and return the actor object (parents keep objects, others refs)."""
        ref = cls.start(*args, **kwargs)
        return ref._actor_weakref()  # noqa: SLF001 - pykka keeps only a weak ref; our tree keeps it alive

    # --- the debug tree -------------------------------------------------------------

    @property
    def kind(self) -> str:
        return type(self).__name__

    def describe_fields(self) -> dict[str, Any]:
        """Extra fields for this actor's node in /debug/actors (override)."""
        return {}

    def describe(self) -> dict[str, Any]:
        node: dict[str, Any] = {
            "kind": self.kind,
            "id": self.actor_id,
            # pykka types actor_inbox as its bare inbox protocol; ours is an Inbox, with qsize.
            "mailbox": self.actor_inbox.qsize(),  # type: ignore[attr-defined]
        }
        node.update(self.describe_fields())
        node["children"] = [child.describe() for child in list(self.children.values())]
        return node

    # --- lifecycle ------------------------------------------------------------------

    def _detach(self) -> None:
        if self.parent is not None and self.parent.children.get(self.actor_id) is self:
            del self.parent.children[self.actor_id]

    def on_stop(self) -> None:
        self._detach()

    def _handle_failure(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # pykka calls this for a failure in on_start, on_receive or on_stop (on_failure
        # only for on_receive): supervision must hear of all of them.
        super()._handle_failure(exc_type, exc, tb)
        self._detach()
        if self.parent is not None:
            try:
                self.parent.actor_ref.tell(ChildFailed(self, exc, self.last_words()))
            except pykka.ActorDeadError:
                pass

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ChildFailed):
            return self.on_child_failed(message.child, message.error, message.report)
        return super().on_receive(message)

    def last_words(self) -> Any:
        """What the parent needs after this actor failed (override): sent in ChildFailed.report,
        so the parent never reads a failed child's fields."""
        return None

    def on_child_failed(self, child: HubbubActor, error: BaseException, report: Any = None) -> None:
        """Supervision policy for a failed child (override); ``report`` is its last_words().
        Default: log it."""
        log.error("%s %s failed: %r", child.kind, child.actor_id, error)


def tell(ref: Any, message: Any) -> bool:
    """Tell, tolerating a recipient that already stopped (it is gone, so is the message)."""
    try:
        ref.tell(message)
        return True
    except pykka.ActorDeadError:
        return False


def publish(subscribers: Any, message: Any) -> None:
    """Tell every subscriber of an observer list (actors/core/observe.py).  Callers check
    ``if subscribers:`` first, so that nobody subscribed costs nothing."""
    for ref in subscribers:
        tell(ref, message)
