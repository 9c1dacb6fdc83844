"""The actor runtime (actors/base.py) on real gevent in this process.

pykka's API on top (tell, ask, proxies, stop, ActorDeadError, on_start/on_receive/on_stop),
a runtime underneath in which an idle actor is only data: a message schedules a drain on
a pooled runner greenlet, a drain handles a bounded batch, then the actor idles or goes to
the back of the queue.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import gevent
import pykka
import pytest
from greenlet import greenlet

from actors import base
from actors.base import DRAIN_BATCH, INLINE_PER_TURN, HubbubActor, Mailbox
from actors.core.messages import ChildFailed
from hubbub.testing import wait_for


def live_greenlets() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet) and not o.dead)


class Log(HubbubActor):
    """Appends (its id, message) to a shared log; answers asks with the message."""

    def __init__(self, actor_id: str, log: list[Any], parent: HubbubActor | None = None) -> None:
        super().__init__(actor_id, parent)
        self.log = log
        self.value = 0

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ChildFailed):
            return super().on_receive(message)
        self.log.append((self.actor_id, message))
        return message

    def add(self, n: int) -> int:
        self.value += n
        return self.value


class Supervisor(HubbubActor):
    """Records the ChildFailed it hears."""

    def __init__(self) -> None:
        super().__init__("sup")
        self.failed: list[tuple[str, str]] = []

    def on_child_failed(
        self, child: HubbubActor, error: BaseException, report: object = None
    ) -> None:
        self.failed.append((child.actor_id, str(error)))


class Fails(HubbubActor):
    def __init__(self, where: str, parent: HubbubActor) -> None:
        super().__init__(f"fails-in-{where}", parent)
        self.where = where
        self.on_failure_called = False

    def on_start(self) -> None:
        if self.where == "on_start":
            raise RuntimeError("start")

    def on_receive(self, message: Any) -> Any:
        if self.where == "on_receive":
            raise RuntimeError("receive")
        return None

    def on_failure(self, *exc_info: Any) -> None:
        self.on_failure_called = True

    def on_stop(self) -> None:
        super().on_stop()
        if self.where == "on_stop":
            raise RuntimeError("stop")


@pytest.fixture
def started():
    """Actors the test starts; all stopped in teardown."""
    actors: list[HubbubActor] = []
    yield actors
    for a in actors:
        if not a.actor_stopped.is_set():
            a.actor_ref.stop(block=False)
    gevent.sleep(0.01)


class TestPykkaApi:
    """pykka's API, unchanged for users and plugins (pykka docs: Actor, ActorRef, ActorProxy)."""

    def test_ask_returns_the_answer(self, started):
        """ask() waits for on_receive's return value, with a timeout."""
        a = Log.spawn("a", [])
        started.append(a)
        assert a.actor_ref.ask("hi", timeout=1.0) == "hi"

    def test_proxy_calls_methods_in_the_actor(self, started):
        """A proxy method call runs in the actor and its future carries the result."""
        a = Log.spawn("a", [])
        started.append(a)
        proxy = a.actor_ref.proxy()
        assert proxy.add(2).get(timeout=1.0) == 2
        assert proxy.add(3).get(timeout=1.0) == 5
        assert proxy.value.get(timeout=1.0) == 5

    def test_stop_block_true_then_dead(self, started):
        """stop(block=True) returns True once stopped; then tell and ask raise ActorDeadError."""
        a = Log.spawn("a", [])
        ref = a.actor_ref
        assert ref.stop(block=True, timeout=1.0) is True
        assert ref.actor_stopped.is_set() and not ref.is_alive()
        with pytest.raises(pykka.ActorDeadError):
            ref.tell("late")
        with pytest.raises(pykka.ActorDeadError):
            ref.ask("late", timeout=1.0)
        assert ref.stop(block=True, timeout=1.0) is False  # already dead

    def test_messages_after_the_stop_get_actor_dead_error(self, started):
        """Asks queued behind a stop are answered with ActorDeadError, not left hanging."""
        log: list[Any] = []
        a = Log.spawn("a", log)
        stop = a.actor_ref.stop(block=False)
        late = a.actor_ref.ask("late", block=False)
        assert stop.get(timeout=1.0) is True
        with pytest.raises(pykka.ActorDeadError):
            late.get(timeout=1.0)
        assert log == []

    def test_actor_stopped_can_be_waited_on(self, started):
        """actor_stopped.wait(timeout) returns False while running, True once stopped."""
        a = Log.spawn("a", [])
        assert a.actor_ref.actor_stopped.wait(0.01) is False
        gevent.spawn_later(0.01, a.actor_ref.stop, block=False)
        assert a.actor_ref.actor_stopped.wait(1.0) is True

    def test_on_start_runs_before_the_first_message(self, started):
        """A message told right after start is handled after on_start."""
        order: list[str] = []

        class Starts(HubbubActor):
            def on_start(self) -> None:
                order.append("start")

            def on_receive(self, message: Any) -> Any:
                order.append(message)

        a = Starts.spawn("s")
        started.append(a)
        a.actor_ref.tell("m")
        wait_for(lambda: len(order) == 2)
        assert order == ["start", "m"]

    def test_urn_is_unique_and_lazy(self, started):
        """actor_urn is made on first use, unique, and the same from the actor and its ref."""
        a, b = Log.spawn("a", []), Log.spawn("b", [])
        started += [a, b]
        assert a.actor_inbox._urn is None
        assert a.actor_urn == a.actor_ref.actor_urn != b.actor_urn
        assert a.actor_urn.startswith("urn:uuid:")

    def test_an_actor_outside_the_tree_lives_until_stopped(self, started):
        """With no parent and only its ref kept, an actor still runs (the roots keep it)."""
        ref = Log.start("orphan", [])
        gc.collect()
        assert ref.ask("still here", timeout=1.0) == "still here"
        ref.stop(block=True, timeout=1.0)
        assert ref._actor_weakref() not in base._roots


class TestOrderAndFairness:
    """Message order per actor; bounded work per drain."""

    def test_messages_are_handled_in_order(self, started):
        """10,000 messages to one actor are handled in the order they were told."""
        log: list[Any] = []
        a = Log.spawn("a", log)
        started.append(a)
        for i in range(10_000):
            a.actor_ref.tell(i)
        wait_for(lambda: len(log) == 10_000)
        assert [m for _id, m in log] == list(range(10_000))

    def test_a_flooded_actor_does_not_delay_another_beyond_one_batch(self, started):
        """A message to B, told after 1,000 to A, is handled after at most one batch of A's."""
        log: list[Any] = []
        a, b = Log.spawn("a", log), Log.spawn("b", log)
        started += [a, b]
        for i in range(1000):
            a.actor_ref.tell(i)
        b.actor_ref.tell("urgent")
        wait_for(lambda: len(log) == 1001)
        assert log.index(("b", "urgent")) <= DRAIN_BATCH

    def test_two_flooded_actors_interleave(self, started):
        """Two actors with 1,000 messages each take turns, a batch at a time."""
        log: list[Any] = []
        a, b = Log.spawn("a", log), Log.spawn("b", log)
        started += [a, b]
        for i in range(1000):
            a.actor_ref.tell(i)
            b.actor_ref.tell(i)
        wait_for(lambda: len(log) == 2000)
        switches = sum(1 for x, y in zip(log, log[1:], strict=False) if x[0] != y[0])
        assert switches >= 2000 // DRAIN_BATCH - 2
        longest, run = 1, 1
        for x, y in zip(log, log[1:], strict=False):
            run = run + 1 if x[0] == y[0] else 1
            longest = max(longest, run)
        assert longest <= DRAIN_BATCH

    def test_a_busy_actor_lets_the_hub_run(self, started):
        """While one actor works through 5,000 messages, a timer greenlet still gets turns."""
        log: list[Any] = []
        a = Log.spawn("a", log)
        started.append(a)
        ticks: list[int] = []
        ticker = gevent.spawn(
            lambda: [ticks.append(len(log)) or gevent.sleep(0) for _ in range(20)]
        )
        for i in range(5000):
            a.actor_ref.tell(i)
        wait_for(lambda: len(log) == 5000)
        ticker.join(1.0)
        assert any(0 < t < 5000 for t in ticks), ticks


class Quick(Log):
    """A Log whose handler never blocks: run_now may handle its messages."""

    never_blocks = True


class QuickFails(Fails):
    never_blocks = True


class TestRunNow:
    """run_now: an idle actor whose handlers never block handles a message in the
    caller's greenlet; otherwise the caller tells it."""

    def test_an_actor_that_may_block_is_never_run_now(self, started):
        """never_blocks False (the default; a subclass overriding on_receive): False."""
        log: list[Any] = []
        a = Log.spawn("a", log)
        started.append(a)
        gevent.sleep(0.01)
        assert not Log.never_blocks and a.run_now("x") is False and log == []

    def test_an_idle_actor_handles_it_before_run_now_returns(self, started):
        """Idle (started, nothing waiting): handled at once, True."""
        log: list[Any] = []
        a = Quick.spawn("a", log)
        started.append(a)
        gevent.sleep(0.01)  # on_start has run
        assert a.run_now("now") is True
        assert log == [("a", "now")]

    def test_not_idle_means_false_and_order_is_kept(self, started):
        """With messages waiting (or before on_start), False: the caller tells instead,
        and everything is handled in the order it was sent."""
        log: list[Any] = []
        a = Quick.spawn("a", log)
        started.append(a)
        assert a.run_now("before start") is False
        gevent.sleep(0.01)
        a.actor_ref.tell(1)
        assert a.run_now(2) is False  # 1 is waiting: 2 must come after it
        a.actor_ref.tell(2)
        wait_for(lambda: len(log) == 2)
        assert [m for _id, m in log] == [1, 2]

    def test_a_tell_from_the_handler_queues_behind_it(self, started):
        """Told to itself while handling at once: handled next, by a runner."""
        log: list[Any] = []

        class Echo(Quick):
            never_blocks = True

            def on_receive(self, message: Any) -> Any:
                if message == "first":
                    self.actor_ref.tell("second")
                return super().on_receive(message)

        a = Echo.spawn("a", log)
        started.append(a)
        gevent.sleep(0.01)
        assert a.run_now("first") is True
        assert [m for _id, m in log] == ["first"]
        wait_for(lambda: len(log) == 2)
        assert [m for _id, m in log] == ["first", "second"]

    def test_at_most_a_turns_worth(self, started):
        """In one turn of the loop at most INLINE_PER_TURN; after the turn, again."""
        log: list[Any] = []
        a = Quick.spawn("a", log)
        started.append(a)
        gevent.sleep(0.01)
        taken = [a.run_now(i) for i in range(INLINE_PER_TURN + 5)]
        assert taken == [True] * INLINE_PER_TURN + [False] * 5
        gevent.sleep(0)
        assert a.run_now("next turn") is True

    def test_unbounded_takes_no_slot(self, started):
        """bounded=False runs even when this turn's slots are spent, and spends none."""
        log: list[Any] = []
        a = Quick.spawn("a", log)
        started.append(a)
        gevent.sleep(0.01)
        assert all(a.run_now(i) for i in range(INLINE_PER_TURN))
        assert a.run_now("bounded") is False
        assert a.run_now("unbounded", bounded=False) is True
        assert [m for _id, m in log][-1] == "unbounded"

    def test_a_failure_is_supervised_as_in_a_drain(self, started, caplog):
        """A handler that raises: the actor stops and its parent hears ChildFailed."""
        sup = Supervisor.spawn()
        child = QuickFails.spawn("on_receive", sup)
        started += [sup, child]
        gevent.sleep(0.01)
        assert child.run_now("boom") is True
        assert child.actor_stopped.is_set()
        wait_for(lambda: sup.failed == [("fails-in-on_receive", "receive")])


class TestBlockingHandlers:
    """A handler may block (ask, sleep): it keeps its runner, the others get another one."""

    def test_ask_inside_on_receive(self, started):
        """A handler that asks another actor gets the answer (no deadlock)."""
        inner = Log.spawn("inner", [])

        class Asker(HubbubActor):
            def on_receive(self, message: Any) -> Any:
                return inner.actor_ref.ask(message, timeout=1.0) * 2

        outer = Asker.spawn("outer")
        started += [inner, outer]
        assert outer.actor_ref.ask(21, timeout=2.0) == 42

    def test_many_handlers_blocked_at_once(self, started):
        """200 actors each block in a handler; all finish, so runners are not a fixed pool."""
        done: list[str] = []

        class Sleeper(HubbubActor):
            def on_receive(self, message: Any) -> Any:
                gevent.sleep(0.02)
                done.append(self.actor_id)

        sleepers = [Sleeper.spawn(f"s{i}") for i in range(200)]
        started += sleepers
        for s in sleepers:
            s.actor_ref.tell("go")
        wait_for(lambda: len(done) == 200, timeout=5.0)

    def test_a_sleeping_handler_does_not_hold_up_others(self, started):
        """While A sleeps in on_receive, B handles its messages."""
        log: list[Any] = []

        class Slow(HubbubActor):
            def on_receive(self, message: Any) -> Any:
                gevent.sleep(0.2)
                log.append(("slow", message))

        slow, fast = Slow.spawn("slow"), Log.spawn("fast", log)
        started += [slow, fast]
        slow.actor_ref.tell("x")
        fast.actor_ref.tell("y")
        wait_for(lambda: ("fast", "y") in log, timeout=0.15)
        assert ("slow", "x") not in log


class TestIdleCostsNothing:
    """An idle actor holds no greenlet and no parked stack (issue 11 item 1)."""

    @pytest.mark.parametrize("n", [1000, 3000])
    def test_idle_actors_hold_no_greenlet(self, n):
        """Starting n actors and giving each a message leaves at most the runner pool behind."""
        root = Log.spawn("root", [])
        before = live_greenlets()
        actors = [Log.spawn(f"a{i}", [], root) for i in range(n)]
        for a in actors:
            a.actor_ref.tell("x")
        wait_for(lambda: all(a.actor_inbox.empty() for a in actors))
        gevent.sleep(0.01)
        grown = live_greenlets() - before
        idle = all(
            isinstance(a.actor_inbox, Mailbox)
            and a.actor_inbox._items is None
            and not a.actor_inbox._scheduled
            for a in actors
        )
        root.actor_ref.stop(block=True, timeout=1.0)
        for a in actors:
            a.actor_ref.stop(block=False)
        # The runner pool is bounded and independent of n.
        assert grown <= base.MAX_IDLE_RUNNERS + 2, grown
        assert idle

    def test_idle_actor_bytes(self):
        """An idle actor with a parent costs well under 1.5 KB of Python heap (a parked greenlet
        alone was ~4 KB)."""
        root = Log.spawn("root", [])
        gc.collect()
        tracemalloc.start()
        try:
            snap0 = tracemalloc.take_snapshot()
            actors = [Log.spawn(f"a{i}", [], root) for i in range(1000)]
            for a in actors:
                a.actor_ref.tell("x")
            wait_for(lambda: all(a.actor_inbox.empty() for a in actors))
            gc.collect()
            snap1 = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        per_actor = sum(s.size_diff for s in snap1.compare_to(snap0, "filename")) / 1000
        root.actor_ref.stop(block=True, timeout=1.0)
        for a in actors:
            a.actor_ref.stop(block=False)
        assert per_actor < 1500, per_actor


class TestSupervision:
    """A failure anywhere in an actor's life reaches its parent as ChildFailed."""

    @pytest.mark.parametrize("where", ["on_start", "on_receive", "on_stop"])
    def test_failure_is_reported_to_the_parent(self, started, where, caplog):
        """The child stops, leaves the tree, and the parent hears ChildFailed."""
        sup = Supervisor.spawn()
        started.append(sup)
        child = Fails.spawn(where, sup)
        if where == "on_receive":
            child.actor_ref.tell("boom")
        elif where == "on_stop":
            child.actor_ref.stop(block=False)
        wait_for(lambda: sup.failed, what="ChildFailed")
        assert sup.failed == [(f"fails-in-{where}", where.removeprefix("on_"))]
        assert child.actor_stopped.is_set() and child.actor_id not in sup.children
        assert child.on_failure_called == (where == "on_receive")
        with pytest.raises(pykka.ActorDeadError):
            child.actor_ref.tell("after")

    def test_an_ask_that_raises_returns_the_error_and_the_actor_lives(self, started):
        """An exception in a handler that was asked goes back to the asker; no supervision."""
        sup = Supervisor.spawn()
        child = Fails.spawn("on_receive", sup)
        started += [sup, child]
        with pytest.raises(RuntimeError, match="receive"):
            child.actor_ref.ask("boom", timeout=1.0)
        gevent.sleep(0.01)
        assert sup.failed == [] and not child.actor_stopped.is_set()

    def test_describe_shows_the_mailbox_depth(self, started):
        """The /debug node counts messages waiting (told but not yet handled)."""
        sup = Supervisor.spawn()
        started.append(sup)
        child = Log.spawn("c", [], sup)
        for i in range(3):
            child.actor_ref.tell(i)
        node = sup.describe()
        assert node["children"][0]["mailbox"] == 3 and node["children"][0]["kind"] == "Log"
        wait_for(lambda: child.describe()["mailbox"] == 0)
