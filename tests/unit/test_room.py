"""RoomActor (actors/room.py) on fakes: recording outboxes and actors, a fake clock.

Each message is handed to the room with ``ask`` so that the test reads what happened
once it was handled (only tests ask; actors tell).
"""

from __future__ import annotations

from typing import Any

import gevent
import pytest

from actors.core.history import RoomHistory
from actors.core.messages import (
    Acked,
    Deliver,
    JoinedRoom,
    Persist,
    Retire,
    RoomJoin,
    RoomLeave,
    RoomMessage,
    RoomPresence,
    RoomRename,
    RoomRetired,
    RoomSay,
)
from actors.core.observe import Observers
from actors.core.outbox import Outbox
from actors.room import RoomActor, RoomState
from hubbub.testing import FakeClock, RecordingActor, RecordingConn, stop_all


class Fixture:
    def __init__(self, keep: int = 100, history: RoomHistory | None = None) -> None:
        self.clock = FakeClock()
        self.directory = RecordingActor.spawn("directory")
        self.store = RecordingActor.spawn("store")
        self.watcher = RecordingActor.spawn("watcher")
        self.observers = Observers()
        self.room = RoomActor.spawn(
            "lobby",
            history or RoomHistory(keep),
            self.directory.actor_ref,
            clock=self.clock,
            store=self.store.actor_ref,
            observers=self.observers,
        )
        self.users: dict[str, tuple[RecordingActor, RecordingConn]] = {}

    def tell(self, message: Any) -> Any:
        return self.room.actor_ref.ask(message, timeout=2.0)

    def join(
        self, session: str, nick: str, since: int | None = None, conn: bool = True
    ) -> RecordingConn:
        user = RecordingActor.spawn(session)
        rec = RecordingConn()
        self.users[session] = (user, rec)
        self.tell(RoomJoin(session, user.actor_ref, nick, since, Outbox(rec) if conn else None))
        return rec

    def say(self, session: str, nick: str, text: str, client_id: str | None = None) -> None:
        user, _conn = self.users[session]
        self.tell(RoomSay(session, user.actor_ref, nick, text, client_id, self.clock.wall()))

    def actors(self) -> list[Any]:
        return [
            self.room,
            self.directory,
            self.store,
            self.watcher,
            *(u for u, _c in self.users.values()),
        ]


@pytest.fixture
def fx():
    f = Fixture()
    yield f
    stop_all(f.actors())


def settle() -> None:
    gevent.sleep(0.01)  # let told messages reach the recording actors


class TestJoin:
    """docs/protocol.md `join`: `joined` first, then the others' presence."""

    def test_joined_goes_on_the_outbox_and_the_user_gets_the_ref(self, fx):
        """A member with a connection gets `joined` on it; its actor gets JoinedRoom(payload None)."""
        alice = fx.join("s1", "alice")
        assert alice.of("joined") == [
            {
                "type": "joined",
                "room": "lobby",
                "members": ["alice"],
                "history": [],
                "complete": True,
            }
        ]
        settle()
        (joined,) = fx.users["s1"][0].of(JoinedRoom)
        assert (joined.room, joined.ref, joined.payload) == ("lobby", fx.room.actor_ref, None)

    def test_the_others_see_presence_and_watchers_hear_it_after(self, fx):
        """A second member: presence `join` to the first, not to itself; a subscriber hears RoomPresence."""
        fx.observers.subscribe(fx.watcher.actor_ref, rooms=True)
        alice = fx.join("s1", "alice")
        bob = fx.join("s2", "bob")
        assert alice.of("presence") == [
            {"type": "presence", "room": "lobby", "event": "join", "nick": "bob"}
        ]
        assert bob.of("presence") == []
        assert bob.of("joined")[0]["members"] == ["alice", "bob"]
        settle()
        assert fx.watcher.of(RoomPresence) == [
            RoomPresence("lobby", "join", "alice"),
            RoomPresence("lobby", "join", "bob"),
        ]

    def test_a_member_without_a_connection_gets_the_frame_as_a_message(self, fx):
        """Plugins have no outbox: JoinedRoom carries the encoded `joined`, later frames come as Deliver."""
        fx.join("p1", "bot", conn=False)
        fx.join("s1", "alice")
        settle()
        bot = fx.users["p1"][0]
        assert bot.of(JoinedRoom)[0].payload is not None
        assert b'"presence"' in bot.of(Deliver)[0].payload

    def test_since_returns_what_came_after(self, fx):
        """`since`: the messages after that seq, complete while they are all kept."""
        fx.join("s1", "alice")
        for text in ("one", "two", "three"):
            fx.say("s1", "alice", text)
        bob = fx.join("s2", "bob", since=1)
        (joined,) = bob.of("joined")
        assert [m["text"] for m in joined["history"]] == ["two", "three"] and joined["complete"]


class NowConn(RecordingConn):
    """A connection with the transport's send_text_now: records which way each frame went."""

    def __init__(self) -> None:
        super().__init__()
        self.ways: list[str] = []

    def send_text(self, payload: bytes) -> None:
        self.ways.append("queued")
        super().send_text(payload)

    def send_text_now(self, payload: bytes) -> None:
        self.ways.append("now")
        super().send_text(payload)


class TestFanOutWrites:
    """With nothing else in the room's mailbox, members' frames are written at once;
    with more waiting, they are queued, and the last one writes them all."""

    def _join(self, fx: Fixture, session: str, nick: str) -> NowConn:
        user = RecordingActor.spawn(session)
        conn = NowConn()
        fx.users[session] = (user, conn)
        fx.tell(RoomJoin(session, user.actor_ref, nick, None, Outbox(conn)))
        conn.ways.clear()
        return conn

    def test_a_lone_message_is_written_at_once(self, fx):
        alice, bob = self._join(fx, "s1", "alice"), self._join(fx, "s2", "bob")
        alice.ways.clear()  # bob's presence `join`, written at once too
        fx.say("s1", "alice", "hi")
        assert bob.ways == ["now"]
        assert alice.ways == ["now", "now"]  # its ack, then its own copy

    def test_messages_that_wait_are_queued_but_the_last(self, fx):
        self._join(fx, "s1", "alice")
        bob = self._join(fx, "s2", "bob")
        user = fx.users["s1"][0]
        for text in "abc":  # told without yielding: all three wait in the mailbox
            fx.room.actor_ref.tell(
                RoomSay("s1", user.actor_ref, "alice", text, None, fx.clock.wall())
            )
        settle()
        assert [m["text"] for m in bob.of("message")] == ["a", "b", "c"]
        assert bob.ways == ["queued", "queued", "now"]

    def test_the_senders_ack_is_written_at_once_even_with_messages_waiting(self, fx):
        """A sender's ack never waits for the members' order, however busy the room."""
        alice = self._join(fx, "s1", "alice")
        self._join(fx, "s2", "bob")
        user = fx.users["s1"][0]
        for text in "ab":
            fx.room.actor_ref.tell(
                RoomSay("s1", user.actor_ref, "alice", text, text, fx.clock.wall())
            )
        settle()
        kinds = [(f["type"], w) for f, w in zip(alice.frames[-4:], alice.ways[-4:], strict=True)]
        assert kinds == [("ack", "now"), ("message", "queued"), ("ack", "now"), ("message", "now")]


class TestSay:
    """docs/reliability.md: stored under a seq, acked, then delivered to everyone."""

    def test_ack_before_the_message_and_everyone_gets_it(self, fx):
        """The sender's `ack` (with the seq) precedes its own copy; every member gets the message."""
        alice = fx.join("s1", "alice")
        bob = fx.join("s2", "bob")
        fx.say("s1", "alice", "hi", "c1")
        kinds = [f["type"] for f in alice.frames]
        assert kinds[-2:] == ["ack", "message"]
        assert alice.of("ack") == [{"type": "ack", "id": "c1", "seq": 1}]
        (msg,) = bob.of("message")
        assert (msg["from"], msg["text"], msg["seq"], msg["ts"]) == (
            "alice",
            "hi",
            1,
            fx.clock.wall(),
        )

    def test_seq_counts_up_and_each_message_is_persisted(self, fx):
        """seq 1, 2, 3 in order; the store is told each stored frame."""
        fx.join("s1", "alice")
        for text in "abc":
            fx.say("s1", "alice", text)
        settle()
        assert [(p.room, p.frame["seq"], p.frame["text"]) for p in fx.store.of(Persist)] == [
            ("lobby", 1, "a"),
            ("lobby", 2, "b"),
            ("lobby", 3, "c"),
        ]

    def test_a_member_without_a_connection_is_acked_by_message(self, fx):
        """A plugin's `say`: Acked to its actor, the message to the others."""
        fx.join("p1", "bot", conn=False)
        alice = fx.join("s1", "alice")
        fx.say("p1", "bot", "beep")
        settle()
        assert fx.users["p1"][0].of(Acked) == [Acked(None, 1)]
        assert alice.of("message")[0]["from"] == "bot"

    def test_a_non_member_is_ignored(self, fx):
        """A `say` from a session that already left stores nothing."""
        fx.join("s1", "alice")
        fx.users["s9"] = (RecordingActor.spawn("s9"), RecordingConn())
        fx.say("s9", "ghost", "boo")
        assert fx.room.history.last_seq == 0

    def test_watchers_hear_the_message_with_its_seq(self, fx):
        """A subscriber to rooms hears RoomMessage(room, nick, text, seq, ts)."""
        fx.observers.subscribe(fx.watcher.actor_ref, rooms=True)
        fx.join("s1", "alice")
        fx.say("s1", "alice", "hi")
        settle()
        assert fx.watcher.of(RoomMessage) == [
            RoomMessage("lobby", "alice", "hi", 1, fx.clock.wall())
        ]

    def test_without_subscribers_no_event_is_built(self, fx):
        """No subscriber: the room's list is the port's empty list."""
        assert fx.room.watchers is fx.observers.rooms and fx.room.watchers == []


class TestLeaveRenameRetire:
    """Presence for leaves and renames; an empty room hands its history back."""

    def test_leave_tells_the_others(self, fx):
        """RoomLeave: the others get presence `leave`; the leaver's outbox is dropped."""
        alice = fx.join("s1", "alice")
        bob = fx.join("s2", "bob")
        fx.tell(RoomLeave("s2"))
        assert alice.of("presence")[-1] == {
            "type": "presence",
            "room": "lobby",
            "event": "leave",
            "nick": "bob",
        }
        assert "s2" not in fx.room.outboxes
        fx.say("s1", "alice", "after")
        assert bob.of("message") == []

    def test_rename_is_a_leave_then_a_join(self, fx):
        """RoomRename: the others see leave(old), join(new)."""
        alice = fx.join("s1", "alice")
        fx.join("s2", "bob")
        fx.tell(RoomRename("s2", "bob", "robert"))
        assert [(f["event"], f["nick"]) for f in alice.of("presence")] == [
            ("join", "bob"),
            ("leave", "bob"),
            ("join", "robert"),
        ]

    def test_retire_returns_the_history_and_stops(self, fx):
        """Retire: RoomRetired(name, history) to the directory, then the room stops."""
        fx.join("s1", "alice")
        fx.say("s1", "alice", "kept")
        fx.tell(RoomLeave("s1"))
        fx.room.actor_ref.tell(Retire())
        settle()
        (retired,) = fx.directory.of(RoomRetired)
        assert retired.room == "lobby" and retired.history.last_seq == 1
        assert not fx.room.actor_ref.is_alive()


class TestLastWords:
    """What a failed room tells its parent: enough to restart it (ChildFailed.report)."""

    def test_state_has_history_members_and_outboxes(self, fx):
        """last_words(): RoomState with the same history object and copies of the member tables."""
        fx.join("s1", "alice")
        state = fx.room.last_words()
        assert isinstance(state, RoomState)
        assert state.name == "lobby" and state.history is fx.room.history
        assert list(state.members) == ["s1"] and list(state.outboxes) == ["s1"]

    def test_restore_puts_the_members_back_silently(self, fx):
        """A room started with `restore` has the members and sends nobody anything."""
        alice = fx.join("s1", "alice")
        before = len(alice.frames)
        fresh = RoomActor.spawn(
            "lobby",
            fx.room.history,
            fx.directory.actor_ref,
            clock=fx.clock,
            restore=fx.room.last_words(),
        )
        try:
            assert list(fresh.members) == ["s1"] and len(alice.frames) == before
        finally:
            fresh.actor_ref.stop(block=False)


class TestOutbox:
    """A room holds an Outbox: send_text and backlog of the connection, nothing else."""

    def test_only_write_and_backlog(self):
        """No close, abort or receive on what a room holds."""
        conn = RecordingConn()
        out = Outbox(conn)
        out.send_text(b'{"type":"ping","ts":1}')
        assert conn.frames == [{"type": "ping", "ts": 1}] and out.backlog == 0
        for name in ("close", "abort", "receive", "on_message"):
            assert not hasattr(out, name)
