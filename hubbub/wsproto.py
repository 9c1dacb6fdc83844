"""The WebSocket protocol (RFC 6455) after the handshake, with no I/O at all.

``Protocol`` takes the bytes a socket read (``feed(data)``) and hands out events one at a
time (``next_event(now)``, so the app can answer each before the next frame is parsed); whatever it wants written waits in ``data_to_send()``. It never touches a socket,
a clock or gevent, so every rule below is tested byte for byte in tests/unit/test_wsproto.py
(the way websockets' ``protocol.py`` and h11 are). ``hubbub/transport.py`` is the shell
that shuttles the bytes.

The rules, each decided as early as the bytes allow:

* §5.2 framing: reserved bits, unknown opcodes, unmasked client frames (§5.1), a 64-bit
  length with its top bit set, and lengths not in their shortest form (a 126/127 length
  escape for a length that fits the shorter form) are all 1002 - all decided from the
  header, before any payload is buffered;
* §5.5 control frames: final and at most 125 bytes; every ping is answered, except
  while the peer does not read (``coalesce_pongs``): then *one* pong is pending and a
  newer ping replaces it (§5.5.3), so a ping flood cannot grow the outbox;
* §5.4 fragmentation: no continuation without a start, no new message inside one;
* size: a message over ``max_message`` is 1009 as soon as a frame header announces it;
* §8.1 UTF-8: a text message that is not UTF-8 is 1007 - checked per fragment with an
  incremental decoder, and inside a frame whose payload is still arriving, so bad
  bytes fail as soon as they arrive (Autobahn 6.4.x "fail fast");
* §7.4 close codes and §5.5.1 close reasons (UTF-8, a 1-byte body is invalid);
* fairness (not in the RFC; issue 15): every frame of every kind is charged to a
  per-connection ``Budget`` of frames and bytes per time slice; over it the connection
  is closed with 4006 and nothing more it sent is served.

State (§7): ``OPEN`` → ``CLOSING`` (our close frame is queued; input is read only for
the peer's close frame) → ``CLOSED`` (both close frames exchanged, or EOF). After a
protocol violation the byte stream is out of sync: everything until EOF is discarded.

Over 500 lines on purpose: the whole RFC 6455 state machine, its limits and the budget
stay in one module with no I/O, so every rule is tested in one place.
"""

from __future__ import annotations

import codecs
import enum
import struct
from typing import NamedTuple

__all__ = [
    "Budget",
    "BinaryMessage",
    "CloseCode",
    "CloseReceived",
    "Event",
    "Opcode",
    "Ping",
    "Pong",
    "Protocol",
    "ProtocolError",
    "State",
    "TextMessage",
    "Violation",
    "close_payload",
    "frame_header",
    "is_valid_close_code",
    "text_frame",
    "unmask",
]


class State(enum.Enum):
    """RFC 6455 §7 connection states after the opening handshake."""

    OPEN = "open"  #: data flows both ways
    CLOSING = "closing"  #: our close frame is queued; waiting for the peer's
    CLOSED = "closed"  #: both close frames exchanged, or the stream ended


class Opcode(enum.IntEnum):
    """RFC 6455 §5.2 opcodes."""

    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(enum.IntEnum):
    """The close codes this module sends or reports (RFC 6455 §7.4.1, plus hubbub's)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    NO_STATUS = 1005  #: local only: the peer's close frame had no code
    ABNORMAL = 1006  #: local only: no close frame at all (EOF, reset)
    INVALID_DATA = 1007
    POLICY = 1008
    TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    RATE_LIMITED = 4006  #: hubbub: over the per-connection frame budget


_KNOWN_OPCODES = frozenset(int(op) for op in Opcode)
_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# RFC 6455 §7.4.1 and the IANA registry: the codes a peer may put on the wire.
# 1004 (reserved), 1005, 1006 and 1015 (local-only) must never be sent; 1016-2999 are
# reserved for future RFCs; 3000-4999 belong to libraries and applications.
_WIRE_CLOSE_CODES = frozenset(
    (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014)
)


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a close frame on the wire (RFC 6455 §7.4)."""
    return code in _WIRE_CLOSE_CODES or 3000 <= code <= 4999


# ------------------------------------------------------------------------------ events


class TextMessage(NamedTuple):
    """A complete text message (all fragments), decoded."""

    data: str


class BinaryMessage(NamedTuple):
    """A complete binary message (all fragments)."""

    data: bytes


class Ping(NamedTuple):
    """A ping arrived; its pong is already pending in ``data_to_send()``."""

    payload: bytes


class Pong(NamedTuple):
    """A pong arrived (solicited or not: §5.5.3 allows unsolicited ones)."""

    payload: bytes


class CloseReceived(NamedTuple):
    """The peer's close frame. ``code`` is 1005 when it carried none. If it started the
    handshake, the echo is already queued; either way the state is now CLOSED."""

    code: int
    reason: str


class Violation(NamedTuple):
    """The peer broke a rule; a close frame with ``code`` is queued and all further
    input is discarded."""

    code: int
    reason: str


Event = TextMessage | BinaryMessage | Ping | Pong | CloseReceived | Violation


class ProtocolError(Exception):
    """Internal: raised by the parser, turned into a ``Violation`` event."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


# ------------------------------------------------------------------------------ bytes


def frame_header(opcode: int, length: int) -> bytes:
    """The header of an unmasked, final server frame (RFC 6455 §5.2), shortest form."""
    if length < 126:
        return bytes((0x80 | opcode, length))
    if length < 0x10000:
        return struct.pack("!BBH", 0x80 | opcode, 126, length)
    return struct.pack("!BBQ", 0x80 | opcode, 127, length)


# Server frames are never masked (§5.1), so a header is 2 bytes for the short lengths
# every chat frame has: built once instead of on every fan-out send.
_TEXT_HEADERS = tuple(bytes((0x80 | _OP_TEXT, n)) for n in range(126))


def text_frame(payload: bytes) -> bytes:
    """One whole unmasked text frame: header and ``payload``. A fan-out hands the same
    ``bytes`` object to every member's connection, so the last one is kept: the frame
    is built once per message, not once per member (an identity test, and bytes never
    change while referenced)."""
    global _last_text
    last, frame = _last_text
    if last is payload:
        return frame
    n = len(payload)
    frame = (_TEXT_HEADERS[n] if n < 126 else frame_header(_OP_TEXT, n)) + payload
    if type(payload) is bytes:
        _last_text = (payload, frame)
    return frame


_last_text: tuple[bytes | None, bytes] = (None, b"")

# XOR lookup tables for bytes.translate: table k maps every byte b to b ^ k.
_XOR_TABLES = tuple(bytes(b ^ k for b in range(256)) for k in range(256))
# Below this size one big-int XOR beats four strided translates (less call overhead);
# measured crossover ~1 KiB.
_TRANSLATE_FROM = 1024


def unmask(payload: bytes, mask: bytes) -> bytes:
    """Apply the 4-byte client mask (RFC 6455 §5.3) at C speed: one big-integer XOR for
    small payloads, four ``bytes.translate`` calls on strided slices for large ones."""
    n = len(payload)
    if n < _TRANSLATE_FROM:
        if not n:
            return b""
        key = (mask * ((n >> 2) + 1))[:n]
        return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
            n, "little"
        )
    out = bytearray(payload)
    for i in range(4):
        out[i::4] = payload[i::4].translate(_XOR_TABLES[mask[i]])
    return bytes(out)


def close_payload(code: int, reason: str) -> tuple[bytes, str]:
    """The close frame body: 2-byte code + UTF-8 reason cut to 123 bytes (§5.5: control
    payloads are at most 125 bytes) without splitting a character. Returns the body and
    the reason as actually sent."""
    raw = reason.encode("utf-8")
    if len(raw) > 123:
        reason = raw[:123].decode("utf-8", "ignore")
        raw = reason.encode("utf-8")
    return struct.pack("!H", code) + raw, reason


# ------------------------------------------------------------------------------ budget


class Budget:
    """At most ``frames`` frames and ``nbytes`` bytes (headers included) per ``window``
    seconds, counted over fixed windows. 0 turns a limit off.

    Every frame counts - control, continuation, empty, unsolicited pong - because each
    costs the server the same parse however little it carries (issue 15: a flood of
    125-byte pings held a node at 100 % CPU while the message rate limit never saw it).
    Pure: the caller passes ``now``.
    """

    __slots__ = ("frames", "nbytes", "window", "_start", "_frames", "_bytes")

    def __init__(self, frames: int = 1000, nbytes: int = 8 << 20, window: float = 1.0) -> None:
        if frames < 0 or nbytes < 0 or window <= 0:
            raise ValueError("need frames >= 0, nbytes >= 0 and window > 0")
        self.frames = frames
        self.nbytes = nbytes
        self.window = window
        self._start = float("-inf")
        self._frames = 0
        self._bytes = 0

    def charge(self, nbytes: int, now: float) -> bool:
        """Count one frame of ``nbytes``; False once this window is over budget."""
        if now - self._start >= self.window:
            self._start = now
            self._frames = 0
            self._bytes = 0
        self._frames += 1
        self._bytes += nbytes
        return not (
            (self.frames and self._frames > self.frames)
            or (self.nbytes and self._bytes > self.nbytes)
        )


# ------------------------------------------------------------------------------ protocol

_UNPACK_H = struct.Struct("!H").unpack_from
_UNPACK_Q = struct.Struct("!Q").unpack_from
_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class Protocol:
    """The server side of one WebSocket connection, after the 101 response.

    ``receive_data(data, now)`` → list of events; ``data_to_send()`` → bytes to write;
    ``send_text`` / ``send_binary`` / ``send_ping`` / ``send_close`` queue frames.
    ``out_bytes`` is how many bytes are queued and not yet taken by ``data_to_send``.
    """

    # Thousands of these stay alive at once: no per-instance __dict__.
    __slots__ = (
        "max_message", "budget", "state", "close_code", "close_reason", "out_bytes",
        "coalesce_pongs", "_out", "_pong", "_buf", "_pos", "_in_sync", "_eof", "_probe", "_probed",
        "_msg_op", "_parts", "_total", "_decoder",
    )  # fmt: skip

    def __init__(self, max_message: int = 65536, budget: Budget | None = None) -> None:
        self.max_message = max_message
        self.budget = budget
        self.state = State.OPEN
        #: the code of the first close frame sent or received (1005: peer sent none;
        #: 1006: the stream ended without one); None while open
        self.close_code: int | None = None
        self.close_reason = ""
        self.out_bytes = 0
        self._out: list[bytes] = []
        #: set by the transport while the peer is not reading (its writes are blocked):
        #: then a ping's pong waits in one slot and a newer ping replaces it (§5.5.3),
        #: so a ping flood cannot grow the outbox. Otherwise every ping is answered.
        self.coalesce_pongs = False
        self._pong: bytes | None = None  # the one pending pong while coalescing
        self._buf = bytearray()
        self._pos = 0  # parsed up to here
        # UTF-8 check of a text frame still arriving: decoder state, payload bytes checked
        self._probe: codecs.IncrementalDecoder | None = None
        self._probed = 0
        self._in_sync = True  # at a frame boundary we can trust
        self._eof = False
        # the data message being reassembled (§5.4)
        self._msg_op: int | None = None
        self._parts: list[bytes] | list[str] = []
        self._total = 0
        self._decoder: codecs.IncrementalDecoder | None = None

    # ------------------------------------------------------------------ sending

    def send_text(self, payload: bytes) -> None:
        """Queue one text frame; ``payload`` is UTF-8 already. A no-op unless OPEN
        (§5.5.1: no data frame may follow a close frame)."""
        if self.state is not State.OPEN:
            return
        n = len(payload)
        self._out.append(_TEXT_HEADERS[n] if n < 126 else frame_header(_OP_TEXT, n))
        self._out.append(payload)
        self.out_bytes += (2 if n < 126 else 4 if n < 0x10000 else 10) + n

    def text_to_send(self, payload: bytes) -> bytes | None:
        """The bytes of one text frame for the caller to write at once, when nothing
        is queued before it (so order holds) and the state is OPEN; None otherwise:
        queue it with ``send_text``. The frame never enters the outbox."""
        if self.state is not State.OPEN or self._out or self._pong is not None:
            return None
        return text_frame(payload)

    def send_binary(self, payload: bytes) -> None:
        """Queue one binary frame (a no-op unless OPEN)."""
        if self.state is State.OPEN:
            self._queue(_OP_BINARY, payload)

    def send_ping(self, payload: bytes = b"") -> None:
        """Queue a ping (at most 125 bytes, §5.5; a no-op unless OPEN)."""
        if len(payload) > 125:
            raise ValueError("control frame payloads are at most 125 bytes (RFC 6455 §5.5)")
        if self.state is State.OPEN:
            self._queue(_OP_PING, payload)

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (§7.1.2): queue a close frame, state CLOSING.
        A no-op once a close frame was sent or received."""
        if not is_valid_close_code(code):
            raise ValueError(f"close code {code} may not be sent (RFC 6455 §7.4)")
        if self.state is State.OPEN:
            self._close(code, reason, State.CLOSING)

    def data_to_send(self) -> bytes:
        """Everything queued, coalesced into one buffer (b"" if nothing); the pending
        pong, if any, goes first."""
        out = self._out
        if self._pong is not None:
            pong, self._pong = self._pong, None
            out.insert(0, frame_header(_OP_PONG, len(pong)) + pong)
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.out_bytes = 0
        return data

    def _queue(self, opcode: int, payload: bytes) -> None:
        header = frame_header(opcode, len(payload))
        self._out.append(header + payload)
        self.out_bytes += len(header) + len(payload)

    def _close(self, code: int, reason: str, state: State) -> None:
        body, sent = close_payload(code, reason)
        if self._pong is not None:  # a ping that arrived before is still answered
            pong, self._pong = self._pong, None
            self._queue(_OP_PONG, pong)
        self._queue(_OP_CLOSE, body)
        self.close_code, self.close_reason, self.state = code, sent, state

    # ------------------------------------------------------------------ receiving

    def receive_eof(self) -> None:
        """The peer shut its write side (or the socket is gone): CLOSED; 1006 if no close
        frame was exchanged (§7.1.5)."""
        self._eof = True
        self._buf = bytearray()
        self._pos = 0
        if self.close_code is None:
            self.close_code = CloseCode.ABNORMAL
        self.state = State.CLOSED

    def feed(self, data: bytes) -> None:
        """Buffer bytes read from the socket; ``next_event`` parses them (h11's split:
        the app acts on each event before the next frame is parsed, so what it sends in
        answer to a message goes out before a close frame that a later, broken frame
        causes - RFC 6455 §7.1.7 "fail" after the valid messages' echoes)."""
        if self.state is State.CLOSED or not self._in_sync:
            return  # after the handshake, or out of sync: discarded (§7.1.1)
        self._buf += data

    def next_event(self, now: float = 0.0) -> Event | None:
        """The next event the buffered bytes complete, or None until more arrive.
        ``now`` (monotonic seconds) is only used for the budget."""
        buf = self._buf
        events: list[Event] = []
        try:
            while not events and self._in_sync and self.state is not State.CLOSED:
                end = self._parse_frame(buf, self._pos, now, events)
                if end < 0:
                    break
                self._pos = end
        except ProtocolError as error:
            self._in_sync = False
            self._buf = bytearray()
            self._pos = 0
            self._msg_op, self._parts, self._decoder = None, [], None
            if self.state is State.OPEN:
                self._close(error.code, error.reason, State.CLOSING)
            return Violation(error.code, error.reason)
        if events:
            return events[0]
        if self._pos:  # all complete frames consumed: drop them (once per read, not per frame)
            del buf[: self._pos]
            self._pos = 0
        return None

    def receive_data(self, data: bytes, now: float = 0.0) -> list[Event]:
        """``feed(data)``, then every event the buffer completes, in order: for callers
        that do not answer between events (tests, benchmarks)."""
        self.feed(data)
        events = []
        while (event := self.next_event(now)) is not None:
            events.append(event)
        return events

    def _parse_frame(self, buf: bytearray, pos: int, now: float, events: list[Event]) -> int:
        """Parse one frame at ``pos``; returns the position after it, or -1 if more bytes
        are needed. Raises ProtocolError."""
        have = len(buf) - pos
        if have < 2:
            return -1
        b0 = buf[pos]
        b1 = buf[pos + 1]
        op = b0 & 0x0F
        # §5.2: every check below is decided from the first two bytes, before any length
        # extension, mask or payload is buffered.
        if b0 & 0x70:
            raise ProtocolError(1002, "reserved bits set")
        if op not in _KNOWN_OPCODES:
            raise ProtocolError(1002, "unknown opcode")
        if not b1 & 0x80:
            raise ProtocolError(1002, "unmasked client frame")  # §5.1
        length = b1 & 0x7F
        fin = b0 & 0x80
        if op >= _OP_CLOSE:
            if not fin:
                raise ProtocolError(1002, "fragmented control frame")  # §5.5
            if length > 125:
                raise ProtocolError(1002, "control frame too long")  # §5.5
        elif op == _OP_CONT:
            if self._msg_op is None:
                raise ProtocolError(1002, "continuation without a start")  # §5.4
        elif self._msg_op is not None:
            raise ProtocolError(1002, "new data frame inside a fragmented message")
        head = 2
        if length == 126:
            if have < 4:
                return -1
            (length,) = _UNPACK_H(buf, pos + 2)
            head = 4
            if length < 126:
                raise ProtocolError(1002, "length not in its shortest form")  # §5.2
        elif length == 127:
            if have < 10:
                return -1
            (length,) = _UNPACK_Q(buf, pos + 2)
            head = 10
            if length >> 63:
                raise ProtocolError(1002, "64-bit length with the top bit set")  # §5.2
            if length < 0x10000:
                raise ProtocolError(1002, "length not in its shortest form")  # §5.2
        if op < _OP_CLOSE and self._total + length > self.max_message:
            # Refuse from the header: never buffer what we will not accept.
            raise ProtocolError(1009, "message too big")
        end = pos + head + 4 + length
        if len(buf) < end:
            if (op == _OP_TEXT or self._decoder is not None) and self.state is State.OPEN:
                self._probe_utf8(buf, pos + head, len(buf), op)
            return -1
        self._probe = None
        self._probed = 0
        budget = self.budget
        if budget is not None and not budget.charge(head + 4 + length, now):
            raise ProtocolError(CloseCode.RATE_LIMITED, "rate_limited")
        mask = bytes(buf[pos + head : pos + head + 4])
        payload = unmask(bytes(buf[pos + head + 4 : end]), mask) if length else b""

        if op >= _OP_CLOSE:
            self._control(op, payload, events)
        elif self.state is State.OPEN:
            self._data(op, fin, payload, events)
        # else: data after our close frame is read (for the peer's close) and dropped
        return end

    def _probe_utf8(self, buf: bytearray, mask_at: int, have: int, op: int) -> None:
        """Validate the part of a text frame's payload that has arrived, before the rest
        does (Autobahn 6.4.3-6.4.4: fail fast inside a frame). Each byte is checked once:
        ``_probe`` carries the decoder state from one partial read to the next."""
        start = mask_at + 4 + self._probed
        if have <= start:
            return
        if self._probe is None:
            self._probe = probe = _utf8_decoder()
            if op == _OP_CONT and self._decoder is not None:
                probe.setstate(self._decoder.getstate())
        mask = bytes(buf[mask_at : mask_at + 4])
        rot = self._probed & 3
        chunk = unmask(bytes(buf[start:have]), mask[rot:] + mask[:rot])
        self._probed += len(chunk)
        try:
            self._probe.decode(chunk, False)
        except UnicodeDecodeError:
            raise ProtocolError(1007, "invalid UTF-8") from None

    def _data(self, op: int, fin: int, payload: bytes, events: list[Event]) -> None:
        if op != _OP_CONT:  # the first frame of a message
            if fin:  # unfragmented: the common case, no decoder needed
                if op == _OP_TEXT:
                    try:
                        events.append(TextMessage(payload.decode("utf-8")))
                    except UnicodeDecodeError:
                        raise ProtocolError(1007, "invalid UTF-8") from None  # §8.1
                else:
                    events.append(BinaryMessage(payload))
                return
            self._msg_op = op
            self._parts = []
            self._total = 0
            self._decoder = _utf8_decoder() if op == _OP_TEXT else None
        self._total += len(payload)
        decoder = self._decoder
        if decoder is not None:
            try:
                # Fails at the first fragment that cannot start valid UTF-8, not at the
                # end of the message (Autobahn 6.4.x "fail fast").
                self._parts.append(decoder.decode(payload, bool(fin)))  # type: ignore[arg-type]
            except UnicodeDecodeError:
                raise ProtocolError(1007, "invalid UTF-8") from None
        else:
            self._parts.append(payload)  # type: ignore[arg-type]
        if fin:
            parts = self._parts
            if decoder is not None:
                events.append(TextMessage("".join(parts)))  # type: ignore[arg-type]
            else:
                events.append(BinaryMessage(b"".join(parts)))  # type: ignore[arg-type]
            self._msg_op, self._parts, self._total, self._decoder = None, [], 0, None

    def _control(self, op: int, payload: bytes, events: list[Event]) -> None:
        if op == _OP_PING:
            if self.state is State.OPEN:
                if self.coalesce_pongs or self._pong is not None:
                    # §5.5.3: "if an endpoint receives a Ping frame and has not yet sent
                    # Pong frame(s) in response to previous Ping frame(s), the endpoint
                    # MAY elect to send a Pong frame for only the most recently
                    # processed Ping frame."
                    self._pong = payload
                else:
                    self._queue(_OP_PONG, payload)
            events.append(Ping(payload))
        elif op == _OP_PONG:
            events.append(Pong(payload))
        else:
            self._peer_close(payload, events)

    def _peer_close(self, payload: bytes, events: list[Event]) -> None:
        """The peer's close frame (§5.5.1, §7.1.5)."""
        if not payload:
            code, reason = CloseCode.NO_STATUS, ""
        else:
            if len(payload) == 1:
                raise ProtocolError(1002, "close frame with a 1-byte payload")
            (code,) = _UNPACK_H(payload, 0)
            if not is_valid_close_code(code):
                raise ProtocolError(1002, "invalid close code")
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(1007, "invalid UTF-8 in close reason") from None
        if self.state is State.OPEN:
            # Echo the code (§5.5.1); a close without one is answered with 1000 and
            # reported as 1005 (§7.1.5).
            self._close(1000 if code == CloseCode.NO_STATUS else code, reason, State.CLOSED)
            self.close_code, self.close_reason = code, reason
        self.state = State.CLOSED
        self._buf = bytearray()
        self._pos = 0
        events.append(CloseReceived(int(code), reason))

    def __repr__(self) -> str:
        return f"<Protocol {self.state.name} close_code={self.close_code} out={self.out_bytes}>"
