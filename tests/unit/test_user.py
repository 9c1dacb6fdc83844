"""UserActor's connection callbacks and the work that skips its mailbox (issue 11 item 3).

A real in-process ActorSystem on gevent; the connection is a recording fake with the
transport's callback attributes (``on_message``, ``on_pong``, ``on_overflow``, ``on_close``),
driven the way the transport drives them: from outside the actor.
"""

from __future__ import annotations

import json
import time
from typing import Any

import gevent
import pytest

from actors import ActorSystem, Timeouts
from actors.base import HubbubActor
from actors.clock import MonotonicClock
from actors.core.messages import Cancel, ClientFrame, PongFrame, Schedule, TimerBatch, TimerFired
from actors.core.session import Limits
from actors.scheduler import SchedulerActor
from actors.user import UserActor
from hubbub.testing import wait_for


class Conn:
    """The transport's side of a connection: records frames; ``close`` ends it with ``on_close``."""

    remote_addr = "127.0.0.1"
    backlog = 0

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.closed = False
        self.close_code: int | None = None
        self.on_message: Any = None
        self.on_pong: Any = None
        self.on_overflow: Any = None
        self.on_close: Any = None

    def send_text(self, payload: bytes) -> None:
        if not self.closed:
            self.payloads.append(payload)

    def close(self, code: int, reason: str = "") -> None:
        if not self.closed:
            self.closed, self.close_code = True, code
            gevent.get_hub().loop.run_callback(self.on_close, code)  # later, from the hub

    def frames(self, kind: str | None = None) -> list[dict[str, Any]]:
        frames = [json.loads(p) for p in self.payloads]
        return [f for f in frames if kind is None or f["type"] == kind]


class Owner(HubbubActor):
    """A timer owner that records what it is told."""

    def __init__(self, actor_id: str) -> None:
        super().__init__(actor_id)
        self.received: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        self.received.append(message)


class Recording(UserActor):
    """A UserActor that writes down every message its mailbox delivers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        self.received.append(message)
        return super().on_receive(message)


def make_system(**kwargs: Any) -> ActorSystem:
    timeouts = kwargs.pop("timeouts", Timeouts(hello=5, ping=0.03, pong=5, profile=30, session=60))
    return ActorSystem(timeouts, user_class=Recording, **kwargs)


@pytest.fixture
def system():
    s = make_system()
    yield s
    s.shutdown(grace=1.0)
    gevent.sleep(0.01)


def connect(system: ActorSystem) -> tuple[Conn, Recording]:
    conn = Conn()
    ref = system.spawn_user(conn)
    conn.on_message('{"type":"hello"}')
    wait_for(lambda: conn.frames("welcome"), what="welcome")
    return conn, ref._actor_weakref()


class TestWiring:
    """ActorSystem.spawn_user sets the four callbacks; a gone user lets go of them."""

    def test_spawn_user_sets_the_callbacks(self, system):
        """on_message, on_pong, on_overflow and on_close all reach the new user."""
        conn, user = connect(system)
        assert conn.on_message == user.on_message and conn.on_pong == user.on_pong
        assert conn.on_overflow == user.on_overflow and conn.on_close == user.on_close

    def test_overflow_disconnects_slow_consumer(self, system):
        """on_overflow → bye slow_consumer, close 4007."""
        conn, _user = connect(system)
        conn.on_overflow()
        wait_for(lambda: conn.close_code == 4007)
        assert conn.frames("bye")[-1]["reason"] == "slow_consumer"

    def test_on_close_stops_the_user_and_detaches(self, system):
        """on_close(code) ends the user; its callbacks on the connection then go nowhere."""
        conn, user = connect(system)
        conn.on_close(1006)
        wait_for(lambda: user.actor_stopped.is_set())
        assert user.session.close_reason == "connection_lost"
        assert conn.on_message != user.on_message
        conn.on_message('{"type":"ping"}')  # harmless after the end
        conn.on_pong()
        conn.on_close(1000)


class TestOpenedAt:
    """The rules count from the upgrade (the connection's ``upgraded_at``), not from when
    the user actor was made: whatever sat in between (a collection, a queue of accepts)
    does not push the hello deadline back."""

    def test_the_hello_deadline_counts_from_the_upgrade(self, system):
        conn = Conn()
        conn.upgraded_at = time.monotonic() - 0.5  # type: ignore[attr-defined]  # the transport's stamp
        user = system.spawn_user(conn)._actor_weakref()
        wait_for(lambda: "hello" in user.session.timers, what="hello timer")
        now = system.clock.monotonic()
        assert now - 0.6 < user.session.opened_at < now - 0.49
        assert user.session.timers["hello"][1] == pytest.approx(user.session.opened_at + 5)

    def test_without_a_stamp_it_counts_from_now(self, system):
        before = system.clock.monotonic()
        user = system.spawn_user(Conn())._actor_weakref()
        wait_for(lambda: "hello" in user.session.timers, what="hello timer")
        assert before <= user.session.opened_at <= system.clock.monotonic()


class TestFramesInline:
    """Frames are handled in the read path when the user is idle; a subclass that
    overrides on_receive keeps the mailbox unless it says its handlers never block."""

    def test_a_frame_to_an_idle_user_is_answered_before_on_message_returns(self):
        """`hello` to an idle UserActor: the `welcome` is queued when on_message returns."""
        system = ActorSystem(Timeouts(hello=5, ping=30, pong=60, profile=30, session=60))
        try:
            conn = Conn()
            ref = system.spawn_user(conn)
            wait_for(lambda: ref._actor_weakref().actor_inbox._started, what="on_start")
            conn.on_message('{"type":"hello"}')
            assert conn.frames("welcome")
        finally:
            system.shutdown(grace=1.0)

    def test_overriding_on_receive_keeps_the_mailbox(self):
        """never_blocks: True for UserActor, False for a subclass with its own on_receive,
        True again if that subclass says so."""

        class Own(UserActor):
            def on_receive(self, message: Any) -> Any:
                return super().on_receive(message)

        class OwnInline(Own):
            never_blocks = True

        assert UserActor.never_blocks and not Recording.never_blocks
        assert not Own.never_blocks and OwnInline.never_blocks


class TestTimersInOneMessage:
    """What one handled event changes of a user's timers reaches the scheduler as one message."""

    def test_hello_disarms_and_arms_in_one_batch(self, system):
        """`hello`: the hello timer cancelled, ping and pong armed: one TimerBatch, in order."""
        seen: list[Any] = []
        scheduler = system.scheduler
        receive = scheduler.on_receive

        def record(message: Any) -> Any:
            seen.append(message)
            return receive(message)

        scheduler.on_receive = record  # the real scheduler, watched
        conn, user = connect(system)
        sid = user.session.session_id
        mine = [m for m in seen if type(m) is TimerBatch and m.ops[0].owner_id == sid]
        assert len(mine) == 2  # opened (hello, profile, session), then hello
        opened, hello = mine
        assert [type(op) for op in opened.ops] == [Schedule] * 3
        assert [(type(op), op.name) for op in hello.ops] == [
            (Cancel, "hello"),
            (Schedule, "ping"),
            (Schedule, "pong"),
        ]
        assert not [m for m in seen if type(m) in (Schedule, Cancel)]


class TestPingSkipsTheMailbox:
    """The periodic ping is written to the connection by the scheduler, not by the user actor."""

    def test_pings_arrive_without_a_timer_message_to_the_user(self, system):
        """Several pings reach the socket; the user's mailbox never saw a ping TimerFired."""
        conn, user = connect(system)
        wait_for(lambda: len(conn.frames("ping")) >= 3, what="3 pings")
        assert all(isinstance(p["ts"], float) for p in conn.frames("ping"))
        assert not [m for m in user.received if isinstance(m, TimerFired) and m.name == "ping"]
        assert system.scheduler.pinged >= 3

    def test_pings_due_together_share_the_payload(self):
        """Deadlines reached by the same wake-up: one encoded ping, shared."""
        clock = MonotonicClock()
        sched = SchedulerActor.spawn(clock)
        owners = [Owner.spawn(f"o{i}") for i in range(3)]
        conns = [Conn(), Conn(), Conn()]
        try:
            due = clock.monotonic() + 0.05
            for i, (o, c) in enumerate(zip(owners, conns, strict=True)):
                sched.actor_ref.tell(
                    Schedule(f"o{i}", o.actor_ref, "ping", due, token=1, every=60, conn=c)
                )
            wait_for(lambda: all(c.payloads for c in conns))
            assert conns[0].payloads[0] is conns[1].payloads[0] is conns[2].payloads[0]
            assert json.loads(conns[0].payloads[0])["type"] == "ping"
            assert sched.describe()["pending"] == 3  # re-armed for the next interval
            assert not any(o.received for o in owners)  # no TimerFired to anyone
        finally:
            sched.actor_ref.stop(block=False)
            for o in owners:
                o.actor_ref.stop(block=False)

    def test_a_closed_connection_is_not_pinged_again(self, system):
        """Once the socket is closed its ping timer is dropped, not re-armed."""
        conn, user = connect(system)
        sid = user.session.session_id
        wait_for(lambda: conn.frames("ping"))
        assert "ping" in dict(system.scheduler.timers.pending_for(sid))
        conn.closed = True  # closed on the transport's side, on_close not yet delivered
        wait_for(
            lambda: "ping" not in dict(system.scheduler.timers.pending_for(sid)),
            what="ping dropped",
        )


class TestPongIsNotedWhereRead:
    """A pong updates last_pong in the read path, without a mailbox trip, still rate-limited."""

    def test_json_pong_is_noted_before_any_switch(self, system):
        """on_message('{"type":"pong"}') has moved last_pong when it returns; nothing is queued."""
        conn, user = connect(system)
        gevent.sleep(0.01)
        before, frames_in = user.session.last_pong, system.counters.frames_in
        conn.on_message('{"type": "pong"}')
        assert user.session.last_pong > before  # no greenlet switch happened in between
        assert user.actor_inbox.empty() and system.counters.frames_in == frames_in + 1
        gevent.sleep(0.01)
        assert [m.data for m in user.received if isinstance(m, ClientFrame)] == ['{"type":"hello"}']

    def test_pong_with_extra_fields_is_noted_too(self, system):
        """`pong` carries "anything": a pong with other fields is decoded and noted in place."""
        conn, user = connect(system)
        gevent.sleep(0.01)
        before = user.session.last_pong
        conn.on_message('{"ts": 1.5, "type" : "pong", "x": [1, 2]}')
        assert user.session.last_pong > before and user.actor_inbox.empty()

    def test_pong_control_frame_is_noted_before_any_switch(self, system):
        """on_pong() moves last_pong right away and queues nothing."""
        conn, user = connect(system)
        gevent.sleep(0.01)
        before = user.session.last_pong
        conn.on_pong()
        assert user.session.last_pong > before and user.actor_inbox.empty()
        gevent.sleep(0.01)
        assert not [m for m in user.received if isinstance(m, PongFrame)]

    def test_pong_before_hello_takes_the_mailbox_and_is_policy(self, system):
        """Before hello a pong is a decision: 1008, as the contract says."""
        conn = Conn()
        system.spawn_user(conn)
        conn.on_message('{"type":"pong"}')
        wait_for(lambda: conn.close_code == 1008)

    def test_pong_behind_queued_frames_keeps_the_order(self, system):
        """With frames still in the mailbox, a pong waits its turn there (order per user)."""
        conn = Conn()
        ref = system.spawn_user(conn)
        conn.on_message('{"type":"hello"}')  # queued, not yet handled: still Undefined
        conn.on_message('{"type":"pong"}')
        user = ref._actor_weakref()
        assert user.actor_inbox.qsize() == 2
        wait_for(lambda: conn.frames("welcome"))
        gevent.sleep(0.01)
        assert conn.close_code is None  # handled after hello: a pong, not a policy violation

    def test_pongs_count_against_the_rate(self):
        """Pongs over --burst go through the mailbox and get `rate_limited`, then 4006."""
        s = make_system(limits=Limits(rate=0.001, burst=3))
        try:
            conn, user = connect(s)
            gevent.sleep(0.01)
            for _ in range(3):
                conn.on_message('{"type":"pong"}')
            assert user.actor_inbox.empty()  # three tokens: all noted in place
            conn.on_message('{"type":"pong"}')
            wait_for(lambda: conn.frames("error"))
            assert conn.frames("error")[0]["code"] == "rate_limited"
            for _ in range(5):
                conn.on_message('{"type":"pong"}')
            wait_for(lambda: conn.close_code == 4006)
        finally:
            s.shutdown(grace=1.0)

    def test_other_messages_mentioning_pong_take_the_mailbox(self, system):
        """A `say`-like frame whose text contains a pong is not mistaken for one."""
        conn, user = connect(system)
        conn.on_message('{"type":"ping","note":"{\\"type\\":\\"pong\\"}"}')
        wait_for(lambda: conn.frames("pong"))
        assert len([m for m in user.received if isinstance(m, ClientFrame)]) == 2  # hello, ping
