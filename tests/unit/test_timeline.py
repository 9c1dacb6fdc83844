"""Timelines (actors/core/timeline.py): why a user is in its state, kept small and bounded."""

from __future__ import annotations

from typing import Any

from actors.core.messages import Acked, ConnectionLost, Deliver, NickResult, TimerFired
from actors.core.session import Opened, Timeouts
from actors.core.timeline import Timelines, WindowCounts, entry_dict
from tests.support.fakes import SessionDriver

T = Timeouts(hello=5, ping=10, pong=25, profile=60, session=3600)


class Recorded(SessionDriver):
    """A SessionDriver whose every event is also recorded into a Timeline, as UserActor does."""

    def __init__(self, timelines: Timelines) -> None:
        self.timeline = timelines.open()
        super().__init__(T)
        self.timeline.record(self.clock.monotonic(), Opened(), self.session.state, self.effects)

    def event(self, event: Any) -> list[Any]:
        effects = self.session.handle(event, self.clock.monotonic())
        self.timeline.record(self.clock.monotonic(), event, self.session.state, effects)
        return self.apply(effects)

    def login(self, nick: str) -> None:
        self.send({"type": "hello"})
        self.send({"type": "profile", "nick": nick})
        self.event(NickResult(nick, True))

    def events(self) -> list[str]:
        return [e[1] for e in self.timeline.entries]


class TestTimeline:
    def test_a_pong_timeout_reads_as_a_story(self):
        """hello, profile, pings sent, TimerFired(pong) → ToBeDisconnected with close 4002, then gone."""
        tl = Timelines()
        d = Recorded(tl)
        d.login("alice")
        d.send({"type": "join", "room": "lobby"})
        d.advance(26)  # pings at 10 and 20; no pong: the pong rule fires at 25
        d.event(ConnectionLost(4002))
        events = d.events()
        assert events[:5] == [
            "Opened",
            "hello",
            "profile alice",
            "NickResult(alice, ok)",
            "join lobby",
        ]
        # Pings are written by the scheduler straight to the socket (no session event), so
        # they are not in the timeline; the pong rule's firing is.
        assert "TimerFired(ping)" not in events
        fired = d.timeline.entries[events.index("TimerFired(pong)")]
        assert fired[2:] == ("InChat", "ToBeDisconnected", "sent bye pong_timeout, close 4002", 1)
        assert events[-1] == "ConnectionLost(4002)" and d.timeline.state == "Disconnected"

    def test_chat_traffic_is_not_recorded(self):
        """Deliveries, acks and client pings change no state: the ring keeps life events only;
        an error answer is one (it says why a request failed)."""
        d = Recorded(Timelines())
        d.login("bob")
        before = len(d.timeline.entries)
        for i in range(10):
            d.event(Deliver(b'{"type":"message"}'))
            d.event(Acked("m", i))
            d.send({"type": "ping"})
        assert len(d.timeline.entries) == before
        d.send({"type": "say", "room": "nowhere", "text": "hi"})
        assert d.events()[before:] == ["frame → error not_in_room"]

    def test_routine_repeats_fold_and_the_ring_is_bounded(self):
        """Hours of pong checks fold into one line; only the last `size` entries stay."""
        tl = Timelines(size=8)
        d = Recorded(tl)
        d.login("idle")
        for _ in range(200):  # a ping every 10 s, answered; the pong rule re-arms every 25 s
            d.advance(10)
            d.send({"type": "pong"})
        assert d.events() == [
            "Opened",
            "hello",
            "profile idle",
            "NickResult(idle, ok)",
            "TimerFired(pong)",
        ]
        assert d.timeline.entries[-1][5] > 50
        for i in range(20):
            d.send({"type": "join", "room": f"r{i}"})
        assert len(d.timeline.entries) == 8

    def test_users_per_state_follow_transitions(self):
        """The node's tally moves with each user's transitions and forgets the gone."""
        tl = Timelines()
        a, b = Recorded(tl), Recorded(tl)
        assert tl.by_state["Undefined"] == 2
        a.login("a")
        b.send({"type": "hello"})
        assert (tl.by_state["InChat"], tl.by_state["Connected"], tl.by_state["Undefined"]) == (
            1,
            1,
            0,
        )
        a.event(ConnectionLost(1006))
        assert tl.by_state["Disconnected"] == 1
        a.timeline.close(a.clock.monotonic(), "s1", "a", "connection_lost", 0.0)
        a.timeline.close(
            a.clock.monotonic(), "s1", "a", "connection_lost", 0.0
        )  # twice: counted once
        assert tl.by_state["Disconnected"] == 0 and sum(tl.by_state.values()) == 1


class TestGone:
    def test_found_by_session_and_by_nick(self):
        """A gone user's timeline is found by its session id or its last nick."""
        tl = Timelines()
        d = Recorded(tl)
        d.login("carol")
        d.timeline.close(50.0, "sid-1", "carol", "kicked", 0.0, {"remote": "127.0.0.1"})
        assert tl.find("sid-1") is tl.find("carol")
        gone = tl.find("carol")
        assert gone is not None and gone.reason == "kicked" and gone.info["remote"] == "127.0.0.1"
        assert gone.entries[-1][1] == "gone: kicked"
        assert tl.disconnects.totals(55.0) == {"kicked": 1}

    def test_bounded_by_count_and_age(self):
        """At most `keep` gone users, none older than `keep_seconds`; a reused nick finds the newest."""
        tl = Timelines(keep=3, keep_seconds=100)
        for i in range(5):
            tl.open().close(float(i), f"s{i}", "same" if i in (1, 3) else f"n{i}", "bye", 0.0)
        assert list(tl.recent) == ["s2", "s3", "s4"]
        assert tl.find("same").session_id == "s3"
        assert tl.find("n0") is None
        tl.expire(103.5)  # s2 and s3 closed at 2 and 3: older than 100 s now
        assert list(tl.recent) == ["s4"] and tl.find("same") is None

    def test_search_newest_first(self):
        """The lookup lists the newest first, filtered by nick and reason."""
        tl = Timelines()
        for i, reason in enumerate(["bye", "pong_timeout", "pong_timeout"]):
            tl.open().close(float(i), f"s{i}", f"nick{i}", reason, 0.0)
        assert [g.session_id for g in tl.search(3.0, reason="pong_timeout")] == ["s2", "s1"]
        assert [g.session_id for g in tl.search(3.0, nick="NICK0")] == ["s0"]

    def test_window_counts_forget_after_a_minute(self):
        """Disconnects in the last minute: older buckets drop out."""
        w = WindowCounts(60)
        w.add(10.2, "bye")
        w.add(30.0, "kicked")
        w.add(30.5, "kicked")
        assert w.totals(40.0) == {"bye": 1, "kicked": 2}
        assert w.totals(71.0) == {"kicked": 2}
        assert w.totals(91.0) == {}


def test_entry_as_json():
    """Monotonic times become Unix seconds with the offset given."""
    assert entry_dict((10.0, "hello", "Undefined", "Connected", "sent welcome", 1), 1000.0) == {
        "at": 1010.0,
        "event": "hello",
        "from": "Undefined",
        "to": "Connected",
        "outcome": "sent welcome",
        "count": 1,
    }


def test_timer_fired_names_the_timer():
    """A timer event is named after its timer."""
    d = Recorded(Timelines())
    d.event(TimerFired("nothing-armed", 0))
    assert d.events()[-1] == "TimerFired(nothing-armed)"
