"""Room history: seq assignment, the ring buffer, `since` and `complete` (docs/protocol.md `joined`)."""

from actors.core.history import RoomHistory


def fill(h: RoomHistory, n: int) -> None:
    for i in range(n):
        h.append({"type": "message", "text": str(i), "seq": 0})


def test_seq_strictly_increasing_from_one():
    """The first message gets seq 1, then 2, 3, ..."""
    h = RoomHistory(10)
    assert [h.append({"seq": 0}) for _ in range(3)] == [1, 2, 3]


def test_ring_keeps_the_newest():
    """With --history 3, the three newest are kept, oldest first."""
    h = RoomHistory(3)
    fill(h, 5)
    assert [m["seq"] for m in h.recent()] == [3, 4, 5]


def test_since_within_the_ring_is_complete():
    """since 3 of 5 (3 kept) → messages 4, 5 and complete."""
    h = RoomHistory(3)
    fill(h, 5)
    msgs, complete = h.since(3)
    assert [m["seq"] for m in msgs] == [4, 5] and complete
    assert h.since(2) == (h.recent(), True)  # exactly the oldest kept is next


def test_since_before_the_ring_is_incomplete():
    """since 1 when 2 was dropped → what is kept, complete false."""
    h = RoomHistory(3)
    fill(h, 5)
    msgs, complete = h.since(1)
    assert [m["seq"] for m in msgs] == [3, 4, 5] and not complete


def test_since_up_to_date():
    """since the last seq → nothing, complete."""
    h = RoomHistory(3)
    fill(h, 5)
    assert h.since(5) == ([], True)


def test_since_from_the_future_is_incomplete():
    """since a seq this room never had (its history was lost) → complete false."""
    h = RoomHistory(3)
    fill(h, 2)
    assert h.since(9) == ([], False)


def test_history_zero_keeps_nothing_but_counts():
    """--history 0: seq still counts; since anything older than now is incomplete."""
    h = RoomHistory(0)
    fill(h, 3)
    assert h.recent() == [] and h.last_seq == 3
    assert h.since(2) == ([], False) and h.since(3) == ([], True)
