"""hubbub.transport: the gevent shell of the WebSocket edge, over real sockets.

Every test starts an in-process gevent ``WSGIServer`` with ``Handler`` (small
limits) and a tiny echo app, then talks to it either through the ``websockets`` sync
client (under monkey-patching its background thread is a greenlet) or through raw
sockets that can build the broken frames a real client library refuses to send.
"""

from gevent import monkey

monkey.patch_all()

import base64  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import gevent.queue  # noqa: E402
import pytest  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from hubbub.transport import Connection  # noqa: E402
from hubbub.transport import Handler as HardenedHandler  # noqa: E402
from hubbub.wsproto import close_payload as _close_payload  # noqa: E402
from hubbub.wsproto import unmask  # noqa: E402

pytestmark = pytest.mark.timeout(10)

MAX_MESSAGE = 1000
MAX_BACKLOG = 64 * 1024
CLOSE_TIMEOUT = 0.3

TEXT, BINARY, CLOSE, PING, PONG, CONT = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


class EchoApp:
    """Echo text back; ``bytes`` come back as text ``bin:<hex>``; ``close:CODE:REASON``
    makes the server close. Records what the server side saw, for the tests to check."""

    def __init__(self) -> None:
        self.connections: gevent.queue.Queue[Connection] = gevent.queue.Queue()
        self.ended: gevent.queue.Queue[Connection] = gevent.queue.Queue()
        self.pongs = 0
        self.closes: list[tuple[Connection, int | None]] = []  # every on_close call

    def __call__(self, environ, start_response):
        conn = environ.get("hubbub.connection")
        if conn is None:
            if environ["REQUEST_METHOD"] == "POST":
                body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [body]
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"plain http"]
        conn.on_pong = self._pong
        conn.on_message = lambda message: self._message(conn, message)
        conn.on_close = lambda code: self._closed(conn, code)
        self.connections.put(conn)
        return []

    @staticmethod
    def _message(conn: Connection, message: str | bytes) -> None:
        if isinstance(message, bytes):
            conn.send_text(b"bin:" + message.hex().encode())
        elif message.startswith("close:"):
            _, code, reason = message.split(":", 2)
            conn.close(int(code), reason)
        else:
            conn.send_text(message.encode())

    def _closed(self, conn: Connection, code: int | None) -> None:
        self.closes.append((conn, code))
        self.ended.put(conn)

    def _pong(self) -> None:
        self.pongs += 1


class Handler(HardenedHandler):
    max_message = MAX_MESSAGE
    max_backlog = MAX_BACKLOG
    close_timeout = CLOSE_TIMEOUT
    header_timeout = 0.5
    keepalive_timeout = 0.3
    max_header_bytes = 4096
    frame_budget = 200

    def check_upgrade(self, environ):
        if environ.get("HTTP_ORIGIN") == "https://evil.example":
            return "403 Forbidden"
        return None


@dataclass
class Server:
    port: int
    app: EchoApp
    access_log: io.StringIO
    error_log: io.StringIO
    hub_errors: io.StringIO

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def accepted(self) -> Connection:
        return self.app.connections.get(timeout=2)

    def ended(self) -> Connection:
        return self.app.ended.get(timeout=2)

    def assert_no_traceback(self) -> None:
        errors = self.error_log.getvalue() + self.hub_errors.getvalue()
        assert "Traceback" not in errors, errors
        assert '" 500 ' not in self.access_log.getvalue()


@pytest.fixture
def server():
    app = EchoApp()
    access_log, error_log, hub_errors = io.StringIO(), io.StringIO(), io.StringIO()
    hub = gevent.get_hub()
    saved_stream = hub.exception_stream
    hub.exception_stream = hub_errors  # where gevent prints errors of greenlets and callbacks
    srv = WSGIServer(
        ("127.0.0.1", 0), app, handler_class=Handler, log=access_log, error_log=error_log
    )
    srv.start()
    server = Server(srv.server_port, app, access_log, error_log, hub_errors)
    try:
        yield server
    finally:
        srv.stop(timeout=1)
        hub.exception_stream = saved_stream
    server.assert_no_traceback()


# ---------------------------------------------------------------------------- raw client


def _key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def _upgrade_request(
    headers: dict[str, str], path: str = "/ws", version: str = "HTTP/1.1"
) -> bytes:
    lines = [f"GET {path} {version}", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _good_headers(key: str) -> dict[str, str]:
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
    }


def http_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one request, read the response until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


@dataclass
class Frame:
    fin: bool
    opcode: int
    payload: bytes

    def close_code(self) -> tuple[int, str]:
        assert self.opcode == CLOSE, self
        (code,) = struct.unpack("!H", self.payload[:2])
        return code, self.payload[2:].decode("utf-8")


class RawClient:
    """A byte-level WebSocket client that can break every rule on purpose."""

    def __init__(self, port: int, *, rcvbuf: int | None = None, first_frames: bytes = b"") -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        # Each test frame is its own small write: without this, Nagle + delayed ACK
        # would add 40 ms to every test that sends two frames in a row.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(2)
        sock.connect(("127.0.0.1", port))
        self.sock = sock
        key = _key()
        sock.sendall(_upgrade_request(_good_headers(key)) + first_frames)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            assert chunk, "EOF during the handshake"
            data += chunk
        head, _, self.buffer = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        )
        assert b"Sec-WebSocket-Accept: " + accept in head

    def send_frame(
        self,
        opcode: int,
        payload: bytes = b"",
        *,
        fin: bool = True,
        rsv: int = 0,
        masked: bool = True,
    ) -> None:
        self.sock.sendall(self.frame(opcode, payload, fin=fin, rsv=rsv, masked=masked))

    @staticmethod
    def frame(
        opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True
    ) -> bytes:
        first = (0x80 if fin else 0) | rsv | opcode
        n = len(payload)
        mask_bit = 0x80 if masked else 0
        if n < 126:
            header = bytes((first, mask_bit | n))
        elif n < 0x10000:
            header = struct.pack("!BBH", first, mask_bit | 126, n)
        else:
            header = struct.pack("!BBQ", first, mask_bit | 127, n)
        if not masked:
            return header + payload
        mask = os.urandom(4)
        return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    def _read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def recv_frame(self) -> Frame:
        b0, b1 = self._read_exact(2)
        assert not b1 & 0x80, "server frames must not be masked (RFC 6455 §5.1)"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._read_exact(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._read_exact(8))
        return Frame(bool(b0 & 0x80), b0 & 0x0F, self._read_exact(n))

    def recv_close(self) -> tuple[int, str]:
        """The server's close frame, skipping data before it; then EOF must follow."""
        while (frame := self.recv_frame()).opcode != CLOSE:
            pass
        result = frame.close_code()
        assert self.at_eof(), "the server must shut down its write side after the close frame"
        return result

    def at_eof(self) -> bool:
        try:
            self._read_exact(1)
        except (EOFError, ConnectionResetError):
            return True
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(server):
    clients: list[RawClient] = []

    def factory(**kwargs) -> RawClient:
        client = RawClient(server.port, **kwargs)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


# ---------------------------------------------------------------------------- tests


class TestOpeningHandshake:
    """RFC 6455 §4.2: the upgrade, and refusals that never turn into a 500."""

    def test_upgrade_succeeds_and_sets_tcp_nodelay(self, server, raw):
        """A valid upgrade gets 101 and the accepted socket has TCP_NODELAY on."""
        raw()
        conn = server.accepted()
        assert conn._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert conn.remote_addr == "127.0.0.1"
        assert not conn.closed and conn.close_code is None

    def test_frames_right_behind_the_request_are_kept(self, server, raw):
        """Frames that arrive in the same segment as the upgrade request are not lost."""
        client = raw(first_frames=RawClient.frame(TEXT, b"early") + RawClient.frame(TEXT, b"bird"))
        assert client.recv_frame().payload == b"early"
        assert client.recv_frame().payload == b"bird"

    def test_plain_request_reaches_the_app(self, server):
        """A request without an upgrade is served by the WSGI app unchanged."""
        status, _, body = http_exchange(
            server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert (status, body) == (200, b"plain http")

    @pytest.mark.parametrize(
        "key",
        [
            "not base64!!",
            "%%%%%%%%%%%%%%%%%%%%%%%%",
            base64.b64encode(b"short").decode(),
            "dGhlIHNhbXBsZSBub25jZQ",
        ],
    )
    def test_bad_key_is_400(self, server, key):
        """A Sec-WebSocket-Key that is not base64 of 16 bytes gets 400, not a 500 (§4.2.1)."""
        status, _, _ = http_exchange(server.port, _upgrade_request(_good_headers(key)))
        assert status == 400
        server.assert_no_traceback()

    def test_missing_key_is_400(self, server):
        """An upgrade without Sec-WebSocket-Key gets 400."""
        headers = _good_headers(_key())
        del headers["Sec-WebSocket-Key"]
        assert http_exchange(server.port, _upgrade_request(headers))[0] == 400
        server.assert_no_traceback()

    @pytest.mark.parametrize("version", [None, "8", "12", "banana"])
    def test_unsupported_version_is_426(self, server, version):
        """A missing or non-13 Sec-WebSocket-Version gets 426 naming version 13 (§4.4)."""
        headers = _good_headers(_key())
        if version is None:
            del headers["Sec-WebSocket-Version"]
        else:
            headers["Sec-WebSocket-Version"] = version
        status, response_headers, _ = http_exchange(server.port, _upgrade_request(headers))
        assert status == 426
        assert response_headers["sec-websocket-version"] == "13"
        server.assert_no_traceback()

    def test_http_10_upgrade_is_400(self, server):
        """An upgrade over HTTP/1.0 gets 400 (§4.1 requires HTTP/1.1)."""
        request = _upgrade_request(_good_headers(_key()), version="HTTP/1.0")
        assert http_exchange(server.port, request)[0] == 400
        server.assert_no_traceback()

    def test_check_upgrade_hook_refuses(self, server):
        """check_upgrade() returning a status refuses the upgrade with that status."""
        headers = _good_headers(_key()) | {"Origin": "https://evil.example"}
        assert http_exchange(server.port, _upgrade_request(headers))[0] == 403
        assert server.app.connections.empty()


class TestDataFrames:
    """RFC 6455 §5.6: text and binary messages, through the websockets client."""

    def test_text_echo(self, server):
        """A text message arrives as str and the reply as a text frame."""
        with connect(server.url) as ws:
            ws.send("héllo")
            assert ws.recv(timeout=2) == "héllo"

    def test_binary_is_bytes(self, server):
        """A binary message is returned by receive() as bytes."""
        with connect(server.url) as ws:
            ws.send(b"\x00\xff\x10")
            assert ws.recv(timeout=2) == "bin:00ff10"

    def test_message_at_the_limit_is_accepted(self, server):
        """A message of exactly max_message bytes is fine (16-bit length header)."""
        with connect(server.url) as ws:
            ws.send("x" * MAX_MESSAGE)
            assert ws.recv(timeout=2) == "x" * MAX_MESSAGE

    def test_large_message_is_1009(self, server):
        """A message over max_message closes with 1009 (§7.4.1)."""
        with connect(server.url) as ws:
            ws.send("x" * (MAX_MESSAGE + 1))
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=2)
        assert info.value.rcvd.code == 1009
        assert server.ended().close_code == 1009

    def test_client_close_is_echoed(self, server):
        """The client's close frame is answered with the same code (§5.5.1)."""
        with connect(server.url) as ws:
            ws.close(4321, "done")
            assert (ws.close_code, ws.close_reason) == (4321, "done")
        conn = server.ended()
        assert (conn.close_code, conn.close_reason) == (4321, "done")
        assert server.app.closes == [(conn, conn.close_code)]  # on_close, exactly once

    def test_server_close_carries_code_and_reason(self, server):
        """close(4001, "hello_timeout") reaches the client with that code and reason."""
        with connect(server.url) as ws:
            ws.send("close:4001:hello_timeout")
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=2)
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "hello_timeout")
        assert server.ended().close_code == 4001

    def test_client_ping_gets_pong(self, server):
        """A ping from the client library is answered with a pong (§5.5.2)."""
        with connect(server.url) as ws:
            assert ws.ping(b"are you there").wait(2)


class TestRawFraming:
    """RFC 6455 §5.2-§5.5: what a hostile or broken client can put on the wire."""

    def test_unmasked_frame_is_1002(self, server, raw):
        """An unmasked client frame is a protocol error (§5.1)."""
        client = raw()
        client.send_frame(TEXT, b"hi", masked=False)
        assert client.recv_close()[0] == 1002
        assert server.ended().close_code == 1002

    @pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10])
    def test_reserved_bits_are_1002(self, server, raw, rsv):
        """A frame with RSV1/2/3 set (no extension negotiated) is a protocol error (§5.2)."""
        client = raw()
        client.send_frame(TEXT, b"hi", rsv=rsv)
        assert client.recv_close()[0] == 1002

    @pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
    def test_unknown_opcode_is_1002(self, server, raw, opcode):
        """A reserved opcode is a protocol error (§5.2)."""
        client = raw()
        client.send_frame(opcode, b"hi")
        assert client.recv_close()[0] == 1002

    def test_fragmented_control_frame_is_1002(self, server, raw):
        """A control frame without FIN is a protocol error (§5.5)."""
        client = raw()
        client.send_frame(PING, b"x", fin=False)
        assert client.recv_close()[0] == 1002

    def test_long_control_frame_is_1002(self, server, raw):
        """A control frame longer than 125 bytes is a protocol error (§5.5)."""
        client = raw()
        client.send_frame(PING, b"x" * 126)
        assert client.recv_close()[0] == 1002

    def test_continuation_without_start_is_1002(self, server, raw):
        """A continuation frame with no message in progress is a protocol error (§5.4)."""
        client = raw()
        client.send_frame(CONT, b"x")
        assert client.recv_close()[0] == 1002

    def test_new_message_inside_fragmented_message_is_1002(self, server, raw):
        """A text frame while a fragmented message is open is a protocol error (§5.4)."""
        client = raw()
        client.send_frame(TEXT, b"a", fin=False)
        client.send_frame(TEXT, b"b")
        assert client.recv_close()[0] == 1002

    def test_huge_length_header_is_1009_before_any_payload(self, server, raw):
        """A header claiming 2**40 bytes is refused from the header alone: the close
        frame arrives although not one payload (or mask) byte was sent."""
        client = raw()
        client.sock.sendall(struct.pack("!BBQ", 0x80 | TEXT, 0x80 | 127, 2**40))
        assert client.recv_close()[0] == 1009
        assert server.ended().close_code == 1009

    def test_reassembled_message_over_limit_is_1009(self, server, raw):
        """Fragments that are each small but together exceed max_message get 1009."""
        client = raw()
        client.send_frame(TEXT, b"a" * 600, fin=False)
        client.send_frame(CONT, b"b" * 600)
        assert client.recv_close()[0] == 1009

    def test_invalid_utf8_is_1007(self, server, raw):
        """A text message that is not UTF-8 closes with 1007 (§8.1)."""
        client = raw()
        client.send_frame(TEXT, b"ok \xff\xfe")
        assert client.recv_close()[0] == 1007

    def test_utf8_split_across_fragments_is_fine(self, server, raw):
        """UTF-8 is validated on the whole message, so a character may span fragments."""
        client = raw()
        encoded = "é".encode()
        client.send_frame(TEXT, b"caf" + encoded[:1], fin=False)
        client.send_frame(CONT, encoded[1:])
        assert client.recv_frame() == Frame(True, TEXT, "café".encode())

    def test_ping_gets_pong_with_same_payload(self, server, raw):
        """A ping is answered by a pong carrying the same application data (§5.5.2)."""
        client = raw()
        client.send_frame(PING, b"\x00payload\xff")
        assert client.recv_frame() == Frame(True, PONG, b"\x00payload\xff")

    def test_pong_calls_on_pong(self, server, raw):
        """An unsolicited pong (§5.5.3) is reported through on_pong, nothing is sent back."""
        client = raw()
        client.send_frame(PONG, b"tick")
        client.send_frame(PONG)
        client.send_frame(TEXT, b"sync")
        assert client.recv_frame() == Frame(True, TEXT, b"sync")
        assert server.app.pongs == 2

    def test_fragmented_text_with_interleaved_ping(self, server, raw):
        """Control frames between fragments are handled and the message reassembled (§5.4)."""
        client = raw()
        client.send_frame(TEXT, b"Hel", fin=False)
        client.send_frame(PING, b"mid")
        client.send_frame(CONT, b"lo ", fin=False)
        client.send_frame(CONT, b"world")
        assert client.recv_frame() == Frame(True, PONG, b"mid")
        assert client.recv_frame() == Frame(True, TEXT, b"Hello world")

    def test_fragmented_binary_is_bytes(self, server, raw):
        """A fragmented binary message comes back from receive() as one bytes object."""
        client = raw()
        client.send_frame(BINARY, b"\x01\x02", fin=False)
        client.send_frame(CONT, b"\x03")
        assert client.recv_frame() == Frame(True, TEXT, b"bin:010203")

    def test_peer_close_is_echoed(self, server, raw):
        """The peer's close frame is echoed with its code, then the server closes (§5.5.1)."""
        client = raw()
        client.send_frame(CLOSE, struct.pack("!H", 4321) + "ciao é".encode())
        assert client.recv_close() == (4321, "ciao é")
        conn = server.ended()
        assert (conn.close_code, conn.close_reason) == (4321, "ciao é")

    def test_empty_close_is_answered_with_1000(self, server, raw):
        """A close frame without a code is answered with 1000; internally it is 1005."""
        client = raw()
        client.send_frame(CLOSE)
        assert client.recv_close() == (1000, "")
        assert server.ended().close_code == 1005

    @pytest.mark.parametrize(
        "payload, code",
        [
            (struct.pack("!H", 1005), 1002),
            (struct.pack("!H", 999), 1002),
            (struct.pack("!H", 5000), 1002),
            (b"\x03", 1002),
            (struct.pack("!H", 1000) + b"\xff", 1007),
        ],
    )
    def test_invalid_peer_close(self, server, raw, payload, code):
        """A close frame with an invalid code or a non-UTF-8 reason is answered with 1002/1007."""
        client = raw()
        client.send_frame(CLOSE, payload)
        assert client.recv_close()[0] == code

    def test_eof_ends_the_connection_without_close_frame(self, server, raw):
        """A client that just disconnects: on_close(1006), once."""
        client = raw()
        conn = server.accepted()
        client.close()
        assert server.ended() is conn
        assert conn.close_code == 1006 and conn.closed
        assert server.app.closes == [(conn, 1006)]


class TestClosingHandshake:
    """RFC 6455 §7: closing from the server side."""

    def test_close_waits_for_the_peers_close_frame(self, server, raw):
        """After close(), data is discarded until the peer's close frame; then on_close, once."""
        client = raw()
        conn = server.accepted()
        conn.close(4005, "kicked")
        assert conn.closed
        conn.send_text(b"after close")  # silently dropped: nothing may follow a close frame
        assert client.recv_close() == (4005, "kicked")
        client.send_frame(TEXT, b"late data is discarded")
        client.send_frame(CLOSE, struct.pack("!H", 4005))
        assert server.ended() is conn
        assert conn.close_code == 4005
        assert server.app.closes == [(conn, 4005)]

    def test_silent_peer_is_dropped_after_close_timeout(self, server, raw):
        """A peer that never answers our close frame is dropped after close_timeout."""
        raw()
        conn = server.accepted()
        start = time.monotonic()
        conn.close(4002, "pong_timeout")
        server.ended()
        elapsed = time.monotonic() - start
        assert CLOSE_TIMEOUT * 0.8 <= elapsed < CLOSE_TIMEOUT + 1

    def test_close_reason_is_truncated_on_a_character_boundary(self):
        """The reason is cut to fit 123 bytes without splitting a UTF-8 character (§5.5)."""
        body, sent = _close_payload(4000, "é" * 100)
        assert body[:2] == struct.pack("!H", 4000)
        assert len(body) == 2 + 122 and sent == "é" * 61
        assert body[2:].decode("utf-8") == sent

    def test_close_rejects_codes_that_cannot_be_sent(self, server, raw):
        """close() refuses codes reserved for local use, such as 1006 (§7.4.1)."""
        raw()
        conn = server.accepted()
        with pytest.raises(ValueError):
            conn.close(1006)
        assert not conn.closed


class TestOutbound:
    """Writes never block: the outbox, coalescing and the slow consumer."""

    @staticmethod
    def _stalled(server: Server, raw: Any) -> tuple[Connection, list[int]]:
        """A client that never reads (4 KiB receive buffer): its connection, and the
        backlog at each on_overflow call."""
        raw(rcvbuf=4096)
        conn = server.accepted()
        overflows: list[int] = []
        conn.on_overflow = lambda: overflows.append(conn.backlog)
        return conn, overflows

    def test_frames_queued_together_leave_in_one_send(self, server, raw):
        """100 frames queued without yielding are coalesced into one send and arrive
        intact and in order."""
        client = raw()
        conn = server.accepted()
        calls = []
        real_send = conn._send
        conn._send = lambda buf: calls.append(len(buf)) or real_send(buf)
        for i in range(100):
            conn.send_text(f'{{"n": {i}}}'.encode())
        assert conn.backlog > 0  # nothing is written before this greenlet yields
        frames = [client.recv_frame() for _ in range(100)]
        assert [f.payload for f in frames] == [f'{{"n": {i}}}'.encode() for i in range(100)]
        assert all(f.fin and f.opcode == TEXT for f in frames)
        assert len(calls) == 1 and conn.backlog == 0

    def test_send_text_now_writes_before_the_caller_yields(self, server, raw):
        """send_text_now with nothing queued: the frame is in the kernel when it returns,
        with no hub callback; a second one right after goes the same way, in order."""
        client = raw()
        conn = server.accepted()
        conn.send_text_now(b'{"n": 1}')
        assert conn.backlog == 0 and not conn._flush_pending
        conn.send_text_now(b'{"n": 2}')
        assert conn.backlog == 0 and not conn._flush_pending
        assert [client.recv_frame().payload for _ in range(2)] == [b'{"n": 1}', b'{"n": 2}']

    def test_send_text_now_takes_the_queued_frames_along(self, server, raw):
        """Behind frames waiting for a flush, send_text_now writes them and its own at
        once, in order, in one send; the flush callback then finds nothing to write."""
        client = raw()
        conn = server.accepted()
        calls = []
        real_send = conn._send
        conn._send = lambda buf: calls.append(len(buf)) or real_send(buf)
        conn.send_text(b"first")
        conn.send_text_now(b"second")
        assert conn.backlog == 0 and len(calls) == 1
        assert [client.recv_frame().payload for _ in range(2)] == [b"first", b"second"]
        gevent.sleep(0)  # the callback scheduled by the first send_text runs
        assert len(calls) == 1 and not conn._flush_pending

    def test_send_text_now_after_close_is_a_no_op(self, server, raw):
        """After our close frame no data frame follows (§5.5.1), written at once or not."""
        client = raw()
        conn = server.accepted()
        conn.close(1000, "bye")
        conn.send_text_now(b"too late")
        assert client.recv_close() == (1000, "bye")

    def test_send_text_now_to_a_peer_that_does_not_read(self, server, raw):
        """What the kernel does not take waits for writability, as a flush's would;
        over --max-backlog on_overflow fires once; nothing blocks."""
        conn, overflows = self._stalled(server, raw)
        frame = b"y" * 1000
        worst = 0.0
        for _ in range(20000):  # until the kernel is full, then past --max-backlog
            t = time.perf_counter()
            conn.send_text_now(frame)
            worst = max(worst, time.perf_counter() - t)
            if overflows:
                break
        assert worst < 0.05
        assert conn._buf is not None and conn._writer is not None and conn._writer.active
        assert len(overflows) == 1 and overflows[0] > MAX_BACKLOG

    def test_send_text_now_to_a_reset_peer_ends_the_connection_later(self, server, raw):
        """A write error inside send_text_now is not told inside the caller's loop: the
        connection ends from a hub callback, once."""
        client = raw()
        conn = server.accepted()
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # RST, known to the kernel at once on loopback; not yet read here
        conn.send_text_now(b"into the void")
        assert conn._flush_pending  # the write failed: nothing more is written
        assert not server.app.closes  # not yet: from a hub callback
        assert server.ended() is conn
        assert len(server.app.closes) == 1

    def test_send_text_refuses_str(self, server, raw):
        """send_text() takes encoded bytes; a str fails in the caller, not in the hub."""
        raw()
        conn = server.accepted()
        with pytest.raises(TypeError):
            conn.send_text("not bytes")
        assert conn.backlog == 0

    def test_long_frames_use_extended_lengths(self, server, raw):
        """Frames of 126+ and 65536+ bytes get the 16- and 64-bit length forms (§5.2)."""
        client = raw()
        conn = server.accepted()
        conn.send_text(b"a" * 300)
        conn.send_text(b"b" * 70000)
        assert client.recv_frame().payload == b"a" * 300
        assert client.recv_frame().payload == b"b" * 70000

    def test_slow_consumer_never_blocks_and_overflows_once(self, server, raw):
        """A client that never reads: send_text keeps accepting without blocking, the
        backlog grows, on_overflow fires exactly once, and close() returns at once."""
        conn, overflows = self._stalled(server, raw)
        frame = b"x" * 1000
        worst = 0.0
        # Yield between batches so the hub flushes until the kernel buffers are full
        # and the write watcher takes over.
        for _ in range(200):
            for _ in range(100):
                t = time.perf_counter()
                conn.send_text(frame)
                worst = max(worst, time.perf_counter() - t)
            gevent.sleep(0.001)
            if overflows and conn.backlog > 2 * MAX_BACKLOG:
                break
        assert len(overflows) == 1 and overflows[0] > MAX_BACKLOG
        assert conn.backlog > 2 * MAX_BACKLOG
        assert conn._writer is not None and conn._writer.active  # waiting for writability
        assert worst < 0.05
        t = time.perf_counter()
        conn.close(4007, "slow_consumer")
        assert time.perf_counter() - t < 0.05
        assert conn.closed and conn.close_code == 4007
        # The close frame can never be flushed: after close_timeout the socket is dropped.
        assert server.ended() is conn
        assert len(overflows) == 1

    def test_write_error_marks_connection_gone(self, server, raw):
        """If the peer is gone when we flush, the outbox is dropped and on_close is called."""
        client = raw()
        conn = server.accepted()
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # RST
        for _ in range(50):
            conn.send_text(b"into the void")
            gevent.sleep(0.01)
            if conn.closed:
                break
        assert conn.closed and conn.backlog == 0
        assert server.ended() is conn

    def test_abort_drops_without_close_frame(self, server, raw):
        """abort() drops the connection at once: the client sees no close frame."""
        client = raw()
        conn = server.accepted()
        conn.abort()
        assert conn.closed
        assert server.ended() is conn
        assert client.at_eof()


class TestUnmasking:
    """RFC 6455 §5.3: the masking transform, at C speed."""

    @pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 125, 2047, 2048, 2049, 65537])
    def test_matches_the_definition(self, n):
        """unmask() gives the bytes of §5.3's per-byte definition."""
        payload, mask = os.urandom(n), os.urandom(4)
        assert unmask(payload, mask) == bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    def test_is_fast(self):
        """1 MiB unmasks in well under the ~60 ms the per-byte loop needs."""
        payload, mask = os.urandom(1 << 20), os.urandom(4)
        t = time.perf_counter()
        unmask(payload, mask)
        assert time.perf_counter() - t < 0.02


class TestLightweight:
    """Issue 11: after the upgrade a connection is a watcher, not a parked greenlet."""

    def test_upgraded_connections_hold_no_greenlet(self, server, raw):
        """20 open, idle connections add no live greenlet (the handler greenlets return)."""
        import gc

        from greenlet import greenlet

        def live() -> int:
            gc.collect()
            return sum(1 for o in gc.get_objects() if isinstance(o, greenlet) and not o.dead)

        raw()
        server.accepted()
        gevent.sleep(0.05)
        before = live()
        clients = [raw() for _ in range(20)]
        for _ in clients:
            server.accepted()
        gevent.sleep(0.05)
        assert live() - before <= 1
        clients[0].send_frame(TEXT, b"still served")  # ... and they still work
        assert clients[0].recv_frame().payload == b"still served"


class TestFairness:
    """Issue 15: every frame kind counts; a ping flood cannot grow the outbox."""

    def test_pings_in_one_segment_are_all_answered(self, server, raw):
        """150 pings in one segment (within the budget) from a reading peer: 150 pongs,
        in order (RFC 6455 §5.5.2; Autobahn 2.10)."""
        client = raw()
        conn = server.accepted()
        client.sock.sendall(b"".join(RawClient.frame(PING, b"%d" % i) for i in range(150)))
        client.send_frame(TEXT, b"marker")
        pongs = []
        while (frame := client.recv_frame()).opcode == PONG:
            pongs.append(frame.payload)
        assert frame.payload == b"marker"
        assert pongs == [b"%d" % i for i in range(150)]
        assert conn.backlog == 0

    def test_over_budget_is_closed_4006(self, server, raw):
        """More frames than the budget allows in one second: close 4006, nothing served
        after it."""
        client = raw()
        conn = server.accepted()
        n = Handler.frame_budget + 10
        client.sock.sendall(b"".join(RawClient.frame(PONG, b"") for _ in range(n)))
        client.send_frame(TEXT, b"not served")
        assert client.recv_close() == (4006, "rate_limited")
        assert server.ended() is conn
        assert server.app.pongs <= Handler.frame_budget


class TestPeekedFirstRequest:
    """The first request's head read from one peek at the socket (Handler._serve_peeked),
    and pywsgi's reader for everything else: the client cannot tell which served it."""

    def test_pipelined_requests_after_a_peeked_one(self, server):
        """Two requests in one segment: the peek takes only the first head, the
        buffered reader serves the second on the same connection."""
        status, _, body = http_exchange(
            server.port,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        assert status == 200 and body.count(b"plain http") == 2

    def test_head_in_two_segments_upgrades(self, server):
        """A head whose end arrives later goes the reader's way and still gets its 101."""
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
            request = _upgrade_request(_good_headers(_key()))
            sock.sendall(request[:20])
            time.sleep(0.05)
            sock.sendall(request[20:])
            assert sock.recv(4096).startswith(b"HTTP/1.1 101 ")
        server.accepted()

    def test_head_longer_than_the_peek_upgrades(self, server, raw, monkeypatch):
        """A head over ``peek_bytes`` (many cookies) is read by the reader: 101 all the same."""
        monkeypatch.setattr(Handler, "peek_bytes", 64)
        client = raw()
        client.send_frame(TEXT, b"still here")
        assert client.recv_frame().payload == b"still here"

    def test_silent_client_is_closed_after_header_timeout(self, server):
        """A client that sends nothing is closed quietly (no response) after header_timeout."""
        with socket.create_connection(("127.0.0.1", server.port), timeout=3) as sock:
            start = time.monotonic()
            assert sock.recv(4096) == b""
            took = time.monotonic() - start
        assert Handler.header_timeout * 0.8 <= took < Handler.header_timeout + 1

    def test_malformed_peeked_head_gets_the_readers_answer(self, server):
        """A complete but malformed head is answered as the reader answers it (400)."""
        status, _, _ = http_exchange(server.port, b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n")
        assert status == 400


class TestRequestHead:
    """RFC 9112 request heads: the limits and the strict parser, from the socket."""

    def test_conflicting_content_length_is_400(self, server):
        """Two different Content-Length values: 400, never a second request (§6.3)."""
        status, _, _ = http_exchange(
            server.port,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc",
        )
        assert status == 400

    def test_head_over_max_header_bytes_is_431(self, server):
        """A request head larger than max_header_bytes: 431."""
        big = b"X-Pad: " + b"a" * Handler.max_header_bytes + b"\r\n"
        status, _, _ = http_exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
        assert status == 431

    def test_slow_head_is_dropped_after_header_timeout(self, server):
        """A head that never completes is answered 408 and closed after header_timeout."""
        start = time.monotonic()
        status, _, _ = http_exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert status == 408
        assert Handler.header_timeout * 0.8 <= time.monotonic() - start < Handler.header_timeout + 1

    def test_idle_keepalive_is_closed_after_keepalive_timeout(self, server):
        """After a response, an idle keep-alive connection is closed after keepalive_timeout."""
        with socket.create_connection(("127.0.0.1", server.port), timeout=3) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            start = time.monotonic()
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            assert data.startswith(b"HTTP/1.1 200")
            assert (
                Handler.keepalive_timeout * 0.8
                <= time.monotonic() - start
                < Handler.keepalive_timeout + 1
            )

    def test_body_that_ends_early_is_400_without_traceback(self, server):
        """A POST whose body stops short (the client shuts its side): 400, no traceback
        (the fixture checks the logs)."""
        with socket.create_connection(("127.0.0.1", server.port), timeout=3) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort")
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 400"), data

    def test_post_body_is_read(self, server):
        """A complete body reaches the app."""
        status, _, body = http_exchange(
            server.port,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        )
        assert (status, body) == (200, b"hello")


class TestTLS:
    """TLS: decrypted bytes the SSL layer holds are invisible to epoll; they must be read."""

    def test_bytes_held_by_the_ssl_layer_are_read(self, tmp_path, monkeypatch):
        """With a 10-byte read per event, a 900-byte message (one TLS record) is whole:
        after each read the transport reads again while the SSL object has pending bytes
        (epoll would never report them: the kernel buffer is already empty)."""
        import ssl

        import hubbub.transport
        from tests.e2e.test_e2e_tls import make_certificate

        monkeypatch.setattr(hubbub.transport, "READ_MAX", 10)
        cert, key = make_certificate(tmp_path)
        app = EchoApp()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # as server.py builds it
        context.load_cert_chain(cert, key)
        srv = WSGIServer(
            ("127.0.0.1", 0),
            app,
            handler_class=Handler,
            log=None,
            error_log=io.StringIO(),
            ssl_context=context,
            do_handshake_on_connect=False,
        )
        srv.start()
        try:
            client_ctx = ssl.create_default_context(cafile=cert)
            with connect(
                f"wss://127.0.0.1:{srv.server_port}/ws",
                ssl=client_ctx,
                server_hostname="localhost",
                max_size=None,
            ) as ws:
                ws.send("x" * 900)
                assert ws.recv(timeout=3) == "x" * 900
                ws.send("again")
                assert ws.recv(timeout=3) == "again"
        finally:
            srv.stop(timeout=1)
