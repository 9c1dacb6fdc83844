"""The pure timer structure behind the SchedulerActor."""

from actors.core.timers import TimerQueue


def test_pop_due_returns_earliest_first_and_only_due():
    """Timers come out in deadline order, and only those due."""
    q = TimerQueue()
    q.schedule("a", "x", 5.0)
    q.schedule("b", "x", 1.0)
    q.schedule("c", "x", 3.0)
    assert [e.key for e in q.pop_due(3.0)] == [("b", "x"), ("c", "x")]
    assert len(q) == 1 and q.next_due() == 5.0


def test_reschedule_replaces_the_same_name():
    """One live timer per (owner, name): re-arming moves it."""
    q = TimerQueue()
    q.schedule("a", "pong", 10.0, payload=1)
    q.schedule("a", "pong", 20.0, payload=2)
    assert len(q) == 1 and q.pop_due(15.0) == []
    assert [e.payload for e in q.pop_due(20.0)] == [2]


def test_cancel_is_lazy_but_exact():
    """A cancelled timer never fires and no longer counts as pending."""
    q = TimerQueue()
    q.schedule("a", "hello", 1.0)
    assert q.cancel("a", "hello") is True and q.cancel("a", "hello") is False
    assert len(q) == 0 and q.next_due() is None and q.pop_due(99.0) == []


def test_cancel_owner():
    """Dropping a user cancels all of its named timers and nobody else's."""
    q = TimerQueue()
    for name in ("hello", "profile", "session"):
        q.schedule("a", name, 1.0)
    q.schedule("b", "hello", 1.0)
    assert q.cancel_owner("a", ("hello", "profile", "session", "ping")) == 3
    assert [e.key for e in q.pop_due(2.0)] == [("b", "hello")]


def test_cancel_storm_does_not_grow_the_heap():
    """Dead entries are compacted: 100k schedule/cancel cycles keep the heap small."""
    q = TimerQueue()
    for i in range(100_000):
        q.schedule(i, "hello", float(i))
        q.cancel(i, "hello")
    assert len(q) == 0 and len(q._heap) <= 130


def test_pending_for_lists_an_owner():
    """pending_for shows one owner's timers by deadline."""
    q = TimerQueue()
    q.schedule("a", "ping", 30.0)
    q.schedule("a", "hello", 5.0)
    assert q.pending_for("a") == [("hello", 5.0), ("ping", 30.0)]


class TestDueHistogram:
    """Timers due in the next 1 s / 10 s / 60 s, from quarter-second buckets (issue 14)."""

    def test_counts_by_horizon(self):
        """Each horizon counts the live timers due before now + horizon, cumulatively."""
        q = TimerQueue()
        for i, due in enumerate((100.2, 100.9, 105.0, 130.0, 170.0, 5000.0)):
            q.schedule(i, "t", due)
        assert q.due_within(100.0, (1.0, 10.0, 60.0)) == [2, 3, 4]

    def test_cancelled_and_fired_leave_the_buckets(self):
        """Cancelling or firing a timer takes it out of the histogram."""
        q = TimerQueue()
        q.schedule("a", "t", 100.5)
        q.schedule("b", "t", 101.5)
        q.schedule("c", "t", 102.0)
        q.cancel("b", "t")
        q.pop_due(100.6)
        assert q.due_within(100.6, (1.0, 10.0)) == [0, 1]
        q.schedule("c", "t", 150.0)  # re-armed: moves buckets
        assert q.due_within(100.6, (10.0, 60.0)) == [0, 1]
        assert q._buckets == {600: 1}  # noqa: SLF001 - nothing left behind

    def test_overdue_counts_as_due(self):
        """A timer past due but not yet fired (the scheduler is behind) counts in every horizon."""
        q = TimerQueue()
        q.schedule("a", "t", 90.0)
        assert q.due_within(100.0, (1.0,)) == [1]
        assert TimerQueue().due_within(100.0, (1.0, 10.0)) == [0, 0]


def test_pop_due_with_a_limit_leaves_the_rest_due():
    """At most ``limit`` of the due timers, earliest first; the rest stay, still due."""
    q = TimerQueue()
    for i in range(5):
        q.schedule(f"o{i}", "x", float(i), payload=i)
    q.cancel("o0", "x")  # a dead entry on top does not count against the limit
    assert [e.payload for e in q.pop_due(10.0, limit=2)] == [1, 2]
    assert len(q) == 2 and q.next_due() == 3.0
    assert [e.payload for e in q.pop_due(10.0, limit=2)] == [3, 4]
    assert len(q) == 0
