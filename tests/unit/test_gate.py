"""hubbub.gate: the accept gate's shell, in-process on a fake clock.

A ``GatedServer`` on a free port with the node's handler and a trivial app; the gate's
clock is a FakeClock and ``expire(now)`` is called by the test (the ticker greenlet,
on a real sleep, sees the fake clock too, so nothing fires until the test jumps it).
Real sockets, no mocks: what the test sees is what a client sees.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import socket
from collections.abc import Iterator

import gevent
import pytest

from hubbub.admission import SHED_SLACK, AcceptGate, handler_for
from hubbub.config import Config
from hubbub.gate import GatedServer, auto_max_sockets, open_fds

from ..support.fakes import FakeClock

pytestmark = pytest.mark.timeout(10)

TIMEOUTS = {"handshake": 5.0, "headers": 10.0, "body": 20.0, "idle": 30.0}


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def gated(gate: AcceptGate, application=app, **kw) -> GatedServer:
    srv = GatedServer(
        ("127.0.0.1", 0),
        application,
        handler_class=handler_for(Config()),
        log=None,
        error_log=None,
        gate=gate,
        **kw,
    )
    srv.clock = FakeClock()
    return srv


@pytest.fixture
def server() -> Iterator[GatedServer]:
    srv = gated(AcceptGate(max_sockets=3, timeouts=TIMEOUTS))
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


def fill(gate: AcceptGate, phase: str, n: int) -> list:
    """``n`` sockets the gate counts, held by the test: one end of a socket pair each
    (what the shell shuts down when it sheds one), in ``phase``."""
    tickets = []
    for _ in range(n):
        mine, theirs = socket.socketpair()
        ticket, _shed = gate.admit("198.51.100.7", 0.0, theirs)
        assert ticket is not None
        gate.enter(ticket, phase, 0.0)
        tickets.append((ticket, mine, theirs))
    return tickets


def still_waiting(sock: socket.socket) -> bool:
    """Connected, nothing received and not closed: the server has not answered."""
    sock.settimeout(0.2)
    try:
        return sock.recv(64, socket.MSG_PEEK) == b"unreachable"
    except TimeoutError:
        return True


class TestAcceptLoop:
    """The gate decides in gevent's accept loop, before a greenlet exists (gate.py's docstring)."""

    def test_a_refused_socket_gets_503_and_is_closed(self, server):
        """Every socket in chat: a newcomer gets the 503 and EOF, and nothing stays counted."""
        held = fill(server.gate, "chat", 3)
        sock = socket.create_connection(("127.0.0.1", server.server_port), timeout=2)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        assert data.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in data
        assert server.gate.open == 3 and server.gate.counts["refused"] == 1
        sock.close()
        for _t, mine, theirs in held:
            mine.close()
            theirs.close()

    def test_at_the_shed_bound_a_newcomer_waits_instead_of_503(self, server):
        """Full, and SHED_SLACK shed sockets not closed yet: the newcomer is held back, not
        refused; once one shed socket is closed it gets in and is served."""
        waiting = fill(server.gate, "headers", 3)
        shed_ones = []
        for _ in range(SHED_SLACK):
            shed_ones += fill(server.gate, "headers", 1)
        assert server.gate.shedding == SHED_SLACK and server.gate.must_wait()
        sock = socket.create_connection(("127.0.0.1", server.server_port), timeout=2)
        assert still_waiting(sock) and server.gate.counts["refused"] == 0
        ticket, mine, theirs = next((t, m, o) for t, m, o in waiting if t.phase == "shed")
        theirs.close()
        server.gate.release(ticket)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert response(sock).startswith(b"HTTP/1.1 200")
        assert server.gate.counts["refused"] == 0
        sock.close()
        for _t, mine, theirs in waiting + shed_ones:
            mine.close()
            theirs.close()

    def test_a_newcomer_held_back_too_long_is_refused(self, server):
        """If no shed socket closes within park_limit, the held-back socket gets the 503
        after all (a shed socket's app may still be answering) and accepting resumes."""
        held = fill(server.gate, "headers", 3 + SHED_SLACK)
        sock = socket.create_connection(("127.0.0.1", server.server_port), timeout=2)
        assert still_waiting(sock)
        server.clock.jump(server.park_limit)
        sock.settimeout(2)
        assert sock.recv(4096).startswith(b"HTTP/1.1 503 ")
        assert server.gate.counts["refused"] == 1 and server._parked is None
        sock.close()
        for _t, mine, theirs in held:
            mine.close()
            theirs.close()


def ws_app(environ, start_response):
    """Plain requests get ``ok``; an upgraded connection echoes text."""
    conn = environ.get("hubbub.connection")
    if conn is None:
        return app(environ, start_response)
    conn.on_message = lambda text: conn.send_text(text.encode())
    return []


def ws_request(**headers: str) -> bytes:
    fields = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        **headers,
    }
    lines = ["GET /ws HTTP/1.1", *(f"{k}: {v}" for k, v in fields.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class TestUpgradeAtOnce:
    """An upgrade whose request is already in the socket is done in the accept loop
    (Handler.upgrade_at_once); anything else takes the handler greenlet, unchanged."""

    @pytest.fixture
    def ws_server(self, monkeypatch) -> Iterator[tuple[GatedServer, list[str]]]:
        srv = gated(AcceptGate(max_sockets=8, timeouts=TIMEOUTS), ws_app)
        served: list[str] = []  # the handler greenlet's path, as it is taken
        slow = srv.handler_class.handle

        def handle(handler):
            served.append("greenlet")
            return slow(handler)

        monkeypatch.setattr(srv.handler_class, "handle", handle)
        srv.start()
        try:
            yield srv, served
        finally:
            srv.stop(timeout=1)

    @staticmethod
    def connect_and_send(srv: GatedServer, *parts: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", srv.server_port), timeout=2)
        for i, part in enumerate(parts):
            if i:
                gevent.sleep(0.05)  # the accept loop runs in between
            sock.sendall(part)
        return sock

    def test_a_whole_request_is_upgraded_without_a_greenlet(self, ws_server):
        """Sent before the accept loop runs: 101, no handler greenlet, the chat works,
        and the slot and the socket's place are given back when it ends."""
        srv, served = ws_server
        limits = srv.handler_class.limits
        sock = self.connect_and_send(srv, ws_request())
        assert sock.recv(4096).startswith(b"HTTP/1.1 101 ")
        assert served == [] and srv.gate.open == 1 and limits.connections == {"127.0.0.1": 1}
        sock.sendall(
            bytes([0x81, 0x82, 1, 2, 3, 4])
            + bytes(a ^ b for a, b in zip(b"hi", b"\x01\x02", strict=True))
        )
        assert sock.recv(4096) == b"\x81\x02hi"
        sock.close()
        wait_for(lambda: srv.gate.open == 0 and limits.connections == {})

    def test_a_request_in_pieces_takes_the_greenlet(self, ws_server):
        """Only the start of the head is there when the socket is accepted: the handler
        greenlet reads the rest and upgrades as before."""
        srv, served = ws_server
        request = ws_request()
        sock = self.connect_and_send(srv, request[:10], request[10:])
        assert sock.recv(4096).startswith(b"HTTP/1.1 101 ")
        assert served == ["greenlet"]
        sock.close()
        wait_for(lambda: srv.gate.open == 0)

    def test_a_refused_upgrade_gets_its_answer_from_the_greenlet(self, ws_server):
        """A cross-site Origin: nothing is taken at once; the greenlet answers 403 and
        no slot stays reserved."""
        srv, served = ws_server
        sock = self.connect_and_send(srv, ws_request(Origin="https://evil.example"))
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        assert data.startswith(b"HTTP/1.1 403 ") and served == ["greenlet"]
        assert srv.handler_class.limits.connections == {}
        sock.close()
        wait_for(lambda: srv.gate.open == 0)


class TestAutomaticCap:
    """--max-sockets 0: sized from the files open when the node listens, lowered on EMFILE."""

    @pytest.mark.skipif(open_fds() is None, reason="needs /proc/self/fd")
    def test_listening_sizes_the_cap_from_the_files_open(self):
        """fd_limit 20,000: max_sockets = auto_max_sockets(20,000, files open at start, reserve)."""
        srv = gated(AcceptGate(max_sockets=1, admin_reserve=32, timeouts=TIMEOUTS), fd_limit=20_000)
        srv.start()
        try:
            assert srv.fds_at_start == open_fds()
            assert srv.gate.max_sockets == auto_max_sockets(20_000, srv.fds_at_start, 32)
        finally:
            srv.stop(timeout=1)

    @pytest.mark.skipif(open_fds() is None, reason="needs /proc/self/fd")
    def test_running_out_of_files_lowers_the_cap_and_says_so_once(self, tmp_path, caplog):
        """Files opened after start beyond LATER_FDS: accept fails with EMFILE, the cap is
        lowered to what the process can still hold, one warning, and service resumes."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        limit = open_fds() + 64
        srv = gated(AcceptGate(max_sockets=1, timeouts=TIMEOUTS), fd_limit=limit)
        files: list[int] = []
        sock = socket.socket()  # made before the files run out: only accept fails
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        try:
            srv.start()
            first_cap = srv.gate.max_sockets
            try:
                while True:
                    files.append(os.open(tmp_path / f"f{len(files)}", os.O_RDWR | os.O_CREAT))
            except OSError as exc:
                assert exc.errno == errno.EMFILE
            with caplog.at_level(logging.WARNING, logger="hubbub.gate"):
                sock.connect(("127.0.0.1", srv.server_port))
                wait_for(lambda: srv.gate.max_sockets < first_cap)
                gevent.sleep(0.1)  # accept is retried (and fails) every 10 ms meanwhile
                while files:
                    os.close(files.pop())
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert response(sock).startswith(b"HTTP/1.1 200")
            # Every file was taken by something other than a client socket: just one left.
            assert srv.gate.max_sockets == auto_max_sockets(limit, limit, 0) == 1
            warnings = [r for r in caplog.records if "out of file descriptors" in r.message]
            assert len(warnings) == 1 and "automatic --max-sockets is now 1" in warnings[0].message
        finally:
            while files:
                os.close(files.pop())
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            sock.close()
            srv.stop(timeout=1)
