"""Issue 15 items 2, 5, 6 and 7: slow and hostile clients before the chat starts, and the
admin routes against a browser on the operator's machine - against the real process.

Every server here runs with pre-chat deadlines of about a second, so each probe takes a
few seconds; every socket a test opens is closed by it, and every server's stderr is
checked for tracebacks when it stops (tests/support/e2e.py ``Server.__exit__``).
"""

from __future__ import annotations

import json
import socket
import ssl
import time

import pytest

from ..support.e2e import Client, Server
from .test_e2e_tls import make_certificate

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

SHORT = (
    "--header-timeout",
    "1",
    "--body-timeout",
    "1",
    "--keepalive-timeout",
    "1",
    "--tls-handshake-timeout",
    "1",
)


def connect(server: Server, source: str = "127.0.0.1") -> socket.socket:
    """A TCP socket to the server, from ``source`` (another loopback address is another IP)."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect((server.host, server.port))
    return sock


def until_closed(sock: socket.socket, limit: float) -> tuple[float, bytes]:
    """Read until the server closes (EOF or reset): (seconds it took, bytes received).
    Raises AssertionError if it is still open after ``limit`` seconds."""
    start, data = time.monotonic(), b""
    sock.settimeout(limit)
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"still open after {limit}s (got {data[:200]!r})") from None
    return time.monotonic() - start, data


def read_response(sock: socket.socket, timeout: float = 3.0) -> bytes:
    """One HTTP response with a Content-Length (headers and body may come in two writes)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(
        next(
            line.split(b":")[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def still_open(sock: socket.socket) -> bool:
    """Whether the server still holds the socket: no EOF, and no refusal (a 503 at accept)."""
    sock.setblocking(False)
    try:
        data = sock.recv(64, socket.MSG_PEEK)
        return data != b"" and not data.startswith(b"HTTP/1.1 503 ")
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def chat_works(server: Server, nick: str) -> None:
    with Client(server) as c:
        c.login(nick, "lobby")
        c.say("lobby", "still here")


@pytest.fixture(scope="module")
def server():
    with Server(*SHORT) as srv:
        yield srv


class TestPreChatDeadlines:
    """Item 2: request line + headers, body, keep-alive idle: each phase has a deadline."""

    def test_a_socket_that_sends_nothing_is_closed(self, server):
        """Nothing sent → closed after --header-timeout (1 s here), not held forever."""
        with connect(server) as sock:
            took, _ = until_closed(sock, 5)
        assert 0.8 <= took < 3

    def test_a_header_line_every_few_tenths_is_still_closed(self, server):
        """Slowloris: a header line every 0.3 s keeps bytes flowing but the deadline is for all headers."""
        with connect(server) as sock:
            start = time.monotonic()
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            try:
                for i in range(20):
                    time.sleep(0.3)
                    sock.sendall(b"X-Slow-%d: 1\r\n" % i)
            except OSError:
                pass  # the server closed it: the point
            took, _ = until_closed(sock, 5)
        assert time.monotonic() - start < 4.5
        chat_works(server, "after-slow-headers")

    def test_a_body_that_stops_short_gets_408(self, server):
        """POST /admin/kick whose body stops short → 408 after --body-timeout, no traceback."""
        with connect(server) as sock:
            sock.sendall(
                b"POST /admin/kick HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b'Content-Type: application/json\r\nContent-Length: 60\r\n\r\n{"nick": "bo'
            )
            took, data = until_closed(sock, 5)
        assert data.startswith(b"HTTP/1.1 408 ") and 0.8 <= took < 3

    def test_a_body_cut_by_the_client_gets_400(self, server):
        """The client half-closes mid-body → 400 (incomplete), no traceback."""
        with connect(server) as sock:
            sock.sendall(
                b"POST /admin/kick HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b'Content-Type: application/json\r\nContent-Length: 60\r\n\r\n{"nick"'
            )
            sock.shutdown(socket.SHUT_WR)
            _took, data = until_closed(sock, 5)
        assert data.startswith(b"HTTP/1.1 400 ")

    def test_idle_keep_alive_is_closed(self, server):
        """After a response, an idle keep-alive connection is closed after --keepalive-timeout."""
        with connect(server) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200 ")
            took, _ = until_closed(sock, 5)
        assert 0.6 <= took < 3

    def test_keep_alive_in_time_is_served(self, server):
        """A second request before the keep-alive deadline is answered on the same socket."""
        with connect(server) as sock:
            for _ in range(3):
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert read_response(sock).startswith(b"HTTP/1.1 200 ")
                time.sleep(0.4)

    def test_chat_has_no_pre_chat_deadline(self, server):
        """An upgraded connection outlives every pre-chat deadline (the chat's own rules apply)."""
        with Client(server) as c:
            c.login("outlives-deadlines")
            c.pump(2.5)
            c.send({"type": "ping"})
            c.expect("pong")


class TestHeaderLimits:
    """Conflicting lengths and oversized heads are refused by the request parser (hubbub/httphead.py)."""

    def test_two_content_lengths_are_refused(self, server):
        """Two different Content-Length headers → 400 and the connection closed (no smuggling)."""
        with connect(server) as sock:
            sock.sendall(
                b"POST /admin/kick HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}GET /healthz HTTP/1.1\r\n\r\n"
            )
            _took, data = until_closed(sock, 5)
        assert data.startswith(b"HTTP/1.1 400 ") and data.count(b"HTTP/1.1 ") == 1

    def test_headers_over_max_header_bytes_are_431(self):
        """Request headers over --max-header-bytes → 431."""
        with Server("--max-header-bytes", "4096") as srv, connect(srv) as sock:
            sock.sendall(
                b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Big: " + b"a" * 8000 + b"\r\n\r\n"
            )
            _took, data = until_closed(sock, 5)
        assert data.startswith(b"HTTP/1.1 431 ")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    cert, key = make_certificate(tmp_path_factory.mktemp("tls"))
    with Server(*SHORT, "--certfile", cert, "--keyfile", key) as srv:
        srv.trust = ssl.create_default_context(cafile=cert)  # type: ignore[attr-defined]
        yield srv


@pytest.fixture(scope="module")
def admin():
    with Server() as srv:
        yield srv


class TestTLSHandshake:
    """Item 2: with --certfile, a TLS handshake that never finishes is cut."""

    def test_silent_socket_is_closed(self, tls_server):
        """A TCP socket that never sends a ClientHello is closed after --tls-handshake-timeout."""
        with connect(tls_server) as sock:
            took, _ = until_closed(sock, 5)
        assert 0.8 <= took < 3

    def test_half_a_client_hello_is_closed(self, tls_server):
        """A ClientHello that stops halfway is closed too."""
        ctx = ssl.create_default_context()
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        hello = outgoing.read()
        with connect(tls_server) as sock:
            sock.sendall(hello[: len(hello) // 2])
            took, _ = until_closed(sock, 5)
        assert 0.8 <= took < 3

    def test_real_clients_still_get_in(self, tls_server):
        """Meanwhile, a verified wss:// client chats."""
        with Client(tls_server, ssl=tls_server.trust, server_hostname="localhost") as c:
            c.login("tls-after-slow")


class TestAcceptCaps:
    """Item 2: caps at accept below the fd limit, with room kept for new logins and loopback admin."""

    def test_more_idle_sockets_than_the_cap(self):
        """300 silent sockets against --max-sockets 100: the oldest are shed, a new login and /healthz still work."""
        with Server("--max-sockets", "100", "--admin-reserve", "10") as srv:
            socks = []
            for n in range(300):
                socks.append(connect(srv, "127.0.0.2"))
                if n % 25 == 24:
                    # A shed socket counts until its handler has closed it (at most
                    # SHED_SLACK at once, then accepting pauses): pace the flood so that
                    # the policy under test, oldest shed first, decides which ones stay.
                    time.sleep(0.05)
            try:
                time.sleep(0.5)
                chat_works(srv, "under-flood")
                assert srv.http("/healthz")[0] == 200
                stats = srv.json("/debug/stats")
                # 100 + 10 sockets (127.0.0.2 is loopback: the reserve is open to it), plus
                # the process's own files; far below the 300 opened.
                assert stats["fds"] < 100 + 10 + 64, stats
                assert stats["gate"]["open"] <= 110 and stats["gate"]["shed"] >= 100, stats
                open_now = sum(still_open(s) for s in socks)
                assert open_now <= 110 and still_open(socks[-1]) and not still_open(socks[0])
            finally:
                for s in socks:
                    s.close()

    def test_one_ip_cannot_push_out_another(self):
        """--max-pending-per-ip 20: a flood from one IP sheds only its own sockets."""
        with Server("--max-pending-per-ip", "20") as srv:
            other = connect(srv, "127.0.0.1")
            flood = [connect(srv, "127.0.0.3") for _ in range(60)]
            try:
                time.sleep(0.5)
                assert still_open(other)
                assert sum(still_open(s) for s in flood) == 20
                assert all(still_open(s) for s in flood[-20:])
                chat_works(srv, "per-ip")
            finally:
                other.close()
                for s in flood:
                    s.close()

    def test_upgraded_connections_are_not_shed(self):
        """Sockets in chat are never shed for newcomers: the cap refuses the newcomer instead (503)."""
        with Server("--max-sockets", "5", "--admin-reserve", "0") as srv:
            clients = [Client(srv) for _ in range(5)]
            try:
                for n, c in enumerate(clients):
                    c.login(f"kept{n}")
                sock = connect(srv)
                _took, data = until_closed(sock, 5)
                sock.close()
                assert data.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in data
                for c in clients:
                    c.send({"type": "ping"})
                    c.expect("pong")
            finally:
                for c in clients:
                    c.close()


class TestAdminFromABrowser:
    """Item 5: a web page open on the operator's machine must not reach /admin or /debug."""

    def test_dns_rebinding_host_is_403(self, admin):
        """Host: evil.example (its DNS now says 127.0.0.1) → 403 for /debug/actors, /debug and kick."""
        for path in ("/debug/actors", "/debug", "/debug/stats"):
            assert admin.http(path, headers={"Host": f"evil.example:{admin.port}"})[0] == 403
        assert admin.http(path, headers={"Host": f"localhost:{admin.port}"})[0] == 200

    def test_cross_origin_text_plain_post_cannot_kick(self, admin):
        """The issue's probe: a cross-origin text/plain POST → refused, the user stays."""
        with Client(admin) as victim:
            victim.login("victim")
            status, _h, _b = admin.http(
                "/admin/kick",
                "POST",
                b'{"nick": "victim"}',
                headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
            )
            assert status == 403
            status, _h, _b = admin.http(
                "/admin/kick", "POST", b'{"nick": "victim"}', headers={"Content-Type": "text/plain"}
            )
            assert status == 415
            victim.send({"type": "ping"})
            victim.expect("pong")

    def test_same_origin_json_kicks(self, admin):
        """The same request as JSON from our own origin (or from curl) works."""
        with Client(admin) as victim:
            victim.login("victim2")
            status, _h, body = admin.http(
                "/admin/kick",
                "POST",
                {"nick": "victim2"},
                headers={"Origin": f"http://127.0.0.1:{admin.port}"},
            )
            assert status == 200 and json.loads(body) == {"kicked": True}

    def test_token_guessing_is_throttled_and_logged_once(self):
        """Wrong tokens: 401 ten times, then 429 with Retry-After; one warning in the log."""
        with Server("--admin-token", "s3cret") as srv:
            statuses = [
                srv.http("/debug/actors", headers={"Authorization": f"Bearer g{i}"})[0]
                for i in range(12)
            ]
            status, headers, _ = srv.http(
                "/debug/actors", headers={"Authorization": "Bearer s3cret"}
            )
            log = srv.log()
        assert statuses == [401] * 10 + [429] * 2
        assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60
        assert log.count("wrong admin token") == 1


class TestSecurityHeaders:
    """The "HTTP edges" row: security headers on every HTTP response."""

    @pytest.mark.parametrize("path", ["/", "/debug", "/healthz", "/metrics", "/nope", "/ws"])
    def test_present(self, server, path):
        """nosniff, DENY, no-referrer and a CSP that allows no framing."""
        _status, headers, _body = server.http(path)
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]

    def test_refused_upgrade_has_them(self, server):
        """A refused WebSocket upgrade (403 for a forged Origin) carries them too."""
        from ..support.e2e import raw_upgrade

        sock, response = raw_upgrade(server, headers={"Origin": "https://evil.example"})
        sock.close()
        assert (
            response.startswith(b"HTTP/1.1 403") and b"X-Content-Type-Options: nosniff" in response
        )


# Requests a client may send before the chat starts: each gets an HTTP answer or a close,
# and none may print a traceback (item 6 outside the WebSocket framing).
ODD_REQUESTS = {
    "negative length": b"POST /admin/kick HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: -5\r\n\r\n",
    "length not a number": b"POST /admin/kick HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1e3\r\n\r\n",
    "chunked kick": b"POST /admin/kick HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b'Transfer-Encoding: chunked\r\n\r\n10\r\n{"nick": "nobody"}\r\n0\r\n\r\n',
    "bad chunk size": b"POST /admin/kick HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "chunked then cut": b"POST /admin/kick HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b'Transfer-Encoding: chunked\r\n\r\nffff\r\n{"ni',
    "expect 100-continue": b"POST /admin/kick HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Expect: 100-continue\r\nContent-Length: 16\r\n\r\n",
    "huge length": b"POST /admin/kick HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 99999999999999999999\r\n\r\n",
    "garbage line": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    "http2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "absolute uri": b"GET http://evil.example/debug/actors HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    "nul in path": b"GET /he%00althz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "latin-1 header": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Name: \xe9\xff\r\n\r\n",
    "no host http/1.0": b"GET /debug/actors HTTP/1.0\r\n\r\n",
    "options": b"OPTIONS /admin/kick HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n"
    b"Access-Control-Request-Method: POST\r\n\r\n",
    "head": b"HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    "folded header": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\r\n b\r\n\r\n",
    "bare lf": b"GET /healthz HTTP/1.1\nHost: 127.0.0.1\n\n",
    "reset mid-headers": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-",
}


@pytest.fixture(scope="module")
def odd():
    with Server(*SHORT) as srv:  # __exit__ fails the test on any traceback
        yield srv


class TestOddRequests:
    """Item 6: odd HTTP before the chat → an answer or a close, never a traceback."""

    @pytest.mark.parametrize("name", sorted(ODD_REQUESTS))
    def test_answered_or_closed(self, odd, name):
        """The request gets an HTTP status line or a close within the deadlines."""
        with connect(odd) as sock:
            sock.sendall(ODD_REQUESTS[name])
            if name.startswith("reset"):
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                return
            _took, data = until_closed(sock, 6)
        assert data == b"" or data.startswith(b"HTTP/1."), data[:200]
        assert odd.http("/healthz")[0] == 200
