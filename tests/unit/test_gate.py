"""hubbub.gate: the accept gate's shell, in-process on a fake clock.

A ``GatedServer`` on a free port with the node's handler and a trivial app; the gate's
clock is a FakeClock and ``expire(now)`` is called by the test (the ticker greenlet,
on a real sleep, sees the fake clock too, so nothing fires until the test jumps it).
Real sockets, no mocks: what the test sees is what a client sees.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import gevent
import pytest

from hubbub.admission import AcceptGate, handler_for
from hubbub.config import Config
from hubbub.gate import GatedServer

from ..support.fakes import FakeClock

pytestmark = pytest.mark.timeout(10)

TIMEOUTS = {"handshake": 5.0, "headers": 10.0, "body": 20.0, "idle": 30.0}


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


@pytest.fixture
def server() -> Iterator[GatedServer]:
    gate = AcceptGate(max_sockets=3, timeouts=TIMEOUTS)
    srv = GatedServer(
        ("127.0.0.1", 0),
        app,
        handler_class=handler_for(Config()),
        log=None,
        error_log=None,
        gate=gate,
    )
    srv.clock = FakeClock()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop(timeout=1)


def dial(server: GatedServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.server_port), timeout=2)
    wait_for(lambda: server.gate.open >= 1)
    return sock


def wait_for(predicate, seconds: float = 2.0) -> None:
    with gevent.Timeout(seconds, AssertionError("condition not met")):
        while not predicate():
            gevent.sleep(0.005)


def closed(sock: socket.socket) -> bool:
    sock.settimeout(2)
    try:
        while sock.recv(4096):
            pass
    except (ConnectionResetError, TimeoutError):
        return False
    return True


def response(sock: socket.socket) -> bytes:
    sock.settimeout(2)
    data = b""
    while not data.endswith(b"ok"):
        data += sock.recv(4096)
    return data


class TestDeadlines:
    """The shell closes what the gate says is due, and nothing else."""

    def test_silent_socket_closed_at_the_header_deadline(self, server):
        """No bytes: open before the deadline, EOF right after the clock passes it."""
        sock = dial(server)
        server.clock.jump(9.9)
        server.expire(server.clock.monotonic())
        gevent.sleep(0.05)
        assert server.gate.open == 1
        server.clock.jump(0.1)
        server.expire(server.clock.monotonic())
        assert closed(sock)
        wait_for(lambda: server.gate.open == 0)
        sock.close()

    def test_idle_keep_alive_with_the_next_request_waiting_gets_the_header_deadline(self, server):
        """At the keep-alive deadline, bytes already waiting mean a request has begun: it is not cut."""
        sock = dial(server)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert response(sock).startswith(b"HTTP/1.1 200")
        ticket = next(iter(server.gate._waiting))
        wait_for(lambda: ticket.phase == "idle")
        # The next request's first bytes arrive just as the deadline passes, before the
        # handler has read them: the test does not yield to the hub between the two.
        sock.sendall(b"GET / HT")
        server.clock.jump(30)
        server.expire(server.clock.monotonic())
        assert ticket.phase == "headers" and not ticket.expired
        sock.sendall(b"TP/1.1\r\nHost: x\r\n\r\n")
        assert response(sock).startswith(b"HTTP/1.1 200")
        sock.close()

    def test_idle_keep_alive_with_nothing_waiting_is_closed(self, server):
        """At the keep-alive deadline with no bytes waiting: closed."""
        sock = dial(server)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert response(sock).startswith(b"HTTP/1.1 200")
        server.clock.jump(30)
        server.expire(server.clock.monotonic())
        assert closed(sock)
        sock.close()


class TestCaps:
    """Over max_sockets the oldest pre-chat socket is shut down; its fd is released after."""

    def test_fourth_socket_sheds_the_first(self, server):
        """max_sockets 3: the 4th connection closes the 1st; the gate's count returns to 3."""
        socks = [dial(server) for _ in range(3)]
        wait_for(lambda: server.gate.open == 3)
        fourth = socket.create_connection(("127.0.0.1", server.server_port), timeout=2)
        assert closed(socks[0])
        wait_for(lambda: server.gate.open == 3 and server.gate.shedding == 0)
        assert server.gate.counts["shed"] == 1
        fourth.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert response(fourth).startswith(b"HTTP/1.1 200")
        for s in (*socks, fourth):
            s.close()
