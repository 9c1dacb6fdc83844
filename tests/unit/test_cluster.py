"""actors/cluster/: the pure parts (the URL settings, keys, the Lua files, the room mirror).

The mirror is driven like the session: events in, effects out, on a fake clock.  The
behaviour against a real Redis is in tests/e2e/test_e2e_cluster*.py.
"""

from __future__ import annotations

import json
from importlib import resources

import pytest

from actors.cluster import DEFAULT_NODE_TTL, DEFAULT_ROOM_TTL, RoomMirror, parse_url
from actors.cluster import keys as K
from actors.cluster.mirror import (
    Ack,
    Announce,
    Deliver,
    LocalSay,
    Recheck,
    Refuse,
    Rejoin,
    Resync,
    SendSay,
)
from actors.core.history import RoomHistory

from ..support.fakes import FakeClock


def frame(seq: int, text: str = "") -> dict:
    return {
        "type": "message",
        "room": "r",
        "from": "n",
        "text": text or f"m{seq}",
        "seq": seq,
        "ts": 0.0,
    }


def raw(seq: int, text: str = "") -> tuple[bytes, dict]:
    f = frame(seq, text)
    return json.dumps(f).encode(), f


def msg_event(ev: int, seq: int, tag: bytes = b"other:1", text: str = "") -> bytes:
    return b"M%d %d %s %s" % (ev, seq, tag, raw(seq, text)[0])


class TestSettingsInTheUrl:
    """docs/cluster.md: node TTL and room TTL are query parameters of the Redis URL."""

    def test_defaults_and_the_url_redis_py_sees(self):
        s = parse_url("redis://h:6379/0")
        assert (s.url, s.node_ttl, s.room_ttl) == (
            "redis://h:6379/0",
            DEFAULT_NODE_TTL,
            DEFAULT_ROOM_TTL,
        )
        assert DEFAULT_NODE_TTL == 30.0

    def test_settings_are_taken_out_and_other_parameters_stay(self):
        s = parse_url("redis://:pw@h:6379/2?node_ttl=2.5&socket_keepalive=true&room_ttl=60")
        assert (s.node_ttl, s.room_ttl) == (2.5, 60.0)
        assert s.url == "redis://:pw@h:6379/2?socket_keepalive=true"

    def test_a_unix_socket_url_keeps_its_three_slashes(self):
        s = parse_url("unix:///run/redis.sock?db=2&node_ttl=9")
        assert (s.url, s.node_ttl) == ("unix:///run/redis.sock?db=2", 9.0)

    def test_a_sentinel_url_names_the_sentinels_and_the_primary(self):
        s = parse_url("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2/mymaster/3?node_ttl=5")
        assert s.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379))
        assert (s.service, s.db, s.password, s.node_ttl) == ("mymaster", 3, "pw", 5.0)

    @pytest.mark.parametrize("bad", ["0", "-1", "soon", "inf", "nan", ""])
    def test_a_bad_ttl_is_refused(self, bad):
        with pytest.raises(ValueError, match="node_ttl"):
            parse_url(f"redis://h/0?node_ttl={bad}")


class TestKeys:
    """Redis Cluster: each room's, nick's and node's keys share one hash slot."""

    @staticmethod
    def tag(key: str | bytes) -> str:
        key = key.decode() if isinstance(key, bytes) else key
        return key[key.index("{") + 1 : key.index("}")]

    def test_a_rooms_keys_and_channel_share_a_tag(self):
        tags = {
            self.tag(k)
            for k in (*K.room_keys("hall"), K.room_channel("hall"), K.said_key("hall", b"t:1"))
        }
        assert tags == {"r:hall"}

    def test_a_nodes_keys_share_a_tag(self):
        tags = {
            self.tag(k)
            for k in (
                K.node_key("ab"),
                K.node_nicks("ab"),
                K.node_rooms("ab"),
                K.node_channel("ab"),
            )
        }
        assert tags == {"node:ab"}

    def test_every_script_is_a_lua_file_in_the_package(self):
        names = {p.name for p in resources.files("actors.cluster").joinpath("lua").iterdir()}
        assert {"say.lua", "sync.lua", "presence.lua", "claim.lua"} <= names


def synced(
    clock: FakeClock,
    history: RoomHistory | None = None,
    epoch: str = "e1",
    seq: int = 0,
    frames: list | None = None,
    roster: dict | None = None,
) -> RoomMirror:
    m = RoomMirror("me/", b"tag", history or RoomHistory(10), grace=1.5)
    m.snapshot(0, seq, roster or {}, frames or [], epoch, clock.monotonic())
    return m


class TestOneOrder:
    """docs/cluster.md "One order per room": Redis numbers every message; each is delivered once."""

    def test_a_say_before_the_first_snapshot_waits_then_goes(self):
        m = RoomMirror("me/", b"tag", RoomHistory(10), grace=1.5)
        assert m.say(1) == []
        assert m.snapshot(0, 0, {}, [], "e1", 0.0) == [SendSay(1)]

    def test_a_say_while_redis_is_down_is_refused(self):
        m = synced(FakeClock())
        m.link_down()
        assert m.say(1) == [Refuse(1)]

    def test_a_say_waiting_for_the_first_snapshot_is_refused_when_the_wait_ends(self):
        m = RoomMirror("me/", b"tag", RoomHistory(10), grace=1.5)
        m.say(1)
        assert m.expired(1) == [Refuse(1)]
        assert m.snapshot(0, 0, {}, [], "e1", 0.0) == []

    def test_the_message_coming_back_acks_before_it_is_delivered(self):
        m = synced(FakeClock())
        m.say(1)
        out = m.event(msg_event(1, 1, b"tag:1"), json.loads)
        assert [type(fx) for fx in out] == [Ack, Deliver] and out[0] == Ack(1, 1)
        assert m.said(1, [1, 1]) == [], "acked once"

    def test_a_message_is_delivered_once_even_if_seen_twice(self):
        m = synced(FakeClock())
        assert len(m.event(msg_event(1, 1), json.loads)) == 1
        assert m.event(msg_event(1, 1), json.loads) == [], "same event again"
        out = m.snapshot(1, 1, {}, [raw(1)], "e1", 0.0)
        assert not [fx for fx in out if isinstance(fx, Deliver)], (
            "in the snapshot and already delivered"
        )

    def test_a_gap_in_the_events_asks_for_a_snapshot(self):
        m = synced(FakeClock())
        assert m.event(msg_event(3, 3), json.loads) == [Resync()]
        assert m.event(msg_event(4, 4), json.loads) == [], "nothing trusted until the snapshot"
        out = m.snapshot(4, 4, {}, [raw(1), raw(2), raw(3), raw(4)], "e1", 0.0)
        assert [fx.frame["seq"] for fx in out if isinstance(fx, Deliver)] == [1, 2, 3, 4]

    def test_a_say_lost_with_the_connection_is_sent_again_after_the_snapshot(self):
        """Its outcome is unknown: the same tag again, and the script answers its first seq."""
        m = synced(FakeClock())
        m.say(7)
        assert m.said(7, ConnectionError("reset")) == []
        m.link_down()
        m.link_up()
        assert m.snapshot(0, 0, {}, [], "e1", 0.0) == [SendSay(7)]
        assert m.said(7, [0, 5]) == [Ack(7, 5)]

    def test_a_say_redis_refused_is_refused(self):
        m = synced(FakeClock())
        m.say(1)
        err = RuntimeError("NOSCRIPT")
        err.script_error = True  # type: ignore[attr-defined]
        assert m.said(1, err) == [Refuse(1)]

    def test_a_say_in_a_lost_epoch_waits_for_the_new_one(self):
        m = synced(FakeClock())
        m.say(1)
        assert m.said(1, [-1, 0]) == [Resync()]
        out = m.snapshot(0, 0, {}, [], "e2", 0.0)
        assert out == [Rejoin(), SendSay(1)]


class TestEpochs:
    """docs/protocol.md "Epochs": complete is true only when nothing can be missing."""

    def test_since_in_this_epoch_is_complete(self):
        m = synced(FakeClock(), seq=2, frames=[raw(1), raw(2)])
        assert m.joined("me/s", "n", 1, "e1") == (["n"], [frame(2)], True)

    def test_since_from_another_epoch_is_not(self):
        m = synced(FakeClock(), seq=2, frames=[raw(1), raw(2)])
        nicks, history, complete = m.joined("me/s", "n", 1, "old")
        assert complete is False and [f["seq"] for f in history] == [1, 2]

    def test_since_while_not_synchronised_is_not(self):
        m = synced(FakeClock(), seq=2, frames=[raw(1), raw(2)])
        m.link_down()
        assert m.joined("me/s", "n", 2, "e1")[2] is False, (
            "others may have said something meanwhile"
        )

    def test_a_new_epoch_restarts_the_view_instead_of_mixing_orders(self):
        m = synced(FakeClock(), seq=5, frames=[raw(4), raw(5)])
        out = m.snapshot(0, 5, {}, [], "e2", 0.0)
        assert out == [Rejoin()] and m.history.recent() == [] and m.epoch == "e2"


class TestPresence:
    """The roster follows the channel; a member missing from a snapshot leaves after the grace."""

    def test_join_and_leave_events(self):
        m = synced(FakeClock())
        assert m.event(b"P1 j b/x bob", json.loads) == [Announce("join", "bob")]
        assert m.event(b"P2 j me/s1 me1", json.loads) == [Announce("join", "me1", "s1")]
        assert m.event(b"P3 l b/x bob", json.loads) == [Announce("leave", "bob")]

    def test_a_member_missing_from_a_snapshot_leaves_only_after_the_grace(self):
        clock = FakeClock()
        m = synced(clock, roster={"b/x": "bob"})
        m.link_down()
        m.link_up()
        assert m.snapshot(0, 0, {}, [], "e1", clock.monotonic()) == [
            Recheck(clock.monotonic() + 1.5)
        ]
        clock.jump(1.0)
        assert m.recheck(clock.monotonic()) == [Recheck(1001.5)]
        clock.jump(0.5)
        assert m.recheck(clock.monotonic()) == [Announce("leave", "bob")]

    def test_a_member_that_comes_back_in_time_is_not_announced(self):
        clock = FakeClock()
        m = synced(clock, roster={"b/x": "bob"})
        m.link_down()
        m.link_up()
        m.snapshot(0, 0, {}, [], "e1", clock.monotonic())
        assert m.event(b"P1 j b/x bob", json.loads) == []
        clock.jump(2)
        assert m.recheck(clock.monotonic()) == []

    def test_a_gap_the_snapshot_cannot_fill_restarts_the_view(self):
        """More was said while the room was not listening than Redis keeps: told, not skipped."""
        m = synced(FakeClock(), seq=2, frames=[raw(1), raw(2)])
        m.link_down()
        m.link_up()
        out = m.snapshot(0, 9, {}, [raw(8), raw(9)], "e1", 0.0)
        assert out == [Rejoin(after=2)] and [f["seq"] for f in m.history.recent()] == [8, 9]


class TestLease:
    """docs/cluster.md "Rooms on one node": the lease holder numbers; a handover loses nothing."""

    def leased(self) -> RoomMirror:
        m = RoomMirror("me/", b"tag", RoomHistory(10), grace=1.5)
        m.snapshot(0, 0, {}, [], "e1", 0.0, mode="local")
        return m

    def test_a_leased_room_numbers_its_says_here(self):
        m = self.leased()
        assert m.say(1) == [LocalSay(1)]
        assert [m.number(frame(0)) for _ in range(3)] == [1, 2, 3]

    def test_asked_to_hand_over_it_waits_for_redis_to_have_every_message(self):
        m = self.leased()
        m.number(frame(0))
        m.number(frame(0))
        m.appended(1, 1)
        assert m.event(b"H1", json.loads) == [], "message 2 is not in Redis yet"
        assert m.say(9) == [], "says wait during the handover"
        assert m.appended(2, 1) == [Resync()]

    def test_a_lease_holder_keeps_numbering_while_redis_is_away_but_not_past_a_heartbeat(self):
        m = self.leased()
        m.link_down()
        assert m.say(1) == [LocalSay(1)]
        m.lease_expired()
        assert m.say(2) == [Refuse(2)]

    def test_waiting_for_the_holder_says_wait_until_it_hands_over(self):
        m = RoomMirror("me/", b"tag", RoomHistory(10), grace=1.5)
        m.snapshot(0, 0, {}, [], "e1", 0.0, mode="wait")
        assert m.say(1) == []
        assert m.event(b"S1", json.loads) == [Resync()]
        assert m.snapshot(1, 3, {}, [raw(1), raw(2), raw(3)], "e1", 0.0)[-1] == SendSay(1)

    def test_asked_while_the_snapshot_was_on_its_way(self):
        m = RoomMirror("me/", b"tag", RoomHistory(10), grace=1.5)
        assert m.event(b"H1", json.loads) == []
        assert m.snapshot(1, 0, {}, [], "e1", 0.0, mode="local") == [Resync()]
