"""hubbub.admission: the origin rule and the per-IP limits, before the 101.

The rules are pure and tested on their own with a fake clock; then the handler that
``handler_for`` builds is run in-process (a gevent ``WSGIServer`` on a free port) to
show that every way a connection can end gives its slot back.
"""

from __future__ import annotations

import base64
import io
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.queue
import pytest
from gevent.pywsgi import WSGIServer

from hubbub.admission import (
    AcceptGate,
    AdmissionHandler,
    ConnectionLimits,
    OriginPolicy,
    handler_for,
    parse_origin,
)
from hubbub.config import Config
from hubbub.testing import FakeClock

pytestmark = pytest.mark.timeout(10)


class TestParseOrigin:
    """RFC 6454 §6.1: an origin is scheme://host[:port], the port defaulted by scheme."""

    def test_default_ports_are_filled_in(self):
        """http → 80, https → 443; an explicit default port is the same origin."""
        assert parse_origin("https://Chat.Example.com") == ("https", "chat.example.com", 443)
        assert parse_origin("https://chat.example.com:443") == parse_origin(
            "https://chat.example.com"
        )
        assert parse_origin("http://a.example") == ("http", "a.example", 80)

    def test_ip_literals_are_normalised(self):
        """[::0:1] and [::1] are one host; IPv4 stays as written."""
        assert parse_origin("http://[::0:1]:8080") == ("http", "::1", 8080)
        assert parse_origin("http://127.0.0.1:8080") == ("http", "127.0.0.1", 8080)

    @pytest.mark.parametrize(
        "value",
        [
            "",
            "null",
            "a.example",
            "https://a.example/",
            "https://a.example/path",
            "https://user@a.example",
            "https://a.example:99999",
            "https://a.example:",
            "https://",
            "https://a.example, https://b.example",
            "https://[::1",
        ],
    )
    def test_malformed(self, value):
        """Anything but scheme://host[:port] is malformed (None), including "null"."""
        assert parse_origin(value) is None


class TestDefaultOrigins:
    """docs/operations.md --allowed-origins, default: same host (http or https) plus loopback."""

    policy = OriginPolicy(None)

    def test_no_origin_header_is_allowed(self):
        """No Origin header (not a browser) is allowed."""
        assert self.policy.allows(None, "chat.example.com")

    @pytest.mark.parametrize("origin", ["https://chat.example.com", "http://chat.example.com"])
    def test_same_host_either_scheme(self, origin):
        """The page's host equals Host (no port: the scheme's default) → allowed."""
        assert self.policy.allows(origin, "chat.example.com")

    def test_same_host_and_port(self):
        """Host with a port matches an origin with that port, http or https."""
        assert self.policy.allows("http://chat.example.com:8080", "chat.example.com:8080")
        assert self.policy.allows("https://chat.example.com:8080", "Chat.Example.com:8080")

    @pytest.mark.parametrize(
        "origin, host",
        [
            ("https://chat.example.com:8443", "chat.example.com"),
            ("http://chat.example.com", "chat.example.com:8080"),
            ("https://chat.example.com:9090", "chat.example.com:8080"),
        ],
    )
    def test_same_host_other_port_is_refused(self, origin, host):
        """Another port is another origin (RFC 6454 §5)."""
        assert not self.policy.allows(origin, host)

    @pytest.mark.parametrize(
        "origin",
        [
            "https://evil.example",
            "https://chat.example.com.evil.example",
            "null",
            "https://chat.example.com/",
            "chrome-extension://chat.example.com",
        ],
    )
    def test_other_host_or_malformed_is_refused(self, origin):
        """Another host, a look-alike, "null", a malformed value or a non-page scheme → refused."""
        assert not self.policy.allows(origin, "chat.example.com")

    @pytest.mark.parametrize(
        "origin",
        [
            "http://localhost:3000",
            "https://localhost",
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://[::1]:5173",
        ],
    )
    def test_loopback_origins_any_port(self, origin):
        """A page from the user's own machine (localhost, 127/8, [::1]) is allowed on any port."""
        assert self.policy.allows(origin, "chat.example.com")

    def test_missing_or_bad_host_header_leaves_only_loopback(self):
        """Without a usable Host header nothing is "same host"; loopback still is."""
        assert not self.policy.allows("https://chat.example.com", None)
        assert not self.policy.allows("https://chat.example.com", "chat.example.com:x")
        assert self.policy.allows("http://localhost:1", None)

    def test_ipv6_host_header(self):
        """Host [2001:db8::1]:8080 matches its origin, in any spelling of the address."""
        assert self.policy.allows("http://[2001:db8:0::1]:8080", "[2001:db8::1]:8080")


class TestListedOrigins:
    """docs/operations.md --allowed-origins with a list: exactly those origins."""

    policy = OriginPolicy(("https://chat.example.com", "http://intranet.example:8080"))

    def test_listed_origins_are_allowed(self):
        """Each listed origin is allowed, with or without its default port."""
        assert self.policy.allows("https://chat.example.com", "anything")
        assert self.policy.allows("https://chat.example.com:443", "anything")
        assert self.policy.allows("http://intranet.example:8080", "anything")

    @pytest.mark.parametrize(
        "origin",
        [
            "http://chat.example.com",
            "https://chat.example.com:8443",
            "http://127.0.0.1:8080",
            "http://localhost",
            "https://evil.example",
            "null",
        ],
    )
    def test_everything_else_is_refused(self, origin):
        """Another scheme or port, loopback and same-host pages are no longer implied."""
        assert not self.policy.allows(origin, "127.0.0.1:8080")

    def test_no_origin_header_is_still_allowed(self):
        """A list restricts browsers only: no Origin header stays allowed."""
        assert self.policy.allows(None, "chat.example.com")

    def test_star_allows_anything(self):
        """'*' allows every Origin value, even a malformed one."""
        star = OriginPolicy(("*",))
        assert all(star.allows(o, "x") for o in ("https://evil.example", "null", "garbage", None))

    def test_malformed_entry_is_rejected(self):
        """A list entry that is no origin fails at start-up, not at the first browser."""
        with pytest.raises(ValueError, match="not an origin"):
            OriginPolicy(("https://chat.example.com/",))


class TestConnectionCap:
    """docs/operations.md --max-connections: open connections per client IP."""

    def test_over_the_cap_is_refused_until_one_is_released(self):
        """The (N+1)th open connection from one IP is refused; a release makes room."""
        limits, now = ConnectionLimits(max_open=3), 0.0
        assert [limits.admit("10.0.0.1", now) for _ in range(3)] == [None] * 3
        assert "too many open connections" in limits.admit("10.0.0.1", now)
        limits.release("10.0.0.1")
        assert limits.admit("10.0.0.1", now) is None

    def test_ips_are_counted_separately(self):
        """One IP at its cap does not affect another."""
        limits = ConnectionLimits(max_open=1)
        assert limits.admit("10.0.0.1", 0.0) is None
        assert limits.admit("10.0.0.2", 0.0) is None
        assert limits.connections == {"10.0.0.1": 1, "10.0.0.2": 1}

    def test_zero_means_no_cap(self):
        """max_open 0 admits any number of open connections."""
        limits = ConnectionLimits(max_open=0, rate=0)
        assert all(limits.admit("10.0.0.1", 0.0) is None for _ in range(10_000))

    def test_entry_is_dropped_when_the_count_returns_to_zero(self):
        """No entry is kept for an IP with no open connection (no slow leak)."""
        limits = ConnectionLimits(max_open=5)
        limits.admit("10.0.0.1", 0.0)
        limits.admit("10.0.0.1", 0.0)
        limits.release("10.0.0.1")
        assert limits.connections == {"10.0.0.1": 1}
        limits.release("10.0.0.1")
        assert limits.connections == {}

    def test_release_without_admit_is_an_error(self):
        """A release that admit did not grant raises instead of corrupting the count."""
        with pytest.raises(ValueError, match="without a matching admit"):
            ConnectionLimits().release("10.0.0.1")

    def test_refusal_at_the_cap_costs_no_token(self):
        """Retrying while at the cap does not drain the rate bucket."""
        limits = ConnectionLimits(max_open=1, rate=1, burst=2)
        assert limits.admit("10.0.0.1", 0.0) is None
        for _ in range(50):
            assert "open connections" in limits.admit("10.0.0.1", 0.0)
        limits.release("10.0.0.1")
        assert limits.admit("10.0.0.1", 0.0) is None  # the second token was still there


class TestConnectionRate:
    """New connections per IP: a token bucket, rate per second and burst deep."""

    def test_burst_then_refused(self):
        """`burst` connections at one instant pass; the next one is refused."""
        clock, limits = FakeClock(), ConnectionLimits(rate=50, burst=100)
        assert all(limits.admit("10.0.0.1", clock.monotonic()) is None for _ in range(100))
        assert "too many new connections" in limits.admit("10.0.0.1", clock.monotonic())

    def test_tokens_refill_at_the_rate(self):
        """After the burst, 1/rate seconds buys one more connection, one second `rate` more."""
        clock, limits = FakeClock(), ConnectionLimits(rate=50, burst=100)
        for _ in range(100):
            limits.admit("10.0.0.1", clock.monotonic())
        clock.jump(0.02)
        assert limits.admit("10.0.0.1", clock.monotonic()) is None
        assert limits.admit("10.0.0.1", clock.monotonic()) is not None
        clock.jump(1.0)
        results = [limits.admit("10.0.0.1", clock.monotonic()) for _ in range(51)]
        assert results[:50] == [None] * 50 and results[50] is not None

    def test_bucket_never_exceeds_burst(self):
        """A long quiet spell refills to `burst`, not beyond."""
        clock, limits = FakeClock(), ConnectionLimits(rate=50, burst=100)
        limits.admit("10.0.0.1", clock.monotonic())
        clock.jump(3600)
        results = [limits.admit("10.0.0.1", clock.monotonic()) for _ in range(101)]
        assert results.count(None) == 100

    def test_rate_refusal_takes_no_slot(self):
        """A connection refused for its rate is not counted as open."""
        limits = ConnectionLimits(max_open=10, rate=1, burst=1)
        assert limits.admit("10.0.0.1", 0.0) is None
        assert limits.admit("10.0.0.1", 0.0) is not None
        assert limits.connections == {"10.0.0.1": 1}

    def test_ips_have_their_own_buckets(self):
        """One IP's burst does not limit another IP."""
        limits = ConnectionLimits(rate=1, burst=1)
        assert limits.admit("10.0.0.1", 0.0) is None
        assert limits.admit("10.0.0.2", 0.0) is None

    def test_rate_zero_means_no_rate_limit(self):
        """rate 0 admits any number of new connections at one instant."""
        limits = ConnectionLimits(rate=0)
        assert all(limits.admit("10.0.0.1", 0.0) is None for _ in range(1000))
        assert limits.buckets == {}

    def test_full_buckets_are_forgotten(self):
        """Once an IP's bucket has refilled its entry goes, so the map stays small."""
        clock, limits = FakeClock(), ConnectionLimits(rate=50, burst=100)
        for n in range(1000):
            limits.admit(f"10.0.{n // 256}.{n % 256}", clock.monotonic())
            limits.release(f"10.0.{n // 256}.{n % 256}")
        assert len(limits.buckets) == 1000
        clock.jump(2.0)  # the refill time: burst / rate
        limits.admit("10.9.9.9", clock.monotonic())
        assert set(limits.buckets) == {"10.9.9.9"}

    def test_unmetered_connections_skip_the_rate_but_count(self):
        """metered=False (loopback, in the handler) passes the rate but not the cap."""
        limits = ConnectionLimits(max_open=3, rate=1, burst=1)
        assert [limits.admit("127.0.0.1", 0.0, metered=False) for _ in range(3)] == [None] * 3
        assert "open connections" in limits.admit("127.0.0.1", 0.0, metered=False)
        assert limits.buckets == {}

    def test_limits_can_be_tuned_while_serving(self):
        """rate, burst and max_open are plain attributes, read on every admit."""
        limits = ConnectionLimits(rate=50, burst=100)
        limits.rate, limits.burst = 1, 1
        limits.admit("10.0.0.1", 0.0)
        assert limits.admit("10.0.0.1", 0.0) is not None


class TestHandlerFor:
    """handler_for(config): one handler class per node, the node's own counters."""

    def test_reads_the_config(self):
        """max_connections, allowed_origins, max_message and max_backlog come from Config."""
        handler = handler_for(Config(max_connections=7, allowed_origins=("*",), max_message=500))
        assert issubclass(handler, AdmissionHandler)
        assert handler.limits.max_open == 7 and handler.origins.anyone
        assert handler.max_message == 500 and handler.max_backlog == Config().max_backlog

    def test_rate_defaults_come_from_the_class_attributes(self):
        """The connection rate and burst are AdmissionHandler.connection_rate / _burst."""
        handler = handler_for(Config())
        assert (handler.limits.rate, handler.limits.burst) == (50.0, 100)
        assert (handler.connection_rate, handler.connection_burst) == (50.0, 100)

    def test_max_connections_zero_turns_off_both_limits(self):
        """--max-connections 0 (e.g. behind a proxy): neither a cap nor a connection rate."""
        limits = handler_for(Config(max_connections=0)).limits
        assert (limits.max_open, limits.rate) == (0, 0)
        assert all(limits.admit("127.0.0.1", 0.0) is None for _ in range(1000))

    def test_each_node_counts_alone(self):
        """Two handler classes (two servers in one process) share no counters."""
        a, b = handler_for(Config()), handler_for(Config())
        assert a.limits is not b.limits


# ------------------------------------------------------------------ the handler, in-process


class App:
    """Echo; "boom" makes the app's callback raise. Publishes each connection."""

    def __init__(self) -> None:
        self.connections: gevent.queue.Queue[Any] = gevent.queue.Queue()

    def __call__(self, environ, start_response):
        conn = environ.get("hubbub.connection")
        if conn is None:
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"plain"]
        self.connections.put(conn)

        def on_message(message: str | bytes) -> None:
            if message == "boom":
                raise RuntimeError("the app failed")
            conn.send_text(message.encode() if isinstance(message, str) else message)

        conn.on_message = on_message
        return []


@dataclass
class Node:
    port: int
    handler: type[AdmissionHandler]
    app: App
    error_log: io.StringIO

    def upgrade(self, headers: dict[str, str] | None = None) -> tuple[socket.socket, bytes]:
        """A raw upgrade; returns the socket and the response head."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        hdrs = {
            "Host": f"127.0.0.1:{self.port}",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Version": "13",
            **(headers or {}),
        }
        request = (
            "GET /ws HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        )
        sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head and (chunk := sock.recv(4096)):
            head += chunk
        return sock, head

    def open(self) -> socket.socket:
        sock, head = self.upgrade()
        assert head.startswith(b"HTTP/1.1 101"), head
        return sock

    def wait_released(self) -> None:
        """Until no connection holds a slot (the handlers have finished)."""
        with gevent.Timeout(
            3, AssertionError(f"slots still held: {self.handler.limits.connections}")
        ):
            while self.handler.limits.connections:
                gevent.sleep(0.01)


def send_text(sock: socket.socket, text: str) -> None:
    data, mask = text.encode(), os.urandom(4)
    sock.sendall(
        struct.pack("!BB", 0x81, 0x80 | len(data))
        + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    )


@pytest.fixture
def node() -> Iterator[Node]:
    handler = handler_for(Config(max_connections=2))
    handler.close_timeout = 0.3
    app, errors = App(), io.StringIO()
    hub = gevent.get_hub()
    saved_stream, hub.exception_stream = (
        hub.exception_stream,
        errors,
    )  # where gevent reports app errors
    srv = WSGIServer(("127.0.0.1", 0), app, handler_class=handler, log=None, error_log=errors)
    srv.start()
    try:
        yield Node(srv.server_port, handler, app, errors)
    finally:
        srv.stop(timeout=1)
        hub.exception_stream = saved_stream


class TestHandler:
    """docs/operations.md --max-connections and --allowed-origins, through the real handler."""

    def test_forged_origin_is_403_and_takes_no_slot(self, node):
        """A refused Origin → 403 with the reason; the app never runs, no slot is held."""
        sock, head = node.upgrade({"Origin": "https://evil.example"})
        sock.close()
        assert head.startswith(b"HTTP/1.1 403") and b"'https://evil.example' is not allowed" in head
        assert node.app.connections.empty() and node.handler.limits.connections == {}

    def test_over_the_cap_is_503_with_retry_after(self, node):
        """The third open connection with max_connections 2 → 503, Retry-After: 1."""
        first, second = node.open(), node.open()
        sock, head = node.upgrade()
        sock.close()
        assert head.startswith(b"HTTP/1.1 503") and b"\r\nRetry-After: 1\r\n" in head
        assert node.handler.limits.connections == {"127.0.0.1": 2}
        first.close()
        second.close()

    def test_rate_over_the_limit_is_503(self, node):
        """With the connection rate tuned to 1/s, burst 1, a second connection at once → 503."""
        node.handler.clock = FakeClock()  # time stands still: no token comes back
        node.handler.rate_exempt = staticmethod(lambda ip: False)  # meter loopback too
        node.handler.limits.rate, node.handler.limits.burst = 1, 1
        first = node.open()
        sock, head = node.upgrade()
        sock.close()
        assert head.startswith(b"HTTP/1.1 503") and b"too many new connections" in head
        first.close()

    def test_loopback_is_exempt_from_the_rate(self, node):
        """By default loopback clients are not rate limited (the cap still applies)."""
        node.handler.clock = FakeClock()
        node.handler.limits.rate, node.handler.limits.burst = 1, 1
        first, second = node.open(), node.open()
        sock, head = node.upgrade()
        sock.close()
        assert b"too many open connections" in head
        first.close()
        second.close()

    def test_normal_close_releases(self, node):
        """A close handshake started by the client gives the slot back."""
        sock = node.open()
        sock.sendall(struct.pack("!BB", 0x88, 0x82) + b"\0\0\0\0" + struct.pack("!H", 1000))
        node.wait_released()
        sock.close()

    def test_reset_releases(self, node):
        """A connection reset (RST, no close frame) gives the slot back."""
        sock = node.open()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        node.wait_released()

    def test_app_error_releases(self, node, caplog):
        """An exception in the app's callback drops the connection and gives the slot back."""
        sock = node.open()
        send_text(sock, "boom")
        node.wait_released()
        sock.close()
        assert "the app failed" in caplog.text

    def test_abort_releases(self, node):
        """abort() (as a shutdown does) gives the slot back."""
        sock = node.open()
        node.app.connections.get(timeout=2).abort()
        node.wait_released()
        sock.close()

    def test_slots_freed_admit_again(self, node):
        """After connections end in any way, the cap admits as many again: nothing leaked."""
        for _ in range(3):
            socks = [node.open(), node.open()]
            for sock in socks:
                sock.close()
            node.wait_released()


class TestAcceptGate:
    """Issue 15 item 2: caps counted at accept, shedding the oldest waiting socket, and a
    deadline for every phase before the chat (AcceptGate, on a fake clock)."""

    @staticmethod
    def gate(**kw):
        kw.setdefault("max_sockets", 4)
        kw.setdefault("timeouts", {"handshake": 3.0, "headers": 5.0, "body": 7.0, "idle": 11.0})
        return AcceptGate(**kw)

    def test_under_the_cap_every_socket_is_admitted(self):
        """Up to max_sockets sockets are admitted and counted; release gives each back."""
        g, clock = self.gate(), FakeClock()
        tickets = [g.admit("198.51.100.1", clock.monotonic())[0] for _ in range(4)]
        assert all(tickets) and g.open == 4 and g.pending == {"198.51.100.1": 4}
        for t in tickets:
            g.release(t)
        assert g.open == 0 and g.pending == {} and g.waiting() == 0

    def test_over_the_cap_the_oldest_waiting_socket_is_shed(self):
        """A socket over max_sockets takes the place of the one longest in its phase; the
        shed one's fd counts until its handler releases it."""
        g, clock = self.gate(), FakeClock()
        first = [g.admit(f"198.51.100.{i}", clock.monotonic())[0] for i in range(4)]
        clock.jump(1)
        g.enter(first[0], "body", clock.monotonic())  # a new phase: now the youngest
        ticket, shed = g.admit("203.0.113.5", clock.monotonic())
        assert ticket is not None and shed == [first[1]] and first[1].phase == "shed"
        assert g.open == 5 and g.shedding == 1 and "198.51.100.1" not in g.pending
        g.release(first[1])  # its handler saw the shutdown and closed the socket
        assert g.open == 4 and g.shedding == 0
        g.release(first[1])  # twice is harmless
        assert g.open == 4

    def test_sockets_in_chat_are_never_shed(self):
        """With every socket in chat, a new one is refused."""
        g, clock = self.gate(), FakeClock()
        for i in range(4):
            g.enter(g.admit(f"198.51.100.{i}", clock.monotonic())[0], "chat", clock.monotonic())
        assert g.admit("203.0.113.5", clock.monotonic()) == (None, [])
        assert g.counts["refused"] == 1 and g.open == 4

    def test_shedding_is_bounded_while_fds_are_still_closing(self):
        """At most SHED_SLACK shed sockets may be on their way out; then a newcomer must
        wait (and admit refuses it if asked anyway)."""
        from hubbub.admission import SHED_SLACK

        g, clock = self.gate(max_sockets=1), FakeClock()
        g.admit("198.51.100.1", clock.monotonic())
        for _ in range(SHED_SLACK):
            assert not g.must_wait()
            assert g.admit("198.51.100.1", clock.monotonic())[0] is not None
        assert g.must_wait() and g.must_wait(loopback=False)
        assert g.admit("198.51.100.1", clock.monotonic())[0] is None
        assert g.open == 1 + SHED_SLACK and g.shedding == SHED_SLACK

    def test_a_closed_shed_socket_ends_the_wait(self):
        """Once one shed socket is released, the waiting newcomer gets in (shedding another)."""
        from hubbub.admission import SHED_SLACK

        g, clock = self.gate(max_sockets=1), FakeClock()
        shed = [g.admit("198.51.100.1", clock.monotonic())[1] for _ in range(SHED_SLACK + 1)]
        assert g.must_wait()
        g.release(shed[1][0])
        assert not g.must_wait()
        ticket, more = g.admit("198.51.100.2", clock.monotonic())
        assert ticket is not None and len(more) == 1 and g.shedding == SHED_SLACK

    def test_nobody_waits_under_the_cap_or_when_all_are_in_chat(self):
        """must_wait only when shedding is what would make room: under the cap a socket
        is admitted, with every socket in chat it is refused (no shed socket to wait for)."""
        g, clock = self.gate(max_sockets=2, admin_reserve=1), FakeClock()
        a = g.admit("198.51.100.1", clock.monotonic())[0]
        assert not g.must_wait()
        b = g.admit("198.51.100.2", clock.monotonic())[0]
        for t in (a, b):
            g.enter(t, "chat", clock.monotonic())
        assert not g.must_wait() and g.admit("203.0.113.5", clock.monotonic()) == (None, [])

    def test_open_never_exceeds_the_cap_plus_the_shed_slack(self):
        """The fd budget gate.py sizes from: whatever arrives and whenever sockets close,
        open <= max_sockets + admin_reserve + SHED_SLACK (5,000 random steps, seeded).
        Per-IP sheds under the cap may exceed the slack: they never take open over the cap."""
        import random

        from hubbub.admission import SHED_SLACK

        rnd, clock = random.Random(15), FakeClock()
        g = self.gate(max_sockets=20, admin_reserve=4, max_pending_per_ip=6)
        live: list = []
        shed: list = []
        for _ in range(5000):
            step = rnd.random()
            if step < 0.7:
                loopback = rnd.random() < 0.5
                ip = "127.0.0.1" if loopback else f"198.51.100.{rnd.randrange(5)}"
                if g.must_wait(loopback=loopback) and rnd.random() < 0.5:
                    continue  # the shell holds it back (and sometimes admits it anyway)
                ticket, out = g.admit(ip, clock.monotonic(), loopback=loopback)
                shed += out
                live = [t for t in live if t not in out]
                if ticket is not None:
                    live.append(ticket)
            elif step < 0.8 and live:
                g.enter(rnd.choice(live), "chat", clock.monotonic())
            elif step < 0.85 and shed:
                g.release(shed.pop(rnd.randrange(len(shed))))
            elif live:
                g.release(live.pop(rnd.randrange(len(live))))
            assert g.open == len(live) + len(shed) and g.shedding == len(shed)
            assert len(live) <= 20 + 4 and g.open <= 20 + 4 + SHED_SLACK

    def test_over_both_caps_one_socket_is_shed(self):
        """Full and over its per-IP cap: the newcomer's own IP's oldest makes room, alone."""
        g, clock = self.gate(max_sockets=3, max_pending_per_ip=2), FakeClock()
        other = g.admit("198.51.100.9", clock.monotonic())[0]
        a = g.admit("203.0.113.5", clock.monotonic())[0]
        g.admit("203.0.113.5", clock.monotonic())
        ticket, shed = g.admit("203.0.113.5", clock.monotonic())
        assert ticket is not None and shed == [a] and other.phase == "headers"
        assert g.open == 4 and g.shedding == 1

    def test_loopback_has_a_reserve(self):
        """Over max_sockets, loopback still gets admin_reserve sockets without shedding."""
        g, clock = self.gate(max_sockets=2, admin_reserve=1), FakeClock()
        for i in range(2):
            g.enter(g.admit(f"198.51.100.{i}", clock.monotonic())[0], "chat", clock.monotonic())
        assert g.admit("203.0.113.5", clock.monotonic()) == (None, [])
        ticket, shed = g.admit("127.0.0.1", clock.monotonic(), loopback=True)
        assert ticket is not None and shed == []
        g.enter(ticket, "chat", clock.monotonic())
        assert g.admit("127.0.0.1", clock.monotonic(), loopback=True)[0] is None  # reserve used up

    def test_shed_oldest_when_out_of_files(self):
        """shed_oldest() gives the socket longest in its phase, or None when all are in chat."""
        g, clock = self.gate(), FakeClock()
        a = g.admit("198.51.100.1", clock.monotonic())[0]
        b = g.admit("198.51.100.2", clock.monotonic())[0]
        g.enter(a, "chat", clock.monotonic())
        assert g.shed_oldest() is b and g.shed_oldest() is None

    def test_per_ip_cap_sheds_that_ips_own_oldest(self):
        """Over max_pending_per_ip, the same IP's oldest waiting socket makes room; others are untouched."""
        g, clock = self.gate(max_sockets=100, max_pending_per_ip=2), FakeClock()
        other = g.admit("198.51.100.9", clock.monotonic())[0]
        a = g.admit("203.0.113.5", clock.monotonic())[0]
        clock.jump(1)
        b = g.admit("203.0.113.5", clock.monotonic())[0]
        c, shed = g.admit("203.0.113.5", clock.monotonic())
        assert shed == [a] and c is not None and b.phase == "headers" and other.phase == "headers"
        assert g.pending["203.0.113.5"] == 2

    def test_sockets_in_chat_do_not_count_against_the_per_ip_cap(self):
        """The per-IP cap counts sockets not yet upgraded; those in chat are --max-connections' business."""
        g, clock = self.gate(max_sockets=100, max_pending_per_ip=1), FakeClock()
        for _ in range(5):
            t, shed = g.admit("203.0.113.5", clock.monotonic())
            assert shed == []
            g.enter(t, "chat", clock.monotonic())
        assert g.pending == {} and g.open == 5

    def test_every_phase_has_its_deadline(self):
        """handshake, headers, body and idle each expire after their own timeout; chat never."""
        g, clock = self.gate(max_sockets=100), FakeClock()
        tls = g.admit("198.51.100.1", clock.monotonic(), tls=True)[0]
        plain = g.admit("198.51.100.2", clock.monotonic())[0]
        chat = g.admit("198.51.100.3", clock.monotonic())[0]
        g.enter(chat, "chat", clock.monotonic())
        clock.jump(2.9)
        assert g.due(clock.monotonic()) == []
        clock.jump(0.1)
        assert g.due(clock.monotonic()) == [tls] and tls.expired
        g.enter(plain, "body", clock.monotonic())  # headers done at t=3: body until t=10
        clock.jump(6.9)
        assert g.due(clock.monotonic()) == []
        clock.jump(0.1)
        assert g.due(clock.monotonic()) == [plain]
        g.enter(plain, "idle", clock.monotonic())
        clock.jump(11)
        assert g.due(clock.monotonic()) == [plain]
        clock.jump(1000)
        assert g.due(clock.monotonic()) == [] and not chat.expired

    def test_a_request_past_its_deadline_gets_a_short_grace(self):
        """After the body deadline the socket may still send its 408, for at most CLOSING_GRACE."""
        from hubbub.admission import CLOSING_GRACE

        g, clock = self.gate(max_sockets=100, timeouts={"body": 60.0}), FakeClock()
        t = g.admit("198.51.100.1", clock.monotonic())[0]
        g.enter(t, "body", clock.monotonic())
        clock.jump(60)
        assert g.due(clock.monotonic()) == [t]
        g.enter(t, "closing", clock.monotonic())
        clock.jump(CLOSING_GRACE)
        assert g.due(clock.monotonic()) == [t] and g.timeouts["closing"] == CLOSING_GRACE

    def test_a_new_phase_replaces_the_old_deadline(self):
        """A socket that moves on is not expired by its previous phase's deadline."""
        g, clock = self.gate(max_sockets=100), FakeClock()
        t = g.admit("198.51.100.1", clock.monotonic())[0]
        clock.jump(4)
        g.enter(t, "body", clock.monotonic())
        clock.jump(2)  # the headers deadline (t=5) passed; the body one (t=11) did not
        assert g.due(clock.monotonic()) == []

    def test_released_and_shed_tickets_never_expire(self):
        """A closed socket's deadline is forgotten."""
        g, clock = self.gate(max_sockets=1), FakeClock()
        a = g.admit("198.51.100.1", clock.monotonic())[0]
        b, shed = g.admit("198.51.100.2", clock.monotonic())
        assert shed == [a]
        g.release(b)
        clock.jump(100)
        assert g.due(clock.monotonic()) == []

    def test_chat_is_final(self):
        """An upgraded socket never goes back to a pre-chat phase (the handler's last 'idle')."""
        g, clock = self.gate(), FakeClock()
        t = g.admit("198.51.100.1", clock.monotonic())[0]
        g.enter(t, "chat", clock.monotonic())
        g.enter(t, "idle", clock.monotonic())
        assert t.phase == "chat" and t.deadline is None and g.waiting() == 0

    def test_bad_settings_are_refused(self):
        """max_sockets below 1 or negative reserves are errors."""
        with pytest.raises(ValueError):
            AcceptGate(max_sockets=0)
        with pytest.raises(ValueError):
            AcceptGate(max_sockets=1, admin_reserve=-1)


class TestGateFor:
    """gate_for(config, fd_limit, in_use): the caps stay under the open-file limit, with
    only what is needed spare (issues "hostile clients" and "lightweight users")."""

    def test_auto_max_sockets_leaves_what_is_open_and_a_small_margin(self):
        """--max-sockets 0: the fd limit minus the files open at start, LATER_FDS, the shed
        slack, the socket being accepted and --admin-reserve."""
        from hubbub.admission import SHED_SLACK
        from hubbub.gate import LATER_FDS, gate_for

        g = gate_for(Config(), 20_000, in_use=9)
        assert g.max_sockets == 20_000 - 9 - LATER_FDS - SHED_SLACK - 1 - 32 == 19_942
        assert g.max_pending_per_ip == 1000 and g.timeouts["headers"] == 60.0

    def test_loopback_users_fill_what_the_maxconn_bench_asks(self):
        """The bench's maxconn target (fd limit - files open at start - 24) all fit from
        loopback, at 20,000 files and at the smoke test's 256."""
        from hubbub.gate import gate_for

        for limit in (20_000, 256):
            g = gate_for(Config(), limit, in_use=9)
            assert g.max_sockets + g.admin_reserve >= limit - 9 - 24

    def test_every_socket_the_gate_may_hold_fits_under_the_limit(self):
        """max_sockets + admin_reserve + SHED_SLACK + the one being accepted + the files
        open + LATER_FDS == the fd limit: the budget is used, not exceeded."""
        from hubbub.admission import SHED_SLACK
        from hubbub.gate import LATER_FDS, gate_for

        for limit, in_use in ((20_000, 9), (20_000, 300), (256, 12), (2_000, 40)):
            g = gate_for(Config(), limit, in_use=in_use)
            assert g.max_sockets + g.admin_reserve + SHED_SLACK + 1 + in_use + LATER_FDS == limit

    def test_unmeasured_files_fall_back_to_a_guess(self):
        """Where /proc/self/fd cannot be read, 64 files are assumed open."""
        from hubbub.gate import FALLBACK_FDS, gate_for

        assert FALLBACK_FDS == 64
        assert gate_for(Config(), 20_000).max_sockets == gate_for(Config(), 20_000, 64).max_sockets

    def test_a_tiny_limit_still_admits_one(self):
        """Below what the reserve needs, max_sockets is 1 (the gate refuses less)."""
        from hubbub.gate import gate_for

        assert gate_for(Config(), 40, in_use=9).max_sockets == 1

    @pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux /proc only")
    def test_open_fds_counts_this_process_files(self, tmp_path):
        """open_fds() sees a file opened and closed (not counting its own listing)."""
        from hubbub.gate import open_fds

        # A regular file: gevent's os.close closes it at once (a device or socket only
        # on the hub's next turn).
        before = open_fds()
        fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
        try:
            assert open_fds() == before + 1
        finally:
            os.close(fd)
        assert open_fds() == before

    def test_max_connections_zero_turns_off_the_per_ip_cap(self):
        """Behind a proxy (--max-connections 0) every client shares an IP: no per-IP cap."""
        from hubbub.gate import gate_for

        assert gate_for(Config(max_connections=0), 20_000).max_pending_per_ip == 0
        assert gate_for(Config(max_sockets=500), 20_000).max_sockets == 500
