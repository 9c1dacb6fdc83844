"""docs/protocol.md "The chat protocol", row by row, against the real server process."""

from __future__ import annotations

import itertools
import json

import pytest

from ..support.e2e import Client, Server

pytestmark = pytest.mark.e2e
_n = itertools.count()


def nick(prefix: str = "u") -> str:
    return f"{prefix}{next(_n)}"


@pytest.fixture(scope="module")
def server():
    with Server("--history", "5") as srv:
        yield srv


class TestClientToServer:
    """docs/protocol.md "Client → server"."""

    def test_hello_welcome(self, server):
        """hello → welcome with protocol 1, a session id and the five timeouts."""
        with Client(server) as c:
            w = c.hello()
            assert w["protocol"] == 1 and isinstance(w["session"], str) and w["session"]
            assert w["timeouts"] == {
                "hello": 5,
                "ping": 30,
                "pong": 120,
                "profile": 300,
                "session": 43200,
            }

    def test_profile_ok_taken_and_bad(self, server):
        """profile → profile_ok; a nick held by another → nick_taken; an invalid one → bad_nick."""
        n = nick()
        with Client(server) as a, Client(server) as b:
            a.login(n)
            b.hello()
            b.send({"type": "profile", "nick": n})
            b.expect_error("nick_taken")
            b.send({"type": "profile", "nick": "no spaces"})
            b.expect_error("bad_nick")
            b.send({"type": "profile", "nick": n + "x", "info": {"color": "red"}})
            b.expect("profile_ok", nick=n + "x")

    def test_nick_is_free_again_after_disconnect(self, server):
        """A nick returns to the pool when its holder leaves."""
        n = nick()
        a = Client(server).login(n)
        a.close()
        with Client(server) as b:
            b.hello()
            for _ in range(50):  # the directory frees it as soon as the disconnect is processed
                b.send({"type": "profile", "nick": n})
                if b.recv()["type"] == "profile_ok":
                    break
            else:
                pytest.fail("nick never freed")

    def test_join_presence_and_members(self, server):
        """join → joined with members; the others get presence join; leave → left + presence leave."""
        room, na, nb = nick("r"), nick(), nick()
        with Client(server) as a, Client(server) as b:
            a.login(na, room)
            b.login(nb)
            joined = b.join(room)
            assert (
                joined["members"] == sorted([na, nb])
                and joined["history"] == []
                and joined["complete"] is True
            )
            a.expect("presence", room=room, event="join", nick=nb)
            b.send({"type": "leave", "room": room})
            b.expect("left", room=room)
            a.expect("presence", room=room, event="leave", nick=nb)

    def test_say_acks_sender_and_reaches_every_member(self, server):
        """say → ack (id echoed, seq) to the sender; message to every member, the sender included."""
        room, na = nick("r"), nick()
        with Client(server) as a, Client(server) as b:
            a.login(na, room)
            b.login(nick(), room)
            a.expect("presence")
            ack = a.say(room, "hello room", "id-1")
            for c in (a, b):
                m = c.expect("message", room=room, text="hello room", seq=ack["seq"])
                assert m["from"] == na and isinstance(m["ts"], float)

    def test_seq_strictly_increasing(self, server):
        """Messages of one room carry strictly increasing seq."""
        room = nick("r")
        with Client(server) as a:
            a.login(nick(), room)
            seqs = []
            for i in range(10):
                a.send({"type": "say", "room": room, "text": str(i)})
                a.expect("ack", id=None)
                seqs.append(a.expect("message")["seq"])
            assert seqs == sorted(seqs) and len(set(seqs)) == 10

    def test_history_and_since(self, server):
        """joined.history: the newest kept (--history 5); since → only later ones, complete or not."""
        room = nick("r")
        with Client(server) as a, Client(server) as b:
            a.login(nick(), room)
            for i in range(8):
                a.say(room, f"m{i}", str(i))
                a.expect("message")
            b.login(nick())
            h = b.join(room)["history"]
            assert [m["text"] for m in h] == ["m3", "m4", "m5", "m6", "m7"]
            seqs = [m["seq"] for m in h]
            b.send({"type": "leave", "room": room})
            b.expect("left")  # noqa: E702
            again = b.join(room, since=seqs[2])
            assert [m["seq"] for m in again["history"]] == seqs[3:] and again["complete"] is True
            b.send({"type": "leave", "room": room})
            b.expect("left")  # noqa: E702
            old = b.join(room, since=1)
            assert [m["seq"] for m in old["history"]] == seqs and old["complete"] is False

    def test_history_survives_an_empty_room(self, server):
        """A room that emptied keeps its seq and history for the next joiner."""
        room = nick("r")
        with Client(server) as a:
            a.login(nick(), room)
            seq = a.say(room, "before")["seq"]
        with Client(server) as b:
            b.login(nick())
            joined = b.join(room, since=seq - 1)
            assert [m["text"] for m in joined["history"]] == ["before"] and joined["complete"]
            assert b.say(room, "after")["seq"] == seq + 1

    def test_dm(self, server):
        """dm → ack to the sender, dm (from, text, ts) to the target; unknown nick → no_such_user."""
        na, nb = nick(), nick()
        with Client(server) as a, Client(server) as b:
            a.login(na)
            b.login(nb)
            a.send({"type": "dm", "to": nb, "text": "psst", "id": "d1"})
            a.expect("ack", id="d1")
            d = b.expect("dm", text="psst")
            assert d["from"] == na and isinstance(d["ts"], float)
            a.send({"type": "dm", "to": "nobody-here", "text": "x"})
            a.expect_error("no_such_user")

    def test_ping_pong(self, server):
        """Client ping → pong with ts; client pong → no answer."""
        with Client(server) as c:
            c.hello()
            c.send({"type": "pong"})
            c.send({"type": "ping"})
            assert isinstance(c.expect("pong")["ts"], float)

    def test_bye_closes_1000(self, server):
        """Client bye → the server closes with 1000."""
        with Client(server) as c:
            c.login(nick())
            c.send({"type": "bye"})
            code, _reason, frames = c.closed()
            assert code == 1000 and frames == []

    def test_first_message_not_hello_is_1008(self, server):
        """Anything other than hello while Undefined → bye policy, close 1008."""
        for first in ({"type": "profile", "nick": "x"}, "not json"):
            with Client(server) as c:
                c.send(first)
                code, reason, frames = c.closed()
                assert (
                    code == 1008
                    and reason == "policy"
                    and frames == [{"type": "bye", "reason": "policy"}]
                )

    @pytest.mark.parametrize(
        "frame",
        [
            {"type": "join", "room": "r"},
            {"type": "say", "room": "r", "text": "x"},
            {"type": "leave", "room": "r"},
            {"type": "dm", "to": "a", "text": "b"},
            {"type": "hello"},
        ],
    )
    def test_not_ready(self, server, frame):
        """A message not allowed in the state → error not_ready; the connection stays."""
        with Client(server) as c:
            c.hello()
            c.send(frame)
            c.expect_error("not_ready")
            c.send({"type": "ping"})
            c.expect("pong")


class TestErrors:
    """docs/protocol.md error codes: the request had no effect, the connection stays."""

    @pytest.mark.parametrize(
        "text,code",
        [
            ("{oops", "bad_json"),
            ("[]", "bad_message"),
            ('{"type":"fly"}', "bad_message"),
            ('{"type":"say","room":"r"}', "bad_message"),
            ('{"type":"join","room":"bad room"}', "bad_message"),
            ('{"no":"type"}', "bad_message"),
        ],
    )
    def test_bad_input_gets_an_error_and_nothing_else(self, server, text, code):
        """Bad frames get the contract's code; the session goes on as before."""
        room = nick("r")
        with Client(server) as c:
            c.login(nick(), room)
            c.send(text)
            c.expect_error(code)
            assert c.say(room, "still here")["seq"] == 1

    def test_binary_frame_is_bad_message(self, server):
        """A binary frame → error bad_message."""
        with Client(server) as c:
            c.login(nick())
            c.ws.send(b'{"type":"ping"}')
            c.expect_error("bad_message")

    def test_not_in_room(self, server):
        """say or leave in a room not joined → not_in_room."""
        with Client(server) as c:
            c.login(nick())
            c.send({"type": "say", "room": "elsewhere", "text": "x"})
            c.expect_error("not_in_room")
            c.send({"type": "leave", "room": "elsewhere"})
            c.expect_error("not_in_room")

    def test_error_message_is_human_text(self, server):
        """Every error carries a `message` string."""
        with Client(server) as c:
            c.hello()
            c.send("{")
            assert isinstance(c.expect_error("bad_json")["message"], str)

    def test_rename_updates_presence(self, server):
        """A new profile in chat renames: others see leave(old) + join(new)."""
        room, old, new = nick("r"), nick(), nick()
        with Client(server) as a, Client(server) as b:
            a.login(nick(), room)
            b.login(old, room)
            a.expect("presence", nick=old, event="join")
            b.send({"type": "profile", "nick": new})
            b.expect("profile_ok", nick=new)
            a.expect("presence", nick=old, event="leave")
            a.expect("presence", nick=new, event="join")
            assert json.loads(json.dumps(b.join(room)["members"])) == sorted([new, a_nick(a)])


def a_nick(client: Client) -> str:
    users = {u["id"]: u for u in client.server.users()}
    return users[client.session]["nick"]
