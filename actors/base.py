"""The shared actor base: the runtime under pykka, parent/children links, describe() for /debug.

pykka gives the API (``ActorRef.tell/ask``, proxies, ``on_start/on_receive/on_stop``);
its ``ThreadingActor`` gives every actor a thread (a greenlet under gevent) parked on
its inbox for its whole life.  With 20,000 users that is 20,000 parked stacks doing
nothing.  This module keeps pykka's API and replaces what runs underneath
(through pykka's hooks: ``_create_actor_inbox``, ``_start_actor_loop``,
``_handle_receive``, ``_handle_failure``, ``_actor_loop_setup/teardown``):

* **An idle actor holds no greenlet.**  Its state is a :class:`Mailbox` (a few slots;
  the deque exists only while messages wait).  A message to an idle actor *schedules*
  it: one ``loop.run_callback`` that hands the mailbox to a runner greenlet.
* **Runners are pooled.**  A runner drains one actor, then parks in a small free list
  (``MAX_IDLE_RUNNERS``) for the next ready actor.  Reusing a parked runner costs
  ~1.3 µs per drain, a fresh raw greenlet per drain ~9-13 µs (measured,
  docs/architecture.md).  Only *parked* runners are reused, so a handler that blocks
  (``ask`` inside ``on_receive``, ``gevent.sleep``) just keeps its runner, and the next
  ready actor gets another one: no deadlock, however many handlers block at once.
* **Fairness.**  A drain handles at most ``DRAIN_BATCH`` messages; if more wait, the
  actor goes to the back of the hub's callback queue, behind every other ready actor
  and I/O callback.  A flooded actor delays another by at most one batch.
* **Order.**  An actor is scheduled at most once at a time (``Mailbox._scheduled``), so
  its messages are handled one after another in arrival order.
* **At once, when idle.**  :meth:`HubbubActor.run_now` handles a message in the caller's
  greenlet when the actor is idle (nothing waiting, no drain queued or running): the
  same order and one-at-a-time rule, without the runner's two switches.  Only for
  actors whose handlers never block (``never_blocks``): the transport's read path uses
  it for a user's frames, the scheduler for the timers it fires; at most
  ``INLINE_PER_TURN`` messages a loop turn go this way, the rest queue as usual, so a
  burst cannot hold the hub.

And the tree that pykka does not have:

* ``parent`` / ``children`` links.  They are plain attributes, changed only when
  an actor starts or stops.  Every actor runs in one OS thread and none of this
  code yields, so the links are always consistent when the debug edge walks them.
  Everything else between actors goes through messages.
* ``describe()`` — the node of the ``/debug/actors`` tree.  Subclasses add fields
  by overriding :meth:`describe_fields`.
* Supervision: a failure in ``on_start``, ``on_receive`` or ``on_stop`` is logged, the
  actor stops, and the parent is told ``ChildFailed``; its :meth:`on_child_failed`
  decides (restart a room, clean up after a user, ...).
"""

from __future__ import annotations

import logging
import sys
import uuid
import weakref
from collections import deque
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any, ClassVar

import gevent
import gevent.event
import pykka
from greenlet import getcurrent, greenlet
from pykka._envelope import Envelope  # what ActorRef.tell puts in an inbox
from pykka.messages import ProxyCall, ProxyGetAttr, ProxySetAttr, _ActorStop

from .core.messages import ChildFailed

__all__ = [
    "HubbubActor",
    "HubbubRef",
    "Mailbox",
    "publish",
    "tell",
    "walk",
    "DRAIN_BATCH",
    "INLINE_PER_TURN",
    "MAX_IDLE_RUNNERS",
]

log = logging.getLogger("hubbub.actors")
_pykka_log = logging.getLogger("pykka")  # what pykka's own loop logs to (the server tunes it)

DRAIN_BATCH = 16
"""Messages one drain handles before the actor goes to the back of the queue.  16 is
what UserActor yielded after before this runtime (fairness measured there, STYLE.md)."""

INLINE_PER_TURN = 256
"""Messages handled by ``run_now`` in one turn of the event loop, over all actors: with
~40 us a message, a turn holds the hub ~10 ms at most (one scheduler tick)."""

MAX_IDLE_RUNNERS = 32
"""Parked runner greenlets kept for reuse; beyond that a runner just ends.  The number
of *busy* runners is not capped: it is the number of handlers blocked at once."""

# --- the scheduler: ready actors → runner greenlets ----------------------------------

_idle_runners: list[greenlet] = []
_roots: set[HubbubActor] = set()
"""Actors without a parent.  A running greenlet used to keep every actor alive; now an
idle actor is only data, so the tree keeps it alive: its parent, or this set at the top."""


def _schedule(mb: Mailbox) -> None:
    # From an actor, a hub callback or the edge alike: never blocks, never switches.
    gevent.get_hub().loop.run_callback(_dispatch, mb)


def _dispatch(mb: Mailbox) -> None:
    """In the hub: run ``mb``'s actor on a parked runner, or on a new one."""
    while _idle_runners:
        runner = _idle_runners.pop()
        if not runner.dead:
            break
    else:
        runner = greenlet(_run, gevent.get_hub())
    runner.switch(mb)


def _run(mb: Any) -> None:
    """A runner: drain the actor it is handed, park, repeat."""
    hub = gevent.get_hub()
    while True:
        if type(mb) is Mailbox:
            actor = mb._actor()
            if actor is not None:
                actor._drain(mb)
            else:  # collected while it waited (only an actor outside the tree can be)
                mb.set()
            actor = mb = None  # a parked runner holds nothing
            if len(_idle_runners) >= MAX_IDLE_RUNNERS:
                return
            _idle_runners.append(getcurrent())
        # Parked: only _dispatch switches here, with the next mailbox.
        mb = hub.switch()


_inline_used = 0
_inline_reset: Any = None  # a prepare watcher: runs once per loop iteration, before the poll


def _reset_inline() -> None:
    global _inline_used
    _inline_used = 0


def _take_inline() -> bool:
    """One of this loop iteration's ``run_now`` slots.  The count starts again at every
    iteration (a prepare watcher, not a callback: a callback would wait behind the
    whole callback queue, and the slots with it, just when the queue is long)."""
    global _inline_used, _inline_reset
    if _inline_used >= INLINE_PER_TURN:
        return False
    if _inline_used == 0:
        loop = gevent.get_hub().loop
        if _inline_reset is None or _inline_reset.loop is not loop:
            _inline_reset = loop.prepare(ref=False)
            _inline_reset.start(_reset_inline)
    _inline_used += 1
    return True


def idle_runners() -> int:
    """Runner greenlets parked for reuse (tests, /debug)."""
    return len(_idle_runners)


class Mailbox:
    """The one per-actor object of the runtime: messages, run state, stopped flag.

    It speaks pykka's inbox protocol (``put``/``get``/``empty``) and, because pykka's
    ``ActorRef`` only ever calls ``is_set()`` and ``wait()`` on an actor's
    ``actor_stopped``, the stopped flag's too, so an actor needs neither a
    ``threading.Event`` nor a queue.  The deque exists only while messages wait; the
    gevent Event only while somebody waits for the stop.
    """

    __slots__ = (
        "_items",
        "_actor",
        "_scheduled",
        "_running",
        "_stopped",
        "_started",
        "_event",
        "_urn",
    )

    def __init__(self, actor: HubbubActor) -> None:
        self._items: deque[Any] | None = None
        self._actor = weakref.ref(actor)
        self._scheduled = False
        """A drain is queued or running: the actor is not idle (at most one at a time)."""
        self._running = False
        """A handler of this actor is running (a drain, or ``run_now``)."""
        self._stopped = False
        self._started = False
        """on_start has run (the first drain runs it)."""
        self._event: gevent.event.Event | None = None
        self._urn: str | None = None

    # pykka's inbox protocol

    def put(self, envelope: Any) -> None:
        if self._stopped:
            # pykka's ref refuses a stopped actor before putting; this is what is left:
            # a put that raced with the stop.  Answered as pykka's teardown would.
            _reject(envelope, self)
            return
        items = self._items
        if items is None:
            items = self._items = deque()
        items.append(envelope)
        if not self._scheduled:
            self._scheduled = True
            _schedule(self)

    def get(self) -> Any:
        """The oldest message; non-blocking here: callers (a drain, ``run_now``'s catch-up,
        pykka's teardown) check that one waits first."""
        items = self._items
        assert items, "get() on an empty mailbox"
        item = items.popleft()
        if not items:
            self._items = None
        return item

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    # the stopped flag (threading.Event's protocol, as far as pykka and the edge use it)

    def is_set(self) -> bool:
        return self._stopped

    def set(self) -> None:
        self._stopped = True
        if self._event is not None:
            self._event.set()

    def wait(self, timeout: float | None = None) -> bool:
        if self._stopped:
            return True
        if self._event is None:
            self._event = gevent.event.Event()
        return self._event.wait(timeout)

    @property
    def urn(self) -> str:
        """pykka's unique actor URN, made on first use (hardly anything asks for it)."""
        if self._urn is None:
            self._urn = uuid.uuid4().urn
        return self._urn


def _reject(envelope: Any, mb: Mailbox) -> None:
    if envelope.reply_to is None:
        return
    if isinstance(envelope.message, _ActorStop):
        envelope.reply_to.set(None)
    else:
        actor = mb._actor()
        error = pykka.ActorDeadError(f"{actor} stopped before handling the message")
        envelope.reply_to.set_exception(exc_info=(pykka.ActorDeadError, error, None))


class HubbubRef(pykka.ActorRef[Any]):
    """pykka's ActorRef over a :class:`Mailbox`: the same API, no eager uuid."""

    def __init__(self, actor: HubbubActor, mailbox: Mailbox) -> None:  # noqa: D107
        # Not ActorRef.__init__: it copies the urn, which would make one per actor.
        self._actor_weakref = mailbox._actor
        self.actor_class = type(actor)
        self.actor_inbox = mailbox
        self.actor_stopped = mailbox  # type: ignore[assignment]  # is_set()/wait(): see Mailbox

    @property
    def actor_urn(self) -> str:  # type: ignore[override]
        return self.actor_inbox.urn  # type: ignore[attr-defined]  # pykka types the inbox as its bare protocol

    def tell(self, message: Any) -> None:
        # ActorRef.tell, minus two calls: this is every message of the server.
        mb = self.actor_inbox
        if mb._stopped:  # type: ignore[attr-defined]
            raise pykka.ActorDeadError(f"{self} not found")
        mb.put(Envelope(message))


# --- the actor base --------------------------------------------------------------------

_NO_CHILDREN: Any = MappingProxyType({})
_PYKKA_MESSAGES = frozenset({_ActorStop, ProxyCall, ProxyGetAttr, ProxySetAttr})


class HubbubActor(pykka.ThreadingActor):
    # Kept for pykka's sake (no threading.Thread is ever made here; STYLE.md on why
    # non-daemon threads were slow).
    use_daemon_thread: ClassVar[bool] = True

    never_blocks: ClassVar[bool] = False
    """The handlers never block (no ``ask``, no sleep, no blocking I/O), so a message may
    be handled in the sender's greenlet, even the hub's (``run_now``).  A subclass that
    overrides ``on_receive`` inherits False unless it sets True itself."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "on_receive" in cls.__dict__ and "never_blocks" not in cls.__dict__:
            cls.never_blocks = False

    children: dict[str, HubbubActor] = _NO_CHILDREN
    """Live children by id.  Most actors (users) never have one: a shared read-only
    empty mapping until the first child arrives."""

    @staticmethod
    def _create_actor_inbox() -> Any:
        raise TypeError("HubbubActor makes its Mailbox in __init__ (it needs the actor)")

    def __init__(self, actor_id: str, parent: HubbubActor | None = None) -> None:
        # Not pykka's Actor.__init__: it makes a uuid urn and a threading.Event per actor
        # (~0.6 KB, the Event under gevent); the Mailbox stands in for both, lazily.
        mb = self.actor_inbox = Mailbox(self)
        self._actor_ref = HubbubRef(self, mb)
        self.actor_id = actor_id
        self.parent = parent
        if parent is None:
            _roots.add(self)
        else:
            if parent.children is _NO_CHILDREN:
                parent.children = {}
            parent.children[actor_id] = self

    @property
    def actor_stopped(self) -> Mailbox:  # type: ignore[override]
        """pykka's stopped flag: the mailbox (``is_set()``, ``wait(timeout)``)."""
        return self.actor_inbox  # type: ignore[return-value]

    @property
    def actor_urn(self) -> str:  # type: ignore[override]
        return self.actor_inbox.urn  # type: ignore[attr-defined]  # pykka types the inbox as its bare protocol

    def __str__(self) -> str:
        # pykka's names the urn; the id is what logs and /debug show, and costs nothing.
        return f"{type(self).__name__} ({self.actor_id})"

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

    # --- the runtime (pykka's hooks) ------------------------------------------------

    def _start_actor_loop(self) -> None:
        """No loop: schedule the first drain, which runs ``on_start`` before any message."""
        mb: Mailbox = self.actor_inbox  # type: ignore[assignment]
        if not mb._scheduled:  # a message told before start() already scheduled it
            mb._scheduled = True
            _schedule(mb)

    def _actor_loop(self) -> None:
        raise TypeError("HubbubActor has no loop: a runner drains its Mailbox (see _drain)")

    def _drain(self, mb: Mailbox) -> None:
        """Handle up to DRAIN_BATCH messages, in order; then idle, requeue, or tear down."""
        mb._running = True
        try:
            self._drain_batch(mb)
        finally:
            mb._running = False

    def _drain_batch(self, mb: Mailbox) -> None:
        if not mb._started:
            mb._started = True
            self._actor_loop_setup()  # pykka: on_start; a failure goes to _handle_failure
        budget = DRAIN_BATCH
        while budget and mb._items and not mb._stopped:
            self._handle_envelope(mb.get())
            budget -= 1
        if mb._stopped:
            # pykka: whatever is left gets ActorDeadError (a stop gets its answer).
            # _scheduled stays set: a stopped actor is never scheduled again.
            self._actor_loop_teardown()
            _roots.discard(self)
        elif mb._items:
            _schedule(mb)  # more waiting: to the back of the queue, behind the others
        else:
            mb._scheduled = False  # idle: no greenlet, no stack, until the next put

    def run_now(self, message: Any, catch_up: bool = False, bounded: bool = True) -> bool:
        """Handle ``message`` now, in the calling greenlet, if this actor never blocks and
        is idle: started, not stopped, nothing waiting, no drain queued or running (so it
        comes after everything told before, as a tell would).  With ``catch_up``, an
        actor whose drain is queued but not running handles what waits first, then
        ``message``: the same order, without waiting for its turn.  False: none of
        that, or this loop turn's ``INLINE_PER_TURN`` is used up: ``tell`` it instead.
        ``bounded=False`` takes no slot: for a caller that bounds its own work per loop
        turn (the scheduler fires at most ``FIRE_PER_WAKE`` timers a wake), so that a
        burst of other inline work cannot push what it delivers behind every queued drain.

        The handler runs in the caller's greenlet: from a hub callback (the transport's
        read path) it must not block.  Failures go where a drain's would."""
        mb: Mailbox = self.actor_inbox  # type: ignore[assignment]
        queued = mb._scheduled
        if (
            not self.never_blocks
            or mb._running
            or mb._stopped
            or not mb._started
            or (queued and not catch_up)
            or (bounded and not _take_inline())
        ):
            return False
        mb._scheduled = mb._running = True  # a tell meanwhile queues behind this message
        try:
            while queued and mb._items and not mb._stopped:  # what was told before
                self._handle_envelope(mb.get())
            if not mb._stopped:
                self._handle_envelope(Envelope(message))
        finally:
            mb._running = False
            if queued:
                pass  # its drain is still queued: it takes what came meanwhile, or idles
            elif mb._stopped:
                self._actor_loop_teardown()
                _roots.discard(self)
            elif mb._items:
                _schedule(mb)
            else:
                mb._scheduled = False
        return True

    def _handle_receive(self, message: Any) -> Any:
        # pykka's, minus its four isinstance tests for every message: only its own
        # messages (stop, proxy calls) need them, and those are never subclassed.
        if type(message) in _PYKKA_MESSAGES:
            return super()._handle_receive(message)
        return self.on_receive(message)

    def _handle_envelope(self, envelope: Any) -> None:
        # pykka's _actor_loop_running, one message of it.
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                _pykka_log.info(
                    "Exception returned from %s to caller:", self, exc_info=sys.exc_info()
                )
                envelope.reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:  # noqa: BLE001
                    self._handle_failure(*sys.exc_info())
        except BaseException:
            # GreenletExit, KeyboardInterrupt, SystemExit: stop this actor and let it
            # propagate (the hub reports it; SystemExit reaches the main greenlet).
            self._stop()
            raise

    def _stop(self) -> None:
        """pykka's _stop without its registry (we never register) or an eager log string."""
        self.actor_inbox.set()  # type: ignore[attr-defined]
        try:
            self.on_stop()
        except Exception:  # noqa: BLE001
            self._handle_failure(*sys.exc_info())

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
            # pykka types actor_inbox as its bare inbox protocol; ours is a Mailbox, with qsize.
            "mailbox": self.actor_inbox.qsize(),  # type: ignore[attr-defined]
        }
        node.update(self.describe_fields())
        node["children"] = [child.describe() for child in list(self.children.values())]
        return node

    # --- lifecycle ------------------------------------------------------------------

    def _detach(self) -> None:
        _roots.discard(self)
        if self.parent is not None and self.parent.children.get(self.actor_id) is self:
            del self.parent.children[self.actor_id]

    def on_stop(self) -> None:
        self._detach()

    def _handle_failure(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # A failure in on_start, on_receive or on_stop (on_failure only hears of
        # on_receive): supervision must hear of all of them.  pykka's logs and stops.
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


def walk(root: HubbubActor) -> Iterator[HubbubActor]:
    """Every actor under ``root`` and itself, each once, parents before their children
    (children listed when reached; one iterator per level, so a caller may pause between
    actors: the inspector streams the tree this way)."""
    yield root
    stack = [iter(list(root.children.values()))]
    while stack:
        actor = next(stack[-1], None)
        if actor is None:
            stack.pop()
            continue
        yield actor
        if actor.children:
            stack.append(iter(list(actor.children.values())))
