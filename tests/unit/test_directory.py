"""DirectoryActor (actors/directory.py) on fakes: recording actors for users and the store.

Rooms are the real RoomActor (the directory's children); users are RecordingActors, so
every answer the directory or a room gives them is written down.
"""

from __future__ import annotations

from typing import Any

import pytest

from actors.core.messages import (
    ClaimNick,
    Deliver,
    DmResult,
    HistoryLoaded,
    JoinedRoom,
    JoinRoom,
    Kick,
    KickNick,
    LeaveRoom,
    LoadHistory,
    NickResult,
    SendDm,
    UserGone,
)
from actors.directory import DirectoryActor
from hubbub.testing import RecordingActor, stop_all, wait_for


class Fixture:
    def __init__(self, store: bool = False) -> None:
        self.store = RecordingActor.spawn("store") if store else None
        self.directory = DirectoryActor.spawn(
            10, store=self.store.actor_ref if self.store is not None else None
        )
        self.users: dict[str, RecordingActor] = {}

    def ask(self, message: Any) -> Any:
        return self.directory.actor_ref.ask(message, timeout=2.0)

    def user(self, session: str, nick: str | None = None) -> RecordingActor:
        user = self.users[session] = RecordingActor.spawn(session)
        if nick is not None:
            self.ask(ClaimNick(session, user.actor_ref, nick))
        return user

    def join(self, session: str, room: str, since: int | None = None) -> None:
        user = self.users[session]
        self.ask(JoinRoom(session, user.actor_ref, "", room, since))

    def actors(self) -> list[Any]:
        return [self.directory, *self.users.values(), *([self.store] if self.store else [])]


@pytest.fixture
def fx():
    f = Fixture()
    yield f
    stop_all(f.actors())


class TestNicks:
    """docs/protocol.md `profile`: nicks are unique; a new one renames."""

    def test_a_free_nick_is_granted_and_a_taken_one_refused(self, fx):
        """First claim wins; the second session gets NickResult(ok=False)."""
        alice, other = fx.user("s1", "alice"), fx.user("s2", "alice")
        wait_for(lambda: alice.of(NickResult) and other.of(NickResult))
        assert [(r.nick, r.ok) for r in alice.of(NickResult)] == [("alice", True)]
        assert [(r.nick, r.ok, r.code) for r in other.of(NickResult)] == [
            ("alice", False, "nick_taken")
        ]
        assert fx.directory.nicks == {"alice": "s1"}

    def test_a_rename_frees_the_old_nick(self, fx):
        """Claiming a second nick releases the first."""
        fx.user("s1", "alice")
        fx.ask(ClaimNick("s1", fx.users["s1"].actor_ref, "alicia"))
        assert fx.directory.nicks == {"alicia": "s1"}

    def test_user_gone_frees_the_nick_and_leaves_every_room(self, fx):
        """UserGone: nick free, membership gone, the empty room retired."""
        fx.user("s1", "alice")
        fx.join("s1", "lobby")
        fx.ask(UserGone("s1"))
        assert fx.directory.nicks == {} and fx.directory.rooms == {}
        wait_for(lambda: "lobby" in fx.directory.dormant, what="the room's history back")


class TestRooms:
    """Rooms are created on the first join, retired when empty, and keep their seq."""

    def test_first_join_creates_the_room_as_a_child(self, fx):
        """A RoomActor child appears; the user gets JoinedRoom from it."""
        fx.user("s1", "alice")
        fx.join("s1", "lobby")
        assert list(fx.directory.rooms) == ["lobby"]
        assert "room:lobby" in fx.directory.children
        wait_for(lambda: fx.users["s1"].of(JoinedRoom))

    def test_an_emptied_room_retires_and_its_history_comes_back(self, fx):
        """Leave the last member: retired to `dormant`; a new join continues from its seq."""
        fx.user("s1", "alice")
        fx.join("s1", "lobby")
        room = fx.directory.rooms["lobby"].actor
        room.history.append(
            {"type": "message", "room": "lobby", "from": "alice", "text": "x", "seq": 0, "ts": 0}
        )
        fx.ask(LeaveRoom("s1", "lobby"))
        wait_for(lambda: "lobby" in fx.directory.dormant)
        fx.join("s1", "lobby")
        assert fx.directory.rooms["lobby"].actor.history.last_seq == 1


class TestStoreByMessage:
    """--store: the directory asks the store with LoadHistory and waits; it runs no SQLite."""

    @pytest.fixture
    def fx(self):
        f = Fixture(store=True)
        yield f
        stop_all(f.actors())

    def test_a_join_waits_for_the_loaded_history(self, fx):
        """No room until HistoryLoaded arrives; then the room starts at the stored seq."""
        fx.user("s1", "alice")
        fx.join("s1", "lobby")
        wait_for(lambda: fx.store.of(LoadHistory))
        (load,) = fx.store.of(LoadHistory)
        assert (load.room, load.keep, load.reply_to) == ("lobby", 10, fx.directory.actor_ref)
        assert fx.directory.rooms == {}
        frame = {
            "type": "message",
            "room": "lobby",
            "from": "bob",
            "text": "old",
            "seq": 41,
            "ts": 1.0,
        }
        fx.ask(HistoryLoaded("lobby", 41, [frame]))
        room = fx.directory.rooms["lobby"].actor
        assert room.history.last_seq == 41 and room.history.recent() == [frame]
        wait_for(lambda: fx.users["s1"].of(JoinedRoom))

    def test_joins_while_loading_wait_together_and_a_leave_cancels_one(self, fx):
        """Two joins during one load: one LoadHistory; a session that left meanwhile is not added."""
        fx.user("s1", "alice")
        fx.user("s2", "bob")
        fx.join("s1", "lobby")
        fx.join("s2", "lobby")
        fx.ask(LeaveRoom("s2", "lobby"))
        fx.ask(HistoryLoaded("lobby", 0, []))
        assert len(fx.store.of(LoadHistory)) == 1
        assert set(fx.directory.rooms["lobby"].members) == {"s1"}

    def test_a_dormant_room_needs_no_load(self, fx):
        """A room that retired on this node comes back from memory."""
        fx.user("s1", "alice")
        fx.join("s1", "lobby")
        fx.ask(HistoryLoaded("lobby", 0, []))
        fx.ask(LeaveRoom("s1", "lobby"))
        wait_for(lambda: "lobby" in fx.directory.dormant)
        fx.join("s1", "lobby")
        assert len(fx.store.of(LoadHistory)) == 1 and "lobby" in fx.directory.rooms


class TestDmAndKick:
    """docs/protocol.md `dm`; docs/operations.md's kick: found by nick."""

    def test_dm_reaches_the_holder_of_the_nick(self, fx):
        """The target gets Deliver(dm frame); the sender DmResult(ok)."""
        alice, bob = fx.user("s1", "alice"), fx.user("s2", "bob")
        fx.ask(SendDm("s1", alice.actor_ref, "alice", "bob", "psst", "d1", 5.0))
        wait_for(lambda: bob.of(Deliver) and alice.of(DmResult))
        assert bob.of(Deliver)[0].payload == b'{"type":"dm","from":"alice","text":"psst","ts":5.0}'
        assert alice.of(DmResult) == [DmResult("d1", True)]

    def test_dm_to_nobody(self, fx):
        """An unknown nick: DmResult(ok=False)."""
        alice = fx.user("s1", "alice")
        fx.ask(SendDm("s1", alice.actor_ref, "alice", "nobody", "hi", "d2", 5.0))
        wait_for(lambda: alice.of(DmResult))
        assert alice.of(DmResult) == [DmResult("d2", False)]

    def test_kick_answers_whether_someone_was_there(self, fx):
        """KickNick: True and Kick(reason) to the user; False for an unknown nick."""
        alice = fx.user("s1", "alice")
        assert fx.ask(KickNick("alice", "enough")) is True
        assert fx.ask(KickNick("nobody", "x")) is False
        wait_for(lambda: alice.of(Kick))
        assert alice.of(Kick) == [Kick("enough")]
