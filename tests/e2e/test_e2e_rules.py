"""The five maintenance rules on the real server, with short configured durations.

The exact deadlines are unit-tested on a fake clock (test_session.py); here each
rule is shown once end to end: the right `bye`, the right close code, and the
user gone from /debug/actors afterwards.
"""

from __future__ import annotations

import time

import pytest

from ..support.e2e import Client, Server

pytestmark = pytest.mark.e2e


def assert_disconnected(server: Server, client: Client, code: int, reason: str) -> None:
    got_code, got_reason, frames = client.closed(timeout=5)
    assert (got_code, got_reason) == (code, reason)
    assert {"type": "bye", "reason": reason} in [
        {k: f[k] for k in ("type", "reason") if k in f} for f in frames
    ]
    server.wait_for(lambda: not server.users(), what="user removed from the tree")


def test_hello_timeout_4001():
    """No hello within --hello-timeout → bye hello_timeout, close 4001."""
    with Server("--hello-timeout", "0.3") as server, Client(server) as c:
        start = time.monotonic()
        assert_disconnected(server, c, 4001, "hello_timeout")
        assert 0.25 < time.monotonic() - start < 3


def test_pong_timeout_4002():
    """A client that never answers pings → bye pong_timeout, close 4002; pings were sent."""
    with Server("--ping-interval", "0.2", "--pong-timeout", "0.7") as server:
        with Client(server, answer_pings=False) as c:
            c.hello()
            code, reason, frames = c.closed()
            assert (code, reason) == (4002, "pong_timeout")
            assert sum(f["type"] == "ping" for f in frames) >= 2
        with Client(server) as ok:  # the same server keeps a ponging client
            ok.hello()
            ok.pump(1.2)
            ok.send({"type": "ping"})
            ok.expect("pong")


def test_pong_control_frames_count():
    """WebSocket pong frames alone keep a client alive past --pong-timeout."""
    with (
        Server("--ping-interval", "5", "--pong-timeout", "0.6") as server,
        Client(server, answer_pings=False) as c,
    ):
        c.hello()
        for _ in range(6):
            time.sleep(0.2)
            c.ws.pong(b"keepalive")
        c.send({"type": "ping"})
        c.expect("pong")


def test_profile_timeout_4004():
    """hello but no profile within --profile-timeout → bye profile_timeout, close 4004."""
    with Server("--profile-timeout", "0.5") as server, Client(server) as c:
        c.hello()
        assert_disconnected(server, c, 4004, "profile_timeout")


def test_session_expired_4003():
    """A connection older than --max-session → bye session_expired, close 4003, even in chat."""
    with Server("--max-session", "0.6") as server, Client(server) as c:
        c.login("old", "lobby")
        assert_disconnected(server, c, 4003, "session_expired")


def test_kick_4005():
    """POST /admin/kick → bye kicked with the reason, close 4005; others in the room see leave."""
    with Server() as server, Client(server) as victim, Client(server) as other:
        victim.login("victim", "lobby")
        other.login("other", "lobby")
        status, _h, body = server.http("/admin/kick", "POST", {"nick": "victim", "reason": "spam"})
        assert status == 200 and body == b'{"kicked": true}'
        code, reason, frames = victim.closed()
        assert (code, reason) == (4005, "kicked")
        assert frames[-1] == {"type": "bye", "reason": "kicked", "message": "spam"}
        other.expect("presence", event="leave", nick="victim")
        assert server.http("/admin/kick", "POST", {"nick": "victim"})[0] == 404


def test_timers_leave_with_the_user():
    """After users come and go, the scheduler holds no timers for them."""
    with Server() as server:
        for i in range(5):
            with Client(server) as c:
                c.login(f"t{i}", "lobby")
        server.wait_for(lambda: not server.users(), what="users gone")
        sched = [n for n in _walk(server.actors()) if n["kind"] == "SchedulerActor"][0]
        server.wait_for(lambda: _pending(server) == 0, what=f"pending 0, was {sched['pending']}")


def _walk(node):
    yield node
    for child in node["children"]:
        yield from _walk(child)


def _pending(server: Server) -> int:
    return [n for n in _walk(server.actors()) if n["kind"] == "SchedulerActor"][0]["pending"]
