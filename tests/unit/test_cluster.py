"""actors/cluster.py: the pure parts (the URL setting, the history mirror, room classes).

The behaviour against a real Redis is in test_e2e_cluster.py.
"""

from __future__ import annotations

import pytest

from actors.cluster import (
    DEFAULT_NODE_TTL,
    ClusterHistory,
    ClusterRoom,
    ClusterRoomActor,
    parse_url,
    room_class_for,
)
from actors.core.history import RoomHistory
from actors.room import RoomActor


def frame(seq: int, text: str = "") -> dict:
    return {"type": "message", "room": "r", "from": "n", "text": text or f"m{seq}", "seq": seq, "ts": 0.0}


class TestNodeTtlInTheUrl:
    """docs/cluster.md: the node TTL is a query parameter of the Redis URL, 30 s by default."""

    def test_default_and_the_url_redis_py_sees(self):
        assert parse_url("redis://h:6379/0") == ("redis://h:6379/0", DEFAULT_NODE_TTL)
        assert DEFAULT_NODE_TTL == 30.0

    def test_node_ttl_is_taken_out_and_other_parameters_stay(self):
        url, ttl = parse_url("redis://:pw@h:6379/2?node_ttl=2.5&socket_keepalive=true")
        assert ttl == 2.5
        assert url == "redis://:pw@h:6379/2?socket_keepalive=true"

    def test_a_unix_socket_url_keeps_its_three_slashes(self):
        assert parse_url("unix:///run/redis.sock?db=2&node_ttl=9") == ("unix:///run/redis.sock?db=2", 9.0)

    @pytest.mark.parametrize("bad", ["0", "-1", "soon", "inf", "nan", ""])
    def test_a_bad_ttl_is_refused(self, bad):
        with pytest.raises(ValueError, match="node_ttl"):
            parse_url(f"redis://h/0?node_ttl={bad}")


class TestClusterHistory:
    """A room's local mirror: messages numbered by Redis, merged with Redis's copy on resync."""

    def test_record_keeps_the_given_seq_within_the_limit(self):
        h = ClusterHistory(3)
        for seq in (4, 5, 6, 7):
            h.record(frame(seq))
        assert h.last_seq == 7 and [m["seq"] for m in h.recent()] == [5, 6, 7]
        assert h.since(5) == ([frame(6), frame(7)], True)
        assert h.since(3)[1] is False, "4 is no longer kept"

    def test_adopt_keeps_a_single_node_history(self):
        plain = RoomHistory(5)
        plain.append(frame(0))
        h = ClusterHistory.adopt(plain)
        assert isinstance(h, ClusterHistory) and h.last_seq == 1 and len(h) == 1
        assert ClusterHistory.adopt(h) is h

    def test_merge_lays_redis_over_the_mirror_and_never_goes_back(self):
        h = ClusterHistory(10)
        for seq in (1, 2, 3):
            h.record(frame(seq, "local"))
        merged = h.merged(5, [frame(3, "redis"), frame(4), frame(5)])
        assert [(m["seq"], m["text"]) for m in merged.recent()] == [
            (1, "local"), (2, "local"), (3, "redis"), (4, "m4"), (5, "m5")]
        assert merged.last_seq == 5
        # Redis restarted (empty) while this node had said up to 3: seq stays at 3.
        assert h.merged(0, []).last_seq == 3 and len(h.merged(0, [])) == 3


class TestRoomClasses:
    def test_the_cluster_version_of_a_room_class(self):
        assert room_class_for(RoomActor) is ClusterRoomActor
        assert room_class_for(ClusterRoomActor) is ClusterRoomActor

        class Custom(RoomActor):
            pass

        made = room_class_for(Custom)
        assert issubclass(made, ClusterRoom) and issubclass(made, Custom)
        assert made.__mro__.index(ClusterRoom) < made.__mro__.index(Custom), "cluster first"
