"""The user state machine (docs/protocol.md "The session lifecycle", "Close codes"), on a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from actors.core.messages import (
    Acked,
    ConnectionLost,
    Deliver,
    DmResult,
    JoinedRoom,
    Kick,
    NickResult,
    Overflow,
    PongFrame,
    RoomMoved,
    Shutdown,
    TimerFired,
)
from actors.core.session import (
    TRANSITIONS,
    Arm,
    ClaimNickFx,
    Close,
    DmFx,
    Finish,
    InvalidTransition,
    JoinRoomFx,
    LeaveRoomFx,
    Limits,
    SayFx,
    Session,
    Timeouts,
    UserState,
    mermaid,
)
from hubbub.testing import SessionDriver

T = Timeouts(hello=5, ping=30, pong=120, profile=300, session=43200)


def in_chat(nick: str = "alice") -> SessionDriver:
    d = SessionDriver(T)
    d.send({"type": "hello"})
    d.send({"type": "profile", "nick": nick})
    d.event(NickResult(nick, True))
    assert d.session.state is UserState.IN_CHAT
    return d


def member_of(room: str = "lobby") -> SessionDriver:
    d = in_chat()
    d.send({"type": "join", "room": room})
    d.event(JoinedRoom(room, "room-ref", b'{"type":"joined"}'))
    return d


class TestStates:
    """docs/protocol.md "The session lifecycle": Undefined → Connected → InChat → ToBeDisconnected → Disconnected."""

    def test_opened_socket_is_undefined_with_three_clocks(self):
        """A fresh socket is Undefined and has hello, profile and session timers armed."""
        d = SessionDriver(T)
        assert d.session.state is UserState.UNDEFINED
        assert sorted(d.session.timers) == ["hello", "profile", "session"]

    def test_hello_gives_welcome_with_the_five_timeouts(self):
        """hello → Connected and a welcome with protocol 1, the session id and every duration."""
        d = SessionDriver(T)
        frames = d.sent(d.send({"type": "hello", "client": "t"}))
        assert d.session.state is UserState.CONNECTED
        assert frames == [
            {
                "type": "welcome",
                "protocol": 1,
                "session": "s1",
                "timeouts": {"hello": 5, "ping": 30, "pong": 120, "profile": 300, "session": 43200},
            }
        ]
        assert "hello" not in d.session.timers and {"ping", "pong"} <= set(d.session.timers)

    def test_profile_asks_the_directory_then_enters_chat(self):
        """profile → ClaimNick; an accepted nick → InChat, profile_ok, profile timer disarmed."""
        d = SessionDriver(T)
        d.send({"type": "hello"})
        assert d.send({"type": "profile", "nick": "bob"}) == [ClaimNickFx("bob")]
        assert d.session.state is UserState.CONNECTED
        frames = d.sent(d.event(NickResult("bob", True)))
        assert frames == [{"type": "profile_ok", "nick": "bob"}]
        assert d.session.state is UserState.IN_CHAT and "profile" not in d.session.timers

    def test_nick_taken_keeps_the_state(self):
        """A taken nick → error nick_taken, still Connected, profile timer still armed."""
        d = SessionDriver(T)
        d.send({"type": "hello"})
        d.send({"type": "profile", "nick": "bob"})
        frames = d.sent(d.event(NickResult("bob", False)))
        assert frames[0]["code"] == "nick_taken"
        assert d.session.state is UserState.CONNECTED and "profile" in d.session.timers

    def test_connection_lost_finishes_from_any_live_state(self):
        """The socket going away → Disconnected and one Finish that cancels the armed timers."""
        for d in (SessionDriver(T), in_chat()):
            armed = set(d.session.timers)
            effects = d.event(ConnectionLost())
            assert d.session.state is UserState.DISCONNECTED
            assert [type(e) for e in effects] == [Finish] and set(effects[0].timers) == armed

    def test_late_messages_after_disconnect_are_dropped(self):
        """Once Disconnected, whatever was still in the mailbox is ignored."""
        d = in_chat()
        d.event(ConnectionLost())
        for late in (Shutdown(), Kick(), Deliver(b"{}"), NickResult("x", True), ConnectionLost()):
            assert d.event(late) == []
        assert d.session.state is UserState.DISCONNECTED

    def test_unknown_event_in_a_state_is_a_bug(self):
        """An internal event the table does not allow raises "can't handle X in state Y"."""
        d = SessionDriver(T)
        with pytest.raises(InvalidTransition, match="can't handle Acked in state Undefined"):
            d.event(Acked("x", 1))

    def test_every_row_targets_a_state_and_diagram_is_drawn_from_the_table(self):
        """The mermaid diagram lists every state change that TRANSITIONS allows."""
        text = mermaid()
        for (state, _event), (_m, targets) in TRANSITIONS.items():
            for target in targets:
                if target is not state:
                    assert f"{state.value} --> {target.value}" in text


class TestHelloRule:
    """No hello within --hello-timeout → bye hello_timeout, close 4001."""

    def test_fires_at_the_deadline_not_before(self):
        """4.99 s: nothing; 5 s: bye hello_timeout and close 4001."""
        d = SessionDriver(T)
        assert d.advance(4.99) == []
        effects = d.advance(0.01)
        assert d.sent(effects) == [{"type": "bye", "reason": "hello_timeout"}]
        assert d.closes(effects) == [Close(4001, "hello_timeout")]
        assert d.session.state is UserState.TO_BE_DISCONNECTED

    def test_hello_in_time_disarms_it(self):
        """hello at 4 s: no 4001 ever."""
        d = SessionDriver(T)
        d.advance(4)
        d.send({"type": "hello"})
        assert not any(c.code == 4001 for c in d.closes(d.advance(100)))

    def test_stale_hello_timeout_is_ignored(self):
        """A hello timeout posted before hello was handled is ignored afterwards."""
        d = SessionDriver(T)
        token = d.session.timers["hello"][0]
        d.send({"type": "hello"})
        assert d.event(TimerFired("hello", token)) == []
        assert d.session.state is UserState.CONNECTED


class TestPongRule:
    """Ping every --ping-interval after welcome; no pong for --pong-timeout → 4002."""

    def test_pings_every_interval(self):
        """Pings go out at 30, 60, 90 s after welcome."""
        d = SessionDriver(T)
        d.send({"type": "hello"})
        pings = [f for f in d.sent(d.advance(95)) if f["type"] == "ping"]
        assert len(pings) == 3 and all(isinstance(p["ts"], float) for p in pings)

    def test_silence_for_pong_timeout_disconnects(self):
        """No pong for 120 s after welcome → bye pong_timeout, close 4002."""
        d = SessionDriver(T)
        d.send({"type": "hello"})
        assert d.closes(d.advance(119.9)) == []
        effects = d.advance(0.1)
        assert d.closes(effects) == [Close(4002, "pong_timeout")]
        assert {"type": "bye", "reason": "pong_timeout"} in d.sent(effects)

    def test_pong_moves_the_deadline_without_a_scheduler_message(self):
        """A pong only updates last_pong; the timer re-arms itself to 120 s after it."""
        d = SessionDriver(T)
        d.send({"type": "hello"})
        d.advance(100)
        assert d.send({"type": "pong"}) == []  # no effects: no Arm, no scheduler message
        assert d.closes(d.advance(119)) == []  # 219 s after welcome, 119 after the pong
        assert d.closes(d.advance(1.0)) == [Close(4002, "pong_timeout")]

    def test_pong_control_frame_counts(self):
        """A WebSocket pong frame resets the pong rule like a `pong` message."""
        d = SessionDriver(T)
        d.send({"type": "hello"})
        d.advance(110)
        d.event(PongFrame())
        assert d.closes(d.advance(100)) == []

    def test_ping_is_armed_direct_and_never_reaches_the_session(self, monkeypatch):
        """The ping timer is periodic and `direct`: the scheduler writes it, the session is not told."""
        d = SessionDriver(T)
        arms = [fx for fx in d.send({"type": "hello"}) if isinstance(fx, Arm) and fx.name == "ping"]
        assert arms == [Arm("ping", 1030.0, arms[0].token, every=30.0, direct=True)]
        handled: list[object] = []
        real = Session.handle  # a slotted class: wrapped on the class, for this test only

        def handle(session: Session, ev: object, now: float) -> list[Any]:
            handled.append(ev)
            return real(session, ev, now)

        monkeypatch.setattr(Session, "handle", handle)
        d.advance(95)
        d.send({"type": "pong"})  # the wrapper is in the path: this comes through it
        assert handled
        assert not any(isinstance(ev, TimerFired) and ev.name == "ping" for ev in handled)

    def test_timer_dues_roll_the_ping_forward(self):
        """/debug's ping due time is the next firing, not the first one."""
        d = SessionDriver(T)
        d.send({"type": "hello"})  # at 1000: ping 1030, pong 1120
        d.advance(65)  # 1065: pings at 1030 and 1060 went out; next 1090
        assert dict(d.session.timer_dues(d.clock.monotonic()))["ping"] == pytest.approx(1090.0)
        names = [n for n, _ in d.session.timer_dues(d.clock.monotonic())]
        assert names == ["ping", "pong", "profile", "session"]  # soonest first

    def test_keeps_a_responsive_client_for_hours(self):
        """A client that pongs every ping stays connected until the session rule."""
        d = SessionDriver(T)
        d.send({"type": "hello"})
        d.send({"type": "profile", "nick": "a"})
        d.event(NickResult("a", True))
        for _ in range(1000):
            d.advance(30)
            d.send({"type": "pong"})
        assert d.session.state is UserState.IN_CHAT


class TestProfileRule:
    """No accepted profile --profile-timeout after the socket opened → 4004."""

    def test_connected_without_profile(self):
        """hello but no profile: 300 s after open → bye profile_timeout, close 4004."""
        d = SessionDriver(T)
        d.advance(1)
        d.send({"type": "hello"})
        for _ in range(9):  # a well-behaved client: pongs every 30 s, never sends a profile
            d.advance(30)
            d.send({"type": "pong"})
        assert d.closes() == []
        effects = d.advance(29)
        assert d.closes(effects) == [Close(4004, "profile_timeout")]

    def test_rejected_profile_does_not_stop_the_clock(self):
        """A nick_taken answer does not reset the 5-minute profile rule."""
        d = SessionDriver(T)
        d.send({"type": "hello"})
        d.send({"type": "profile", "nick": "x"})
        d.event(NickResult("x", False))
        for _ in range(9):
            d.advance(30)
            d.send({"type": "pong"})
        assert d.closes(d.advance(30)) == [Close(4004, "profile_timeout")]

    def test_profile_rule_can_beat_the_hello_rule(self):
        """With profile < hello, an Undefined socket is closed 4004 first."""
        d = SessionDriver(Timeouts(hello=10, ping=30, pong=120, profile=2, session=43200))
        assert d.closes(d.advance(2)) == [Close(4004, "profile_timeout")]


class TestSessionRule:
    """Connections older than --max-session → 4003, whatever they do."""

    def test_twelve_hours_in_milliseconds(self):
        """An active, ponging user in chat is closed 4003 at exactly 43200 s."""
        d = in_chat()
        for _ in range(43200 // 30 - 1):
            d.advance(30)
            d.send({"type": "pong"})
        assert d.closes() == []
        effects = d.advance(30)
        assert d.closes(effects) == [Close(4003, "session_expired")]
        assert {"type": "bye", "reason": "session_expired"} in d.sent(effects)

    def test_all_timers_disarmed_once_disconnecting(self):
        """Deciding to disconnect disarms every timer: nothing fires afterwards."""
        d = in_chat()
        d.event(Kick("spam"))
        assert d.session.timers == {}
        assert d.advance(50000) == []


class TestKick:
    """Kick(reason) from any actor → bye kicked (with the detail), close 4005."""

    def test_kick_in_chat(self):
        """bye carries reason kicked and the detail in `message`."""
        d = in_chat()
        effects = d.event(Kick("flooding"))
        assert d.sent(effects) == [{"type": "bye", "reason": "kicked", "message": "flooding"}]
        assert d.closes(effects) == [Close(4005, "kicked")]

    def test_kick_twice_is_one_disconnect(self):
        """A second kick while ToBeDisconnected does nothing."""
        d = in_chat()
        d.event(Kick())
        assert d.event(Kick()) == []

    @pytest.mark.parametrize(
        "event,code,reason", [(Shutdown(), 1001, "shutdown"), (Overflow(), 4007, "slow_consumer")]
    )
    def test_server_side_disconnects(self, event, code, reason):
        """Shutdown → 1001 shutdown; Overflow → 4007 slow_consumer."""
        d = in_chat()
        assert d.closes(d.event(event)) == [Close(code, reason)]


class TestClientMessages:
    """docs/protocol.md "Client → server": each message, its allowed states and its answer."""

    def test_first_message_not_hello_is_policy_1008(self):
        """Anything but hello while Undefined (even bad JSON) → bye policy, close 1008."""
        for frame in ({"type": "profile", "nick": "a"}, "not json", {"type": "pong"}):
            d = SessionDriver(T)
            assert d.closes(d.send(frame)) == [Close(1008, "policy")]

    def test_bye_closes_1000_without_a_bye_frame(self):
        """Client bye → close 1000, in any live state."""
        for d in (SessionDriver(T), in_chat()):
            effects = d.send({"type": "bye"})
            assert d.closes(effects) == [Close(1000, "bye")] and d.sent(effects) == []

    @pytest.mark.parametrize(
        "frame",
        [
            {"type": "join", "room": "r"},
            {"type": "leave", "room": "r"},
            {"type": "say", "room": "r", "text": "x"},
            {"type": "dm", "to": "x", "text": "x"},
            {"type": "hello"},
        ],
    )
    def test_wrong_state_is_not_ready(self, frame):
        """Chat messages before profile, or a second hello → error not_ready, nothing else."""
        d = SessionDriver(T)
        d.send({"type": "hello"})
        effects = d.send(frame)
        assert [f["code"] for f in d.sent(effects)] == ["not_ready"] and len(effects) == 1
        assert d.session.state is UserState.CONNECTED

    def test_bad_json_keeps_the_connection(self):
        """Bad JSON after hello → error bad_json; state unchanged."""
        d = SessionDriver(T)
        d.send({"type": "hello"})
        assert [f["code"] for f in d.sent(d.send("{nope"))] == ["bad_json"]
        assert d.session.state is UserState.CONNECTED

    def test_ping_is_answered_with_pong(self):
        """Client ping → pong with ts."""
        d = SessionDriver(T)
        d.send({"type": "hello"})
        frames = d.sent(d.send({"type": "ping"}))
        assert frames[0]["type"] == "pong" and isinstance(frames[0]["ts"], float)

    def test_join_goes_to_the_directory(self):
        """join → JoinRoom effect with since; joined arrives from the room."""
        d = in_chat()
        assert d.send({"type": "join", "room": "r", "since": 4}) == [JoinRoomFx("r", 4)]
        d.event(JoinedRoom("r", "ref", b'{"type":"joined","room":"r"}'))
        assert d.session.rooms == {"r": "ref"}

    def test_say_needs_membership(self):
        """say in a room not joined → not_in_room; in a joined room → SayFx to that room."""
        d = member_of("lobby")
        assert (
            d.sent(d.send({"type": "say", "room": "other", "text": "hi"}))[0]["code"]
            == "not_in_room"
        )
        assert d.send({"type": "say", "room": "lobby", "text": "hi", "id": "7"}) == [
            SayFx("room-ref", "hi", "7")
        ]
        assert d.sent(d.event(Acked("7", 12))) == [{"type": "ack", "id": "7", "seq": 12}]

    def test_leave(self):
        """leave → left (+ LeaveRoom to the directory); leaving again → not_in_room."""
        d = member_of("lobby")
        effects = d.send({"type": "leave", "room": "lobby"})
        assert LeaveRoomFx("lobby") in effects and d.sent(effects) == [
            {"type": "left", "room": "lobby"}
        ]
        assert d.sent(d.send({"type": "leave", "room": "lobby"}))[0]["code"] == "not_in_room"

    def test_dm_ack_and_no_such_user(self):
        """dm → DmFx; the directory's answer becomes ack (id echoed) or no_such_user."""
        d = in_chat()
        assert d.send({"type": "dm", "to": "bob", "text": "yo", "id": "1"}) == [
            DmFx("bob", "yo", "1")
        ]
        assert d.sent(d.event(DmResult("1", True))) == [{"type": "ack", "id": "1", "seq": None}]
        assert d.sent(d.event(DmResult(None, False)))[0]["code"] == "no_such_user"

    def test_deliveries_are_written_as_is(self):
        """A Deliver's bytes go out untouched (encoded once by the room)."""
        d = in_chat()
        assert d.sent(d.event(Deliver(b'{"type":"message","seq":1}'))) == [
            {"type": "message", "seq": 1}
        ]

    def test_rename_in_chat(self):
        """profile with a new nick in InChat → ClaimNick; the answer renames."""
        d = in_chat("alice")
        assert d.send({"type": "profile", "nick": "alice2"}) == [ClaimNickFx("alice2")]
        d.event(NickResult("alice2", True))
        assert d.session.nick == "alice2"

    def test_same_nick_again_is_ok_at_once(self):
        """profile with the current nick → profile_ok, no directory round trip."""
        d = in_chat("alice")
        assert d.sent(d.send({"type": "profile", "nick": "alice"})) == [
            {"type": "profile_ok", "nick": "alice"}
        ]

    def test_room_moved_rebinds_says(self):
        """After a room restart, says go to the new ref."""
        d = member_of("lobby")
        d.event(RoomMoved("lobby", "new-ref"))
        assert d.send({"type": "say", "room": "lobby", "text": "x"}) == [
            SayFx("new-ref", "x", None)
        ]

    def test_nothing_said_after_disconnect_decision_matters(self):
        """While ToBeDisconnected, client frames are ignored."""
        d = in_chat()
        d.event(Kick())
        assert d.send({"type": "say", "room": "x", "text": "y"}) == []
        assert d.send("garbage") == []


class TestFloodControl:
    """docs/operations.md --rate/--burst: over the bucket → error rate_limited; persisting → 4006."""

    def flooder(self, rate: float = 2, burst: int = 3) -> SessionDriver:
        from actors.core.session import Limits

        d = SessionDriver(T)
        d.session.limits = Limits(rate, burst)
        d.send({"type": "hello"})
        return d

    def test_burst_then_rate_limited(self):
        """A full bucket lets `burst` frames through; the next gets rate_limited and no effect."""
        d = self.flooder(rate=2, burst=3)
        for _ in range(3):
            assert d.sent(d.send({"type": "ping"}))[0]["type"] == "pong"
        assert d.sent(d.send({"type": "ping"})) == [
            {"type": "error", "code": "rate_limited", "message": "slow down: too many messages"}
        ]

    def test_bucket_refills_at_rate(self):
        """After 0.5 s at 2/s one more frame passes."""
        d = self.flooder(rate=2, burst=3)
        for _ in range(3):
            d.send({"type": "ping"})
        d.clock.jump(0.5)
        assert d.sent(d.send({"type": "ping"}))[0]["type"] == "pong"

    def test_persisting_flood_is_4006(self):
        """More than `burst` rejected frames in a row → bye rate_limited, close 4006."""
        d = self.flooder(rate=2, burst=3)
        for _ in range(3 + 3):  # 3 accepted, 3 rejected
            assert d.closes(d.send({"type": "ping"})) == []
        effects = d.send({"type": "ping"})
        assert d.closes(effects) == [Close(4006, "rate_limited")]
        assert {"type": "bye", "reason": "rate_limited"} in d.sent(effects)

    def test_pausing_resets_the_strikes(self):
        """An accepted frame after a pause forgives earlier rejections."""
        d = self.flooder(rate=2, burst=3)
        for _ in range(4):
            d.send({"type": "ping"})  # 3 accepted, 1 rejected
        d.clock.jump(1.0)
        d.send({"type": "ping"})  # accepted: strikes reset
        for _ in range(3):
            d.send({"type": "ping"})
        assert d.closes() == []

    def test_control_frames_and_timers_are_not_counted(self):
        """Pong control frames and timers never consume tokens."""
        d = self.flooder(rate=0.001, burst=1)
        for _ in range(100):
            d.event(PongFrame())
        assert d.closes() == []


class TestProfileRaces:
    def test_superseded_grant_then_refusal_still_allows_the_granted_nick(self):
        """profile a, profile b; a granted, b refused; profile a again enters InChat."""
        d = SessionDriver(T)
        d.send({"type": "hello"})
        d.send({"type": "profile", "nick": "a"})
        d.send({"type": "profile", "nick": "b"})
        d.event(NickResult("a", True))
        assert d.sent(d.event(NickResult("b", False)))[0]["code"] == "nick_taken"
        assert d.send({"type": "profile", "nick": "a"}) == [ClaimNickFx("a")]
        d.event(NickResult("a", True))
        assert d.session.state is UserState.IN_CHAT and "profile" not in d.session.timers

    @pytest.mark.parametrize(
        "code,reason",
        [
            (1002, "protocol_error"),
            (1007, "invalid_utf8"),
            (1009, "too_big"),
            (1006, "connection_lost"),
            (1000, "client_closed"),
            (None, "client_closed"),
        ],
    )
    def test_transport_close_codes_name_the_reason(self, code, reason):
        """A socket ended by the transport is logged with a reason named after its close code."""
        d = in_chat()
        d.event(ConnectionLost(code))
        assert d.session.close_reason == reason


def test_rules_count_from_the_upgrade_not_from_the_first_run():
    """Opened(at) arms hello/profile/session from the upgrade time, even if handled later."""
    from actors.core.session import Opened, Session

    s = Session("s", T, lambda: 0.0)
    arms = s.handle(Opened(at=100.0), 100.25)
    assert {a.name: a.due for a in arms} == {"hello": 105.0, "profile": 400.0, "session": 43300.0}


class TestPongNotedWhereRead:
    """A `pong` message needs no decision when the session is live: Session.note_pong."""

    def test_note_pong_moves_last_pong(self):
        """note_pong in Connected sets last_pong; the pong rule then counts from it."""
        d = SessionDriver(T)
        d.send({"type": "hello"})
        d.advance(100)
        assert d.session.note_pong(d.clock.monotonic()) is True
        assert d.session.last_pong == d.clock.monotonic()
        assert d.closes(d.advance(119)) == []
        assert d.closes(d.advance(1.0)) == [Close(4002, "pong_timeout")]

    def test_note_pong_refuses_before_hello(self):
        """Before hello a pong is a decision (policy 1008): note_pong leaves it to handle()."""
        d = SessionDriver(T)
        assert d.session.note_pong(d.clock.monotonic()) is False
        assert d.closes(d.send({"type": "pong"})) == [Close(1008, "policy")]

    def test_note_pong_takes_a_token_and_refuses_when_the_bucket_is_empty(self):
        """A noted pong costs a token; with none left it goes to handle(), which says rate_limited."""
        d = SessionDriver(T)
        d.session.limits = Limits(rate=1.0, burst=3)
        d.send({"type": "hello"})
        now = d.clock.monotonic()
        assert [d.session.note_pong(now) for _ in range(4)] == [True, True, True, False]
        assert d.sent(d.send({"type": "pong"})) == [
            {"type": "error", "code": "rate_limited", "message": "slow down: too many messages"}
        ]
        d.clock.jump(1.0)
        assert d.session.note_pong(d.clock.monotonic()) is True  # refilled

    def test_note_pong_resets_the_strikes(self):
        """An accepted pong ends a run of rejected frames, as any accepted frame does."""
        d = SessionDriver(T)
        d.session.limits = Limits(rate=1.0, burst=2)
        d.send({"type": "hello"})
        d.send({"type": "ping"})  # 1 token left
        d.send({"type": "ping"})
        d.send({"type": "ping"})  # rejected: strike 1
        assert d.session._strikes == 1
        d.clock.jump(1.0)
        assert d.session.note_pong(d.clock.monotonic()) is True and d.session._strikes == 0

    def test_note_pong_does_nothing_after_a_disconnect_was_decided(self):
        """In ToBeDisconnected the table has no `pong`: not noted."""
        d = SessionDriver(T)
        d.send({"type": "hello"})
        d.send({"type": "bye"})
        before = d.session.last_pong
        d.clock.jump(5)
        assert d.session.note_pong(d.clock.monotonic()) is False and d.session.last_pong == before


class TestBudgetsAndIdentity:
    """Extensions of issue 15: history pages, ignore, tokens, resume secrets."""

    def test_history_request_goes_to_the_room(self):
        from actors.core.session import PageFx

        d = member_of("lobby")
        assert d.send({"type": "history", "room": "lobby", "before": 9, "limit": 5}) == [
            PageFx("room-ref", 9, None, 5)
        ]
        assert d.sent(d.send({"type": "history", "room": "elsewhere"}))[0]["code"] == "not_in_room"

    def test_ignore_filters_dms_and_tells_the_rooms(self):
        """ignore → `ignoring` with the folded list, rooms told; dms from that nick (any spelling) dropped."""
        from actors.core.session import IgnoresFx, SendRaw

        d = member_of("lobby")
        effects = d.send({"type": "ignore", "nick": "Bob"})
        assert d.sent(effects) == [{"type": "ignoring", "nicks": ["bob"]}]
        assert IgnoresFx(frozenset({"bob"})) in effects
        assert d.event(Deliver(b"x", "BOB")) == []
        assert d.event(Deliver(b"y", "carol")) == [SendRaw(b"y")]
        assert d.event(Deliver(b"z")) == [SendRaw(b"z")], "room frames carry no sender here"
        d.send({"type": "unignore", "nick": "b0b"})
        assert d.event(Deliver(b"x", "bob")) == [SendRaw(b"x")]

    def test_ignore_list_is_bounded(self):
        from actors.core.budgets import Budgets

        d = in_chat()
        d.session.budgets = Budgets(max_ignores=3)
        for i in range(3):
            d.send({"type": "ignore", "nick": f"n{i}"})
        assert (
            d.sent(d.send({"type": "ignore", "nick": "one-more"}))[0]["code"] == "too_many_ignores"
        )

    def test_info_is_kept_compact(self):
        d = in_chat()
        d.send({"type": "profile", "nick": "alice", "info": {"a": [1, 2]}})
        assert d.session.info == b'{"a":[1,2]}'

    def test_resume_secret_in_profile_ok_and_back(self):
        """profile_ok carries the resume secret the directory chose; profile.resume is passed on."""
        d = SessionDriver(T)
        d.send({"type": "hello"})
        assert d.send({"type": "profile", "nick": "bob", "resume": "r1"}) == [
            ClaimNickFx("bob", False, "r1")
        ]
        assert d.sent(d.event(NickResult("bob", True, resume="r2"))) == [
            {"type": "profile_ok", "nick": "bob", "resume": "r2"}
        ]

    def test_refusals_carry_the_directory_code(self):
        d = SessionDriver(T)
        d.send({"type": "hello"})
        d.send({"type": "profile", "nick": "bob"})
        frames = d.sent(d.event(NickResult("bob", False, "unauthorized", "needs a token")))
        assert frames == [{"type": "error", "code": "unauthorized", "message": "needs a token"}]

    def test_token_is_checked_on_the_injected_wall_clock(self):
        """A valid token for the nick → a verified claim; expired or for another nick → unauthorized."""
        import jwt

        from actors.core.identity import Verifier

        key = "k" * 32
        d = SessionDriver(T)
        d.session.verifier = Verifier(key)
        d.send({"type": "hello"})
        now = d.session.wall()
        good = jwt.encode({"nick": "Alice", "exp": now + 60}, key, algorithm="HS256")
        assert d.send({"type": "profile", "nick": "alice", "token": good}) == [
            ClaimNickFx("alice", True, None)
        ]
        other = jwt.encode({"nick": "mallory"}, key, algorithm="HS256")
        assert (
            d.sent(d.send({"type": "profile", "nick": "alice", "token": other}))[0]["code"]
            == "unauthorized"
        )
        d.clock.jump(3600)
        assert (
            d.sent(d.send({"type": "profile", "nick": "alice", "token": good}))[0]["code"]
            == "unauthorized"
        )

    def test_only_dropped_connections_hold_their_nick(self):
        d = in_chat()
        d.event(ConnectionLost(1006))
        assert d.session.holds_nick()
        d = in_chat()
        d.send({"type": "bye"})
        d.event(ConnectionLost(1000))
        assert not d.session.holds_nick()
