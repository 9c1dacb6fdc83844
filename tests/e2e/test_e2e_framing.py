"""RFC 6455 framing errors against the real server: the hardening of gevent-websocket holds.

The `websockets` client refuses to send broken frames, so these tests speak raw
sockets (tests/support/e2e.py: ``raw_upgrade``, ``frame``, ``read_close``).
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from ..support.e2e import Client, frame, raw_upgrade, read_close

pytestmark = pytest.mark.e2e

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


@pytest.fixture(scope="module")
def server():
    from ..support.e2e import Server

    with Server("--max-message", "1024") as srv:
        yield srv


@pytest.fixture
def connected(server):
    """Factory: a raw socket, upgraded, that already said hello; all closed at teardown."""
    socks: list[socket.socket] = []

    def open_one(headers: dict[str, str] | None = None, hello: bool = True) -> Any:
        sock, response = raw_upgrade(server, headers=headers)
        socks.append(sock)
        if not hello:
            return response
        assert response.startswith(b"HTTP/1.1 101")
        sock.sendall(frame(TEXT, b'{"type":"hello"}'))
        return sock

    yield open_one
    for sock in socks:
        sock.close()


class TestCloseCodes:
    """docs/protocol.md: 1002 protocol error, 1007 invalid UTF-8, 1009 too big."""

    @pytest.mark.parametrize(
        "data",
        [
            frame(TEXT, b'{"type":"ping"}', mask=False),  # unmasked client frame (§5.1)
            frame(TEXT, b"{}", rsv=0x40),  # reserved bit without an extension (§5.2)
            frame(0x3, b"x"),  # reserved opcode
            frame(PING, b"x", fin=False),  # fragmented control frame (§5.5)
            frame(0x0, b"x"),  # continuation with nothing to continue
        ],
    )
    def test_protocol_errors_close_1002(self, server, connected, data):
        """Each framing violation → close 1002."""
        sock = connected()
        sock.sendall(data)
        assert read_close(sock)[0] == 1002

    def test_invalid_utf8_closes_1007(self, server, connected):
        """A text frame that is not UTF-8 → close 1007."""
        sock = connected()
        sock.sendall(frame(TEXT, b'{"type":"\xff"}'))
        assert read_close(sock)[0] == 1007

    def test_huge_header_closes_1009_before_the_payload(self, server, connected):
        """A header claiming 2^40 bytes → 1009 at once, without waiting for the payload."""
        sock = connected()
        start = time.monotonic()
        sock.sendall(frame(TEXT, b"", length=2**40)[:14])
        assert read_close(sock)[0] == 1009 and time.monotonic() - start < 2

    def test_message_over_max_message_closes_1009(self, server, connected):
        """A 2 KiB message with --max-message 1024 → 1009; a 1000-byte one is fine."""
        with Client(server) as ok:
            ok.login("framing-ok")
            ok.send({"type": "ping", "pad": "x" * 900})
            ok.expect("pong")
        sock = connected()
        sock.sendall(frame(TEXT, b'{"type":"ping","pad":"' + b"x" * 2048 + b'"}'))
        assert read_close(sock)[0] == 1009


class TestControlFrames:
    def test_ping_frame_gets_pong_frame(self, server, connected):
        """A WebSocket ping frame → a pong frame with the same payload."""
        sock = connected()
        sock.settimeout(3)
        sock.sendall(frame(PING, b"are-you-there"))
        buf = b""
        while b"are-you-there" not in buf:
            buf += sock.recv(4096)
        i = buf.index(b"are-you-there")
        assert buf[i - 2] == 0x80 | PONG and buf[i - 1] == len(b"are-you-there")

    def test_fragmented_message_with_interleaved_ping(self, server, connected):
        """A text message split in fragments around a ping frame is reassembled."""
        sock = connected()
        sock.sendall(
            frame(TEXT, b'{"type":', fin=False) + frame(PING, b"p") + frame(0x0, b'"ping"}')
        )
        sock.settimeout(3)
        buf = b""
        while b'"pong"' not in buf:
            buf += sock.recv(4096)

    def test_close_frame_is_echoed(self, server, connected):
        """The client's close frame (1000) is answered with a close frame."""
        sock = connected()
        sock.sendall(frame(CLOSE, (1000).to_bytes(2, "big") + b"done"))
        assert read_close(sock)[0] == 1000


class TestUpgrades:
    """Malformed upgrades get 4xx, never a stack trace."""

    @pytest.mark.parametrize(
        "headers,status",
        [
            ({"Sec-WebSocket-Key": "not base64!"}, b"400"),
            ({"Sec-WebSocket-Key": ""}, b"400"),
            ({"Sec-WebSocket-Version": "8"}, b"426"),
        ],
    )
    def test_bad_upgrade(self, connected, headers, status):
        """Bad key or version → 4xx status line."""
        response = connected(headers, hello=False)
        assert response.split(b" ")[1] == status and b"Traceback" not in response
