"""Supervision (actors/base.py, system.py, directory.py, actors/plugins/hub.py): what a parent
does when a child fails, decided from what the child said as it failed (ChildFailed.report).

In-process on gevent: a real ActorSystem, users on a RecordingConn, failures injected by
actor classes that raise on cue.
"""

from __future__ import annotations

from typing import Any

import gevent
import pytest

from actors import ActorSystem, Timeouts
from actors.base import HubbubActor
from actors.core.messages import ChildFailed, RoomSay
from actors.room import RoomActor, RoomState
from actors.user import UserActor
from hubbub.plugin import PluginActor
from hubbub.testing import RecordingActor, RecordingConn, act, connect_user, wait_for


class FragileRoom(RoomActor):
    """Raises on the text "room-crash"."""

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, RoomSay) and message.text == "room-crash":
            raise RuntimeError("room crashed")
        return super().on_receive(message)


class FragileUser(UserActor):
    """Raises on a `say` of "crash" (before the session sees it)."""

    def on_receive(self, message: Any) -> Any:
        if getattr(message, "data", None) == '{"type": "say", "room": "lobby", "text": "crash"}':
            raise RuntimeError("user crashed")
        return super().on_receive(message)


class Child(HubbubActor):
    """Fails on any message; its last words are fixed."""

    def last_words(self) -> Any:
        return ("said", self.actor_id)

    def on_receive(self, message: Any) -> Any:
        raise ValueError("no")


@pytest.fixture
def system():
    s = ActorSystem(Timeouts(), user_class=FragileUser, room_class=FragileRoom)
    yield s
    s.shutdown(grace=1.0)
    gevent.sleep(0.05)


class TestReport:
    """actors/base.py: a failing actor tells its parent ChildFailed with its own last_words()."""

    def test_the_parent_hears_the_error_and_the_report(self):
        """ChildFailed(child, error, report); the child is gone from the parent's children."""
        parent = RecordingActor.spawn("parent")
        child = Child.spawn("child", parent)
        child.actor_ref.tell("anything")
        (failed,) = wait_for(lambda: parent.of(ChildFailed))
        assert failed.child is child and isinstance(failed.error, ValueError)
        assert failed.report == ("said", "child")
        assert parent.children == {}
        parent.actor_ref.stop(block=False)


class TestRooms:
    """The directory restarts a failed room with members and history intact."""

    def test_members_stay_and_are_told_the_new_ref(self, system):
        """After a crash the room has the same members, seq continues, members get RoomMoved."""
        alice = connect_user(system, "alice", "lobby")
        bob = connect_user(system, "bob", "lobby")
        alice.send({"type": "say", "room": "lobby", "text": "one"})
        wait_for(lambda: bob.of("message"))
        (old,) = system.rooms()
        alice.send({"type": "say", "room": "lobby", "text": "room-crash"})
        fresh = wait_for(lambda: [r for r in system.rooms() if r is not old])[0]
        assert set(fresh.members) == set(old.members) and fresh.history is old.history
        assert system.directory.restarts == 1
        alice.send({"type": "say", "room": "lobby", "text": "two"})
        wait_for(lambda: len(bob.of("message")) == 2)
        assert [(m["text"], m["seq"]) for m in bob.of("message")] == [("one", 1), ("two", 2)]
        assert not [f for f in bob.frames if f["type"] == "presence"][1:]  # no leave/join churn

    def test_a_room_reports_its_state(self, system):
        """What the directory restarts from is what the room said: a RoomState."""
        connect_user(system, "alice", "lobby")
        (room,) = system.rooms()
        state = room.last_words()
        assert isinstance(state, RoomState) and state.name == "lobby" and len(state.members) == 1


class TestUsers:
    """The node forgets a failed user from its report: its timers and its nick."""

    def test_a_failed_user_is_closed_and_forgotten(self, system):
        """1011 to the client; the scheduler holds none of its timers; the nick is free again."""
        alice = connect_user(system, "alice", "lobby")
        bob = connect_user(system, "bob", "lobby")
        alice.send({"type": "say", "room": "lobby", "text": "crash"})
        wait_for(lambda: alice.closed)
        assert alice.closed == (1011, "internal_error")
        wait_for(lambda: "alice" not in system.directory.nicks, what="the nick freed")
        sid = alice.frames[0]["session"]
        wait_for(
            lambda: not [key for key in system.scheduler.timers._live if key[0] == sid],
            what="its timers cancelled",
        )
        wait_for(
            lambda: (
                bob.of("presence")[-1:]
                == [{"type": "presence", "room": "lobby", "event": "leave", "nick": "alice"}]
            )
        )
        assert system.counters.actor_failures["FragileUser"] == 1
        again = connect_user(system, "alice")
        assert again.of("profile_ok")


class Flaky(PluginActor):
    """Fails when told to; counts its starts."""

    max_restarts = 1
    restart_window = 60.0


class TestPlugins:
    """The hub restarts a plugin from its PluginReport, then gives up."""

    def test_restart_then_give_up(self, system):
        """One restart allowed: the second failure stops it for good, with the error kept."""
        first = system.plugins.start(Flaky)
        act(first, lambda p: 1 / 0)
        second = wait_for(lambda: [p for p in system.plugins.running() if p is not first])[0]
        wait_for(lambda: second.restarts == 1)
        act(second, lambda p: 1 / 0)
        wait_for(lambda: not system.plugins.running())
        spec = "tests.unit.test_supervision:Flaky"
        assert system.plugins.given_up == {spec: "ZeroDivisionError('division by zero')"}
        assert spec in system.describe()["actors"]["plugins_given_up"]
        assert system.observers.rooms == [] and system.observers.users == []


def test_a_recording_conn_is_what_rooms_write_to():
    """hubbub.testing.RecordingConn decodes each frame it is sent."""
    conn = RecordingConn()
    conn.send_text(b'{"type":"ack","id":null,"seq":1}')
    assert conn.of("ack") == [{"type": "ack", "id": None, "seq": 1}]
