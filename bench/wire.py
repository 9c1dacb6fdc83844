"""Client-side RFC 6455 for the load generator: pure functions, no sockets.

Every frame a client sends is masked (§5.3). The frames that never change (hello,
pong, the close reply) are masked once at import; the few that carry a timestamp
(say) are masked with one big-integer XOR, which costs about a microsecond. The
splitter walks server frames (never masked, §5.1) without copying more than the
payloads it is asked for.
"""

from __future__ import annotations

import json
import struct

__all__ = [
    "MASK",
    "masked",
    "masked_close",
    "upgrade_request",
    "split_frames",
    "parse_response",
    "HELLO",
    "PONG",
    "PING",
    "OP_TEXT",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
]

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA

# Any 4 bytes are a valid key for a server (§10.3 asks browsers for unpredictable
# keys, against cache poisoning through proxies; loopback has no proxy). A non-zero
# key keeps the server's unmasking honest.
MASK = b"\x5a\xc3\x17\xe9"

# Sec-WebSocket-Key: any 16 bytes in base64 (§4.1); the sample key of §1.3.
_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def masked(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final client frame: header, MASK, masked payload."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 0x10000:
        head = struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0xFF, n)
    if not n:
        return head + MASK
    key = (MASK * ((n >> 2) + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + MASK + body


def masked_close(code: int) -> bytes:
    """A client close frame carrying ``code`` (the echo of a server's close, §5.5.1)."""
    return masked(struct.pack("!H", code), OP_CLOSE)


def _text(frame: dict) -> bytes:
    return masked(json.dumps(frame, separators=(",", ":")).encode())


HELLO = _text({"type": "hello", "client": "bench"})
PONG = _text({"type": "pong"})
PING = _text({"type": "ping"})


def upgrade_request(host: str, port: int, path: str = "/ws") -> bytes:
    """The HTTP/1.1 upgrade request (§4.1), no extensions: no compression is offered."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def parse_response(buf: bytes) -> tuple[int, int] | None:
    """``(status, header length)`` once the response head is complete, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    line = buf[: buf.find(b"\r\n")]
    try:
        status = int(line.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = 0
    return status, end + 4


def split_frames(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete server frames in ``buf`` as ``(opcode, payload)``, and the leftover bytes.

    Chat frames are short, so the common header is 2 bytes; fragmentation is not
    expected from either server (both send whole messages) and is reported as the
    continuation opcode 0, which the caller counts as an error.
    """
    frames = []
    pos, n = 0, len(buf)
    while n - pos >= 2:
        length = buf[pos + 1] & 0x7F
        head = 2
        if length == 126:
            if n - pos < 4:
                break
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            head = 4
        elif length == 127:
            if n - pos < 10:
                break
            length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            head = 10
        end = pos + head + length
        if end > n:
            break
        frames.append((buf[pos] & 0x0F, buf[pos + head : end]))
        pos = end
    return frames, buf[pos:] if pos < n else b""
