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

import gevent
import gevent.queue
import pytest
from gevent.pywsgi import WSGIServer

from hubbub.admission import (
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
    """CONTRACT.md --allowed-origins, default: same host (http or https) plus loopback."""

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
    """CONTRACT.md --allowed-origins with a list: exactly those origins."""

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
    """CONTRACT.md --max-connections: open connections per client IP."""

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
    """Echo; "boom" makes the app raise. Publishes each connection's greenlet."""

    def __init__(self) -> None:
        self.greenlets: gevent.queue.Queue[gevent.Greenlet] = gevent.queue.Queue()

    def __call__(self, environ, start_response):
        conn = environ.get("hubbub.connection")
        if conn is None:
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"plain"]
        self.greenlets.put(gevent.getcurrent())
        while (message := conn.receive()) is not None:
            if message == "boom":
                raise RuntimeError("the app failed")
            conn.send_text(message.encode())
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
    """CONTRACT.md --max-connections and --allowed-origins, through the real handler."""

    def test_forged_origin_is_403_and_takes_no_slot(self, node):
        """A refused Origin → 403 with the reason; the app never runs, no slot is held."""
        sock, head = node.upgrade({"Origin": "https://evil.example"})
        sock.close()
        assert head.startswith(b"HTTP/1.1 403") and b"'https://evil.example' is not allowed" in head
        assert node.app.greenlets.empty() and node.handler.limits.connections == {}

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

    def test_app_error_releases(self, node):
        """An exception in the app gives the slot back."""
        sock = node.open()
        send_text(sock, "boom")
        node.wait_released()
        sock.close()
        assert "the app failed" in node.error_log.getvalue()

    def test_killed_greenlet_releases(self, node):
        """Killing the handler greenlet (as server.stop does) gives the slot back."""
        sock = node.open()
        node.app.greenlets.get(timeout=2).kill(block=True)
        node.wait_released()
        sock.close()

    def test_slots_freed_admit_again(self, node):
        """After connections end in any way, the cap admits as many again: nothing leaked."""
        for _ in range(3):
            socks = [node.open(), node.open()]
            for sock in socks:
                sock.close()
            node.wait_released()
