"""Durable history (actors/store.py): the SQLite part alone, then the actor by message."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.core.messages import HistoryLoaded, LoadHistory, Persist
from actors.store import BATCH, HistoryStore, StoreActor
from hubbub.testing import RecordingActor, stop_all, wait_for


def frame(room: str, seq: int, text: str = "x") -> dict:
    return {"type": "message", "room": room, "from": "alice", "text": text, "seq": seq, "ts": 1.0}


class TestHistoryStore:
    """The synchronous part: batches, trimming, loading."""

    def test_an_empty_room_loads_as_nothing(self, tmp_path: Path):
        """No row for the room: last seq 0, no messages."""
        store = HistoryStore(str(tmp_path / "h.db"), keep=5)
        assert store.load("lobby", 5) == (0, [])
        store.close()

    def test_messages_come_back_oldest_first_with_the_last_seq(self, tmp_path: Path):
        """Flushed messages load in seq order; last_seq is the highest written."""
        store = HistoryStore(str(tmp_path / "h.db"), keep=5)
        for seq in (1, 2, 3):
            store.add("lobby", frame("lobby", seq, f"m{seq}"))
        store.flush()
        last, messages = store.load("lobby", 5)
        assert last == 3 and [m["text"] for m in messages] == ["m1", "m2", "m3"]
        store.close()

    def test_only_the_newest_keep_are_kept_but_seq_survives(self, tmp_path: Path):
        """Trimmed to `keep` per room on flush; last_seq is still the newest."""
        store = HistoryStore(str(tmp_path / "h.db"), keep=2)
        for seq in range(1, 6):
            store.add("lobby", frame("lobby", seq))
        store.flush()
        last, messages = store.load("lobby", 10)
        assert last == 5 and [m["seq"] for m in messages] == [4, 5]
        store.close()

    def test_load_counts_what_is_still_buffered(self, tmp_path: Path):
        """An unflushed message counts: seq can never repeat after a reload."""
        store = HistoryStore(str(tmp_path / "h.db"), keep=5)
        store.add("lobby", frame("lobby", 7))
        assert store.load("lobby", 5)[0] == 7
        store.close()

    def test_add_says_when_the_batch_is_full(self, tmp_path: Path):
        """add() returns True at BATCH buffered messages."""
        store = HistoryStore(str(tmp_path / "h.db"), keep=5)
        results = [store.add("r", frame("r", seq)) for seq in range(1, BATCH + 1)]
        assert results[-1] is True and not any(results[:-1])
        store.close()

    def test_it_survives_a_reopen(self, tmp_path: Path):
        """close() flushes; a new store on the same file sees everything."""
        path = str(tmp_path / "h.db")
        store = HistoryStore(path, keep=5)
        store.add("lobby", frame("lobby", 1))
        store.close()
        again = HistoryStore(path, keep=5)
        assert again.load("lobby", 5)[0] == 1
        again.close()


class TestStoreActor:
    """The actor: Persist is batched, LoadHistory is answered by message."""

    @pytest.fixture
    def actors(self, tmp_path: Path):
        store = StoreActor.spawn(str(tmp_path / "h.db"), 5)
        asker = RecordingActor.spawn("directory")
        yield store, asker
        stop_all((store, asker))

    def test_load_history_is_answered_with_what_was_persisted(self, actors):
        """Persist, Persist, LoadHistory: HistoryLoaded with both, in order, to reply_to."""
        store, asker = actors
        store.actor_ref.tell(Persist("lobby", frame("lobby", 1, "a")))
        store.actor_ref.tell(Persist("lobby", frame("lobby", 2, "b")))
        store.actor_ref.tell(LoadHistory("lobby", 5, asker.actor_ref))
        (loaded,) = wait_for(lambda: asker.of(HistoryLoaded))
        assert (loaded.room, loaded.last_seq, [m["text"] for m in loaded.messages]) == (
            "lobby",
            2,
            ["a", "b"],
        )

    def test_a_buffered_batch_is_written_after_a_short_delay(self, actors):
        """One Persist: on disk after FLUSH_AFTER, with no further message."""
        store, _asker = actors
        store.actor_ref.tell(Persist("lobby", frame("lobby", 1)))
        wait_for(lambda: store.history.batches == 1, what="the timed flush")
        assert store.history.pending == []
