"""Room history: seq assignment, the ring buffer, `since` and `complete` (docs/protocol.md `joined`)."""

import json

from actors.core.history import ENTRY_OVERHEAD, HistoryPool, RoomHistory


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


def msg(text: str) -> dict:
    return {"type": "message", "room": "r", "from": "a", "text": text, "seq": 0, "ts": 1.0}


class TestBytes:
    """History is kept as the encoded `message` frames, counted in bytes (issue 15)."""

    def test_kept_as_the_sent_bytes(self):
        """add() returns the frame's bytes with its seq, and page() gives back the same bytes."""
        h = RoomHistory(10)
        seq, payload = h.add(msg("h\u00e9 \U0001f600"))
        assert seq == 1 and json.loads(payload)["seq"] == 1
        assert h.page() == ([payload], False, True)
        assert h.bytes == len(payload) + ENTRY_OVERHEAD, (
            "an emoji costs its 4 UTF-8 bytes, not 4 per character"
        )

    def test_per_room_byte_budget_drops_the_oldest(self):
        h = RoomHistory(100, max_bytes=1000)
        for _ in range(20):
            h.add(msg("x" * 100))
        each = len(h.page()[0][0]) + ENTRY_OVERHEAD
        assert h.bytes <= 1000 and len(h) == 1000 // each == h.bytes // each
        msgs, complete = h.since(0)
        assert not complete and msgs[-1]["seq"] == 20

    def test_a_message_over_the_room_budget_is_not_kept(self):
        """seq still advances; since before it answers complete false."""
        h = RoomHistory(100, max_bytes=100)
        h.add(msg("x" * 200))
        assert len(h) == 0 and h.last_seq == 1 and h.since(0) == ([], False)


class TestPool:
    """The node-wide total: an LRU over rooms, emptied (dormant) rooms evicted first."""

    def test_dormant_rooms_go_first_oldest_used_first(self):
        pool = HistoryPool(max_bytes=3600)
        a, b, c = (RoomHistory(100, pool=pool) for _ in range(3))
        for h in (a, b, c):
            h.add(msg("x" * 400))
            h.add(msg("x" * 400))  # 2 x ~600 bytes each
        a.set_dormant(True)
        b.set_dormant(True)
        assert pool.bytes <= 3600
        c.add(msg("x" * 400))
        c.add(msg("x" * 400))
        assert len(a) == 0 and a.last_seq == 2, "the oldest dormant room went first; its seq stays"
        assert len(b) == 2 and len(c) == 4
        assert pool.bytes == a.bytes + b.bytes + c.bytes <= 3600
        assert a.since(0) == ([], False)

    def test_then_the_least_recently_used_active_room(self):
        """With no dormant room left, the least recently used room with members loses its oldest."""
        pool = HistoryPool(max_bytes=2400)
        a, b = RoomHistory(100, pool=pool), RoomHistory(100, pool=pool)
        for _ in range(2):
            a.add(msg("x" * 400))
        for _ in range(3):
            b.add(msg("x" * 400))
        assert pool.bytes <= 2400 and len(b) == 3 and len(a) == 1
        assert pool.evicted == 1

    def test_reading_counts_as_use(self):
        """A join (page) makes a room recently used."""
        pool = HistoryPool(max_bytes=2400)
        a, b = RoomHistory(100, pool=pool), RoomHistory(100, pool=pool)
        a.add(msg("x" * 400))
        b.add(msg("x" * 400))
        a.page()
        c = RoomHistory(100, pool=pool)
        for _ in range(3):
            c.add(msg("z" * 400))
        assert len(b) == 0 and len(a) == 1, "b was used least recently"

    def test_release_gives_the_bytes_back(self):
        pool = HistoryPool(max_bytes=10_000)
        h = RoomHistory(10, pool=pool)
        h.add(msg("x"))
        h.release()
        assert pool.bytes == 0 and len(pool) == 0


class TestPages:
    """`joined` and `history` pages: the newest messages that fit, `more` when older ones exist."""

    def fill(self, n: int = 10) -> RoomHistory:
        h = RoomHistory(100)
        for i in range(n):
            h.add(msg(f"{i:03}" + "x" * 97))
        return h

    def seqs(self, page):
        return [json.loads(p)["seq"] for p in page]

    def test_byte_budget_gives_the_newest_that_fit(self):
        h = self.fill()
        size = len(h.page()[0][0])
        page, more, complete = h.page(max_bytes=3 * size + 10)
        assert self.seqs(page) == [8, 9, 10] and more and complete, "no since: the newest, as asked"

    def test_before_walks_back(self):
        """Asking again with before = the first seq returned gives the page before it."""
        h = self.fill()
        page, more, _ = h.page(before=8, limit=3)
        assert self.seqs(page) == [5, 6, 7] and more
        page, more, complete = h.page(before=3, limit=3)
        assert self.seqs(page) == [1, 2] and not more and complete

    def test_since_and_paging(self):
        """With since, complete means every message after it is in the page."""
        h = self.fill()
        assert h.page(since=7) == (h.page(before=None, since=7)[0], False, True)
        page, more, complete = h.page(since=2, limit=3)
        assert self.seqs(page) == [8, 9, 10] and more and not complete
        page, more, complete = h.page(since=2, before=8, limit=10)
        assert self.seqs(page) == [3, 4, 5, 6, 7] and not more and complete

    def test_since_ahead_of_the_room(self):
        assert self.fill(3).page(since=9) == ([], False, False)
