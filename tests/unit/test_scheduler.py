"""The SchedulerActor on real greenlets: one gevent timer, TimerFired into the owner's mailbox."""

from __future__ import annotations

import math
import time
from typing import Any

import gevent
import pytest

from actors.base import HubbubActor
from actors.clock import MonotonicClock
from actors.core.messages import Cancel, CancelOwner, Schedule, TimerBatch, TimerFired
from actors.scheduler import FIRE_PER_WAKE, TICK, SchedulerActor
from hubbub.testing import wait_for


class Owner(HubbubActor):
    """Records every TimerFired with the time it arrived."""

    def __init__(self) -> None:
        super().__init__("owner")
        self.fired: list[tuple[str, Any, float]] = []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, TimerFired):
            self.fired.append((message.name, message.token, time.monotonic()))
        return None


@pytest.fixture
def actors():
    sched = SchedulerActor.spawn(MonotonicClock())
    owner = Owner.spawn()
    yield sched, owner
    for a in (sched, owner):
        a.actor_ref.stop(block=False)
    gevent.sleep(0.01)


def test_fires_in_deadline_order_into_the_owner_mailbox(actors):
    """Three timers fire in deadline order, each with its token, near its deadline."""
    sched, owner = actors
    now = time.monotonic()
    for name, delay in (("c", 0.09), ("a", 0.03), ("b", 0.06)):
        sched.actor_ref.tell(Schedule("o", owner.actor_ref, name, now + delay, token=name.upper()))
    gevent.sleep(0.15)
    assert [(n, t) for n, t, _at in owner.fired] == [("a", "A"), ("b", "B"), ("c", "C")]
    assert all(at - now < 0.09 + 0.05 for _n, _t, at in owner.fired)
    assert len(sched.timers) == 0 and sched._watcher is None


def test_cancel_and_cancel_owner(actors):
    """Cancelled timers never fire and leave nothing pending."""
    sched, owner = actors
    now = time.monotonic()
    for name in ("hello", "profile", "session"):
        sched.actor_ref.tell(Schedule("o", owner.actor_ref, name, now + 0.05))
    sched.actor_ref.tell(Cancel("o", "hello"))
    sched.actor_ref.tell(CancelOwner("o", ("profile", "session")))
    gevent.sleep(0.1)
    assert owner.fired == [] and len(sched.timers) == 0


def test_a_batch_applies_its_changes_in_order(actors):
    """TimerBatch: Schedule and Cancel applied one after another, as if told singly."""
    sched, owner = actors
    now = time.monotonic()
    sched.actor_ref.tell(
        TimerBatch(
            (
                Schedule("o", owner.actor_ref, "a", now + 0.03, token=1),
                Cancel("o", "a"),  # cancelled after it was armed: never fires
                Cancel("o", "b"),  # nothing to cancel yet: a no-op
                Schedule("o", owner.actor_ref, "b", now + 0.03, token=2),
            )
        )
    )
    wait_for(lambda: owner.fired, what="b fired")
    gevent.sleep(0.05)
    assert [(n, t) for n, t, _at in owner.fired] == [("b", 2)]
    assert len(sched.timers) == 0


def test_periodic_timer_rearms_itself(actors):
    """A timer with `every` fires again and again from its first deadline, without new messages."""
    sched, owner = actors
    now = time.monotonic()
    sched.actor_ref.tell(Schedule("o", owner.actor_ref, "ping", now + 0.03, token=7, every=0.03))
    gevent.sleep(0.145)
    assert 3 <= len(owner.fired) <= 5 and {t for _n, t, _a in owner.fired} == {7}
    sched.actor_ref.tell(Cancel("o", "ping"))
    gevent.sleep(0.01)
    count = len(owner.fired)
    gevent.sleep(0.08)
    assert len(owner.fired) == count and len(sched.timers) == 0


def test_one_gevent_timer_for_many_deadlines(actors):
    """10,000 pending timers are waited on with one gevent timer, armed for the earliest."""
    sched, owner = actors
    now = time.monotonic()
    for i in range(10_000):
        sched.actor_ref.tell(Schedule(f"o{i}", owner.actor_ref, "session", now + 100 + i))
    sched.actor_ref.tell(Schedule("first", owner.actor_ref, "hello", now + 50))
    # Until all 10,001 are handled (drains of 16 each, in turn with the other actors),
    # not a fixed sleep: on a busy machine that was not always enough.
    wait_for(lambda: sched.actor_inbox.empty(), timeout=10.0, what="the schedules handled")
    assert len(sched.timers) == 10_001 and sched._armed_for == pytest.approx(
        math.ceil((now + 50) / TICK) * TICK
    )
    assert 0 <= sched._armed_for - (now + 50) < TICK
    assert sched.describe()["pending"] == 10_001


def test_deadlines_in_one_tick_fire_in_one_batch(actors):
    """Two deadlines 3 ms apart inside one 10 ms tick fire together, at most a tick late."""
    sched, owner = actors
    now = time.monotonic()
    base = math.ceil((now + 0.05) / TICK) * TICK + TICK * 0.1
    sched.actor_ref.tell(Schedule("o", owner.actor_ref, "a", base))
    sched.actor_ref.tell(Schedule("o", owner.actor_ref, "b", base + TICK * 0.3))
    gevent.sleep(0.12)
    (_, _, at_a), (_, _, at_b) = owner.fired
    assert abs(at_b - at_a) < TICK * 0.1  # together, not 3 ms apart: one wake-up
    assert base + TICK * 0.3 <= at_a < base + TICK + 0.05


def test_more_than_a_wakes_worth_fire_over_the_next_iterations(actors):
    """FIRE_PER_WAKE + 40 deadlines in one tick: every one fires, the rest right after
    the first batch (the next loop iterations, not the next tick)."""
    sched, owner = actors
    due = time.monotonic() + 0.03
    n = FIRE_PER_WAKE + 40
    sched.actor_ref.tell(
        TimerBatch(tuple(Schedule(f"o{i}", owner.actor_ref, "hello", due) for i in range(n)))
    )
    wait_for(lambda: len(owner.fired) == n, what="every timer fired")
    first, last = owner.fired[0][2], owner.fired[-1][2]
    assert last - first < TICK  # not a tick later


class QuickOwner(Owner):
    never_blocks = True


def test_timer_fired_is_handled_at_once_when_this_turns_slots_are_spent():
    """Other inline work used up the loop turn's run_now slots: TimerFired still goes to
    an idle owner at once (the scheduler bounds its own work), not behind queued drains."""
    from actors.base import INLINE_PER_TURN

    sched = SchedulerActor.spawn(MonotonicClock())
    owner = QuickOwner.spawn()
    other = QuickOwner.spawn()
    try:
        gevent.sleep(0.01)
        due = time.monotonic() + 0.02
        sched.actor_ref.tell(Schedule("o", owner.actor_ref, "hello", due))
        gevent.sleep(0.005)
        while time.monotonic() < due:
            pass  # the deadline passes while this greenlet holds the loop
        assert all(other.run_now(TimerFired("x", i)) for i in range(INLINE_PER_TURN))
        assert other.run_now(TimerFired("x", -1)) is False  # this turn's slots are spent
        sched._wake(sched._watcher)  # the wake-up, in this same turn
        assert [n for n, _t, _at in owner.fired] == ["hello"]  # handled before returning
    finally:
        for a in (sched, owner, other):
            a.actor_ref.stop(block=False)
        gevent.sleep(0.01)
