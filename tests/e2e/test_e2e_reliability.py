"""Reliability (issue "nothing lost, nobody stalls the room"): failures, floods, slow consumers, durable history."""

from __future__ import annotations

import re
import socket
import statistics
import time
from typing import Any

import gevent
import pytest

from ..support.e2e import Client, Server, frame, raw_upgrade

pytestmark = pytest.mark.e2e


def metric(server: Server, name: str) -> float:
    text = server.http("/metrics")[2].decode()
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


class TestActorFailure:
    """Actor failure is contained: a user fails alone (1011); a room restarts with members and history."""

    @pytest.fixture
    def server(self):
        srv = Server(script="tests/support/fault_server.py")
        srv.expect_tracebacks = True
        with srv:
            yield srv

    def test_user_failure_closes_only_that_connection(self, server):
        """A UserActor that raises → its socket closes 1011; it leaves rooms, directory, scheduler; others chat on."""
        with Client(server) as a, Client(server) as b:
            a.login("fail-a", "room")
            b.login("fail-b", "room")
            a.expect("presence")
            b.send({"type": "say", "room": "room", "text": "__boom_user__"})
            code, _reason, _frames = b.closed()
            assert code == 1011
            a.expect("presence", event="leave", nick="fail-b")
            assert a.say("room", "still fine")["seq"] == 1
            server.wait_for(
                lambda: [u["nick"] for u in server.users()] == ["fail-a"], what="b gone"
            )
            with Client(server) as c:  # the nick is free again
                c.login("fail-b")
            assert metric(server, 'hubbub_actor_failures_total{kind="FaultyUser"}') == 1
        server.wait_for(
            lambda: server.json("/debug/stats")["pending_timers"] == 0, what="no timers left"
        )

    def test_room_failure_restarts_with_members_and_history(self, server):
        """A RoomActor that raises is restarted: same members, same history, seq continues."""
        with Client(server) as a, Client(server) as b:
            a.login("room-a", "phoenix")
            b.login("room-b", "phoenix")
            a.expect("presence")
            s1 = a.say("phoenix", "one")["seq"]
            a.expect("message")
            b.expect("message")  # noqa: E702
            a.send({"type": "say", "room": "phoenix", "text": "__boom_room__", "id": "x"})
            server.wait_for(
                lambda: metric(server, 'hubbub_actor_failures_total{kind="FaultyRoom"}') == 1,
                what="room failure counted",
            )
            s2 = b.say("phoenix", "two")["seq"]
            assert s2 == s1 + 1
            for c in (a, b):
                assert c.expect("message", text="two")["seq"] == s2
            with Client(server) as late:
                late.login("room-late")
                joined = late.join("phoenix")
                assert [m["text"] for m in joined["history"]] == ["one", "two"]
                assert joined["members"] == ["room-a", "room-b", "room-late"]


class TestFloodControl:
    """--rate/--burst: rate_limited errors, then 4006."""

    def test_flood_gets_rate_limited_then_4006(self):
        """A client far over the rate gets rate_limited, then bye rate_limited and 4006; others unaffected."""
        with (
            Server("--rate", "5", "--burst", "5") as server,
            Client(server) as calm,
            Client(server) as flood,
        ):
            calm.login("calm", "r")
            flood.login("flood", "r")
            calm.expect("presence")
            for _ in range(30):
                flood.send({"type": "say", "room": "r", "text": "spam"})
            code, reason, frames = flood.closed()
            assert (code, reason) == (4006, "rate_limited")
            assert any(f.get("code") == "rate_limited" for f in frames)
            texts = [f for f in calm.pump(0.5) if f["type"] == "message"]
            assert 1 <= len(texts) <= 10  # only what the bucket let through
            assert calm.say("r", "fine")["seq"] == len(texts) + 1


class TestSlowConsumer:
    """A client that stops reading never stalls the room; it is cut at --max-backlog with 4007."""

    def latencies(
        self, server: Server, senders: list[Client], seconds: float, until: Any = None
    ) -> list[float]:
        """Each sender says and waits for its own message back; stops after `seconds` (or at `until()`)."""
        out: list[float] = []

        def run(c: Client) -> None:
            deadline = time.monotonic() + seconds
            i = 0
            while time.monotonic() < deadline and not (until and until()):
                i += 1
                t0 = time.monotonic()
                c.send({"type": "say", "room": "busy", "text": f"{c.session}:{i}:" + "x" * 2000})
                while True:  # until our own message comes back: delivery latency
                    f = c.recv(timeout=5)
                    if f["type"] == "message" and f["text"].startswith(f"{c.session}:{i}:"):
                        out.append(time.monotonic() - t0)
                        break

        gevent.joinall([gevent.spawn(run, c) for c in senders], raise_error=True)
        return out

    def test_stalled_member_is_cut_and_others_keep_their_latency(self):
        """20 chat while 1 stops reading: their median latency stays within 2x; the stalled one gets 4007."""
        with Server("--max-backlog", "65536", "--rate", "100000", "--burst", "100000") as server:
            senders = [Client(server).login(f"s{i}", "busy") for i in range(20)]
            base = statistics.median(self.latencies(server, senders, 1.5))
            sock, response = raw_upgrade(server)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(
                frame(1, b'{"type":"hello"}') + frame(1, b'{"type":"profile","nick":"stalled"}')
            )
            server.wait_for(
                lambda: "stalled" in [u["nick"] for u in server.users()], what="stalled in chat"
            )
            sock.sendall(frame(1, b'{"type":"join","room":"busy"}'))
            server.wait_for(
                lambda: any(u["nick"] == "stalled" and u["rooms"] for u in server.users()),
                what="stalled in the room",
            )  # and from now on it never reads
            cut = False

            def was_cut() -> bool:
                nonlocal cut
                cut = cut or metric(server, 'hubbub_disconnects_total{reason="slow_consumer"}') == 1
                return cut

            watcher = gevent.spawn(lambda: [gevent.sleep(0.1) for _ in range(150) if not was_cut()])
            # Chat until the stalled member is cut (bounded: 15 s), measuring all along.
            stalled = statistics.median(self.latencies(server, senders, 15, until=lambda: cut))
            watcher.join()
            assert cut, "the stalled member was never disconnected"
            assert "stalled" not in [u["nick"] for u in server.users()]
            assert stalled <= 2 * base + 0.002, (base, stalled)
            sock.close()
            for c in senders:
                c.close()


class TestDurableHistory:
    """--store: seq and since survive a restart."""

    def test_restart_keeps_seq_and_history(self, tmp_path):
        """After SIGTERM and a new process on the same file: history is there, seq continues, since works."""
        db = str(tmp_path / "hubbub.sqlite")
        with Server("--store", db, "--history", "3") as server, Client(server) as a:
            a.login("durable", "keep")
            seqs = []
            for i in range(5):
                seqs.append(a.say("keep", f"m{i}", str(i))["seq"])
                a.expect("message", seq=seqs[-1])
        with Server("--store", db, "--history", "3") as server, Client(server) as b:
            b.login("reader")
            joined = b.join("keep", since=seqs[2])
            assert [m["text"] for m in joined["history"]] == ["m3", "m4"] and joined["complete"]
            b.send({"type": "leave", "room": "keep"})
            b.expect("left")  # noqa: E702
            old = b.join("keep", since=0)
            assert [m["text"] for m in old["history"]] == ["m2", "m3", "m4"] and not old["complete"]
            assert b.say("keep", "after restart")["seq"] == seqs[-1] + 1

    def test_batched_writes_do_not_bound_the_rate(self, tmp_path):
        """500 says through --store are all acked and all recovered after a restart."""
        db = str(tmp_path / "h.sqlite")
        with (
            Server(
                "--store", db, "--history", "1000", "--rate", "10000", "--burst", "10000"
            ) as server,
            Client(server) as a,
        ):
            a.login("fast", "bulk")
            for i in range(500):
                a.send({"type": "say", "room": "bulk", "text": str(i)})
            acks = [f for f in a.pump(3) if f["type"] == "ack"]
            assert len(acks) == 500
        with Server("--store", db, "--history", "1000") as server, Client(server) as b:
            b.login("check")
            assert [m["text"] for m in b.join("bulk")["history"]] == [str(i) for i in range(500)]
