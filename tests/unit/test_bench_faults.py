"""bench/faults.py's checker: it finds each kind of anomaly the fault test looks for."""

from __future__ import annotations

import threading

from bench.faults import Chatter, check


def chatter(nick: str, *events: tuple) -> Chatter:
    c = Chatter(nick, "r", lambda: [], threading.Event())
    c.events = [("conn", 1), ("join", 1, None, None), *events]
    return c


def joined(epoch: str = "e", history: tuple = (), complete: bool = True) -> tuple:
    return (
        "frame",
        1,
        {
            "type": "joined",
            "room": "r",
            "members": [],
            "complete": complete,
            "epoch": epoch,
            "history": [msg(s, t) for s, t in history],
        },
    )


def msg(seq: int, text: str) -> dict:
    return {"type": "message", "room": "r", "from": "x", "text": text, "seq": seq, "ts": 0}


def m(seq: int, text: str) -> tuple:
    return ("frame", 1, msg(seq, text))


def ack(seq: int, text: str) -> tuple:
    return ("frame", 1, {"type": "ack", "id": text, "seq": seq})


class TestChecker:
    def test_a_clean_history_has_no_anomaly(self):
        a = chatter(
            "a", joined(), ("sent", 1, "a-1"), ack(1, "a-1"), m(1, "a-1"), m(2, "b-1"), ("end", 1)
        )
        b = chatter(
            "b", joined(), ("sent", 1, "b-1"), m(1, "a-1"), ack(2, "b-1"), m(2, "b-1"), ("end", 1)
        )
        report = check([a, b])
        assert report.anomalies == [] and report.acked == 2 and report.messages_checked == 4

    def test_one_seq_for_two_messages(self):
        a = chatter("a", joined(), m(1, "x"), ("end", 1))
        b = chatter("b", joined(), m(1, "y"), ("end", 1))
        assert any("is both" in x for x in check([a, b]).anomalies)

    def test_a_message_twice(self):
        a = chatter("a", joined(), m(1, "x"), m(2, "x"), ("end", 1))
        assert any("twice" in x or "under seq" in x for x in check([a]).anomalies)

    def test_a_gap_while_connected(self):
        a = chatter("a", joined(history=((1, "x"),)), m(3, "z"), ("end", 1))
        assert any("a gap" in x for x in check([a]).anomalies)

    def test_a_complete_joined_that_misses_something(self):
        a = chatter("a")
        a.events = [("conn", 1), ("join", 1, 2, "e"), joined(history=((5, "q"),)), ("end", 1)]
        assert any("complete true" in x for x in check([a]).anomalies)

    def test_a_say_never_answered(self):
        a = chatter("a", joined(), ("sent", 1, "a-1"), ("end", 1))
        assert any("never answered" in x for x in check([a]).anomalies)

    def test_a_closed_connection_answers_its_says(self):
        a = chatter("a", joined(), ("sent", 1, "a-1"), ("closed", 1, 1006))
        assert check([a]).anomalies == []

    def test_an_acked_message_never_delivered(self):
        a = chatter("a", joined(), ("sent", 1, "a-1"), ack(1, "a-1"), m(2, "b-1"), ("end", 1))
        assert any("never delivered" in x for x in check([a]).anomalies)
