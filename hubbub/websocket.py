"""The WebSocket edge: gevent-websocket's handler, hardened.

gevent-websocket 0.10.1 (2017, unmaintained) still does the job of plugging a WebSocket
upgrade into gevent's ``pywsgi``; everything past the 101 response is ours:

* ``HardenedHandler`` validates the upgrade without ever raising (a bad key is a 400, a
  missing or unsupported version a 426, never a 500 with a traceback), sets
  ``TCP_NODELAY``, and hands the WSGI app a ``Connection`` in
  ``environ["hubbub.connection"]``.
* ``Connection.receive()`` is a strict RFC 6455 frame reader (masking, reserved bits,
  opcodes, control-frame rules, fragmentation, UTF-8, a size limit decided from the
  header before any payload is read) with C-speed unmasking.
* ``Connection.send_text()`` / ``close()`` never block: frames go to an in-memory outbox
  that the hub flushes with non-blocking sends, coalescing everything queued meanwhile
  into one ``send``; a full kernel buffer arms a write watcher instead of parking a
  greenlet.

Threading model: the handler greenlet that runs the WSGI app is the only reader (it
calls ``receive()`` in a loop); any other greenlet of the same OS thread may call
``send_text()`` / ``close()`` / ``abort()``. No greenlet ever waits on the socket for
writing: all writes happen in hub callbacks (``loop.run_callback`` and an ``io``
watcher), so a slow peer cannot block anyone, and gevent's rule that two greenlets must
not wait on the same watcher cannot be broken.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import socket
import struct
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import gevent.event
import gevent.socket
import gevent.ssl
from gevent.pywsgi import WSGIHandler
from geventwebsocket.handler import WebSocketHandler

__all__ = ["Connection", "HardenedHandler"]

log = logging.getLogger(__name__)

# RFC 6455 §5.2 opcodes.
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_KNOWN_OPCODES = frozenset((OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG))

# RFC 6455 §7.4.1 and the IANA registry: the codes a peer may put on the wire.
# 1004 (reserved), 1005, 1006 and 1015 (local-only) must never be sent; 1016-2999 are
# reserved for future RFCs; 3000-4999 belong to libraries and applications.
_WIRE_CLOSE_CODES = frozenset(
    (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014)
)

CLOSE_NO_STATUS = 1005  # RFC 6455 §7.1.5: the peer's close frame carried no code
CLOSE_ABNORMAL = 1006  # RFC 6455 §7.1.5: no close frame at all (EOF, reset)

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3

# Server-to-client frames are never masked (§5.1), so a header is 2 bytes for the short
# lengths every chat frame has: build them once instead of on every fan-out send.
_TEXT_HEADERS = tuple(bytes((0x80 | OP_TEXT, n)) for n in range(126))


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a close frame on the wire (RFC 6455 §7.4)."""
    return code in _WIRE_CLOSE_CODES or 3000 <= code <= 4999


def _frame_header(opcode: int, length: int) -> bytes:
    """The header of an unmasked, final frame (RFC 6455 §5.2)."""
    if length < 126:
        return bytes((0x80 | opcode, length))
    if length < 0x10000:
        return struct.pack("!BBH", 0x80 | opcode, 126, length)
    return struct.pack("!BBQ", 0x80 | opcode, 127, length)


# XOR lookup tables for bytes.translate: table k maps every byte b to b ^ k.
_XOR_TABLES = tuple(bytes(b ^ k for b in range(256)) for k in range(256))
# Below this size one big-int XOR beats four strided translates (less call overhead);
# measured crossover ~1 KiB.
_TRANSLATE_FROM = 1024


def unmask(payload: bytes, mask: bytes) -> bytes:
    """Apply the 4-byte client mask (RFC 6455 §5.3) at C speed.

    Upstream XORs byte by byte in Python (~17 MiB/s); here small payloads go through one
    big-integer XOR and large ones through four ``bytes.translate`` calls on the strided
    slices ``payload[i::4]`` (each slice shares one mask byte).
    """
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


def _close_payload(code: int, reason: str) -> tuple[bytes, str]:
    """The close frame body: 2-byte code + UTF-8 reason cut to 123 bytes (§5.5: control
    payloads are at most 125 bytes) without splitting a character. Returns the body and
    the reason as actually sent."""
    raw = reason.encode("utf-8")
    if len(raw) > 123:
        reason = raw[:123].decode("utf-8", "ignore")
        raw = reason.encode("utf-8")
    return struct.pack("!H", code) + raw, reason


class _Violation(Exception):
    """The peer broke RFC 6455: we answer with a close frame carrying ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class _PeerClosed(Exception):
    """The peer's close frame arrived (and was answered)."""


def _shutdown(sock: Any, how: int) -> None:
    """``sock.shutdown(how)``, ignoring errors, and without gevent's ``SSLSocket.shutdown``
    (it drops the TLS state first, so the reader would go on reading raw ciphertext).
    gevent's plain socket ``shutdown`` also wakes a greenlet blocked reading it."""
    try:
        if isinstance(sock, gevent.socket.socket):
            gevent.socket.socket.shutdown(sock, how)
        else:
            sock.shutdown(how)
    except OSError:
        pass


def _make_sender(sock: Any) -> Callable[[memoryview], int]:
    """A ``send(buf) -> bytes written`` that never waits: 0 means "kernel buffer full".

    It runs in hub callbacks, where waiting is impossible; gevent's own
    ``SSLSocket.send(timeout=0.0)`` still waits on SSLWantWrite (it checks the socket's
    timeout, not the argument), so TLS goes straight to the SSL object.
    """
    if isinstance(sock, gevent.ssl.SSLSocket):
        want = (gevent.ssl.SSLWantWriteError, gevent.ssl.SSLWantReadError)

        def send_tls(buf: memoryview) -> int:
            try:
                return sock._sslobj.write(buf)
            except want:
                return 0

        return send_tls

    raw = getattr(sock, "_sock", sock)  # the real non-blocking socket under gevent's

    def send_plain(buf: memoryview) -> int:
        try:
            return raw.send(buf)
        except (BlockingIOError, InterruptedError):
            return 0

    return send_plain


class Connection:
    """One upgraded WebSocket, as the app and the actors see it.

    Created by ``HardenedHandler``; the app finds it in ``environ["hubbub.connection"]``.
    ``receive()`` belongs to the handler greenlet; ``send_text()``, ``close()`` and
    ``abort()`` may be called from any greenlet of the same OS thread and never block.
    """

    # Thousands of these stay alive at once: no per-instance __dict__.
    __slots__ = (
        "remote_addr", "close_code", "close_reason", "on_message", "on_pong", "on_overflow", "on_close",
        "max_message", "max_backlog", "close_timeout",
        "_sock", "_read", "_read1", "_send", "_loop",
        "_chunks", "_buf", "_backlog", "_flush_pending", "_watcher", "_overflowed",
        "_close_queued", "_shut_wr", "_drained", "_timer",
        "_gone", "_peer_done", "_in_sync", "_done",
    )  # fmt: skip

    remote_addr: str
    close_code: int | None
    close_reason: str
    on_message: Callable[[str | bytes], None] | None
    on_pong: Callable[[], None] | None
    on_overflow: Callable[[], None] | None
    on_close: Callable[[int | None], None] | None

    def __init__(
        self,
        sock: Any,
        rfile: Any,
        remote_addr: str,
        *,
        max_message: int = 65536,
        max_backlog: int = 1048576,
        close_timeout: float = 1.0,
    ) -> None:
        self.remote_addr = remote_addr
        self.close_code = None
        self.close_reason = ""
        self.on_message = None
        self.on_pong = None
        self.on_overflow = None
        self.on_close = None
        self.max_message = max_message
        self.max_backlog = max_backlog
        self.close_timeout = close_timeout

        self._sock = sock
        self._read = rfile.read
        self._read1 = rfile.read1
        self._send = _make_sender(sock)
        self._loop = gevent.get_hub().loop

        # Outbound state. ``_chunks`` holds frames queued since the last flush;
        # ``_buf`` the unsent tail of the buffer the last flush started on.
        self._chunks: list[bytes] = []
        self._buf: memoryview | None = None
        self._backlog = 0
        self._flush_pending = False  # a run_callback or the write watcher is armed
        self._watcher: Any = None
        self._overflowed = False
        self._close_queued = False  # our close frame is in the outbox (or sent)
        self._shut_wr = False
        self._drained = gevent.event.Event()  # outbox empty after the close frame, or gone
        self._timer: Any = None

        # Inbound / lifecycle state.
        self._gone = False  # socket failed, EOF, aborted or released
        self._peer_done = False  # the peer's close frame or EOF was seen
        self._in_sync = True  # the byte stream is still at a frame boundary
        self._done = False  # receive() has returned its final None

    # ------------------------------------------------------------------ public API

    @property
    def closed(self) -> bool:
        """A close frame was sent (queued) or received, or the socket is gone."""
        return self.close_code is not None or self._gone

    @property
    def backlog(self) -> int:
        """Bytes accepted by send_text/close but not yet written to the kernel."""
        return self._backlog

    def receive(self) -> str | bytes | None:
        """The next complete data message: ``str`` for text, ``bytes`` for binary.

        ``None`` once the connection is over (close handshake, protocol error answered
        with a close frame, EOF, reset, abort); every later call returns ``None`` at once.
        Control frames are handled here: pings answered, pongs reported to ``on_pong``.
        """
        if self._done:
            return None
        # A socket that always has data never blocks, so never yields to the hub: give
        # the other greenlets a turn on every message (one busy client must not starve
        # the rest).
        gevent.sleep(0)
        try:
            if self._gone:
                pass
            elif self.close_code is not None:
                self._drain_until_peer_close()
            else:
                return self._read_message()
        except _Violation as violation:
            self._in_sync = False
            self._queue_close(violation.code, violation.reason)
        except _PeerClosed:
            pass
        except EOFError:
            self._eof()
        except (OSError, ValueError):
            # ValueError: the buffered reader was closed under us (handler teardown).
            self._lost()
        self._done = True
        return None

    def send_text(self, payload: bytes) -> None:
        """Queue one text frame; ``payload`` is already UTF-8. Never blocks.

        After ``close()`` (or once the socket is gone) this is a silent no-op: RFC 6455
        §5.5.1 forbids data frames after a close frame.
        """
        if not isinstance(payload, (bytes, bytearray)):
            # Fail here, in the caller, not later in a hub callback.
            raise TypeError(f"send_text needs UTF-8 bytes, not {type(payload).__name__}")
        if self.close_code is not None or self._gone:
            return
        n = len(payload)
        header = _TEXT_HEADERS[n] if n < 126 else _frame_header(OP_TEXT, n)
        self._chunks.append(header)
        self._chunks.append(payload)
        self._backlog += len(header) + n
        if not self._flush_pending:
            self._flush_pending = True
            # Deferred, so every frame queued before this greenlet yields leaves in one send.
            self._loop.run_callback(self._flush)
        # Over the limit while the kernel is already full (a flush is waiting for the
        # socket to become writable): the peer does not read.  Without a blocked flush,
        # the next flush decides (a 1 MiB `joined` history to a fast reader is fine);
        # the x8 bound keeps even that burst finite.
        backlog = self._backlog
        if backlog > self.max_backlog and (self._buf is not None or backlog > 8 * self.max_backlog):
            self._overflow()

    def _overflow(self) -> None:
        if not self._overflowed:
            self._overflowed = True
            if self.on_overflow is not None:
                self.on_overflow()

    def send(self, message: str | bytes, binary: bool | None = None) -> None:
        """Compatibility with gevent-websocket's ``WebSocket.send`` (``wsgi.websocket``)."""
        if binary is None:
            binary = not isinstance(message, str)
        if isinstance(message, str):
            message = message.encode("utf-8")
        if binary:
            if self.close_code is None:
                self._queue_frame(OP_BINARY, bytes(message))
        else:
            self.send_text(message)

    def close(self, code: int, reason: str = "") -> None:
        """Queue a close frame after everything already queued; never blocks.

        Once it is written the write side is shut down, so the peer sees the close frame
        and then EOF. The reader keeps discarding input until the peer's close frame,
        EOF or ``close_timeout``; after that the TCP connection is dropped. A no-op if a
        close frame was already sent or received.
        """
        if not is_valid_close_code(code):
            raise ValueError(f"close code {code} may not be sent (RFC 6455 §7.4)")
        self._queue_close(code, reason)

    def abort(self) -> None:
        """Drop the TCP connection now: no close frame, unsent data discarded (RST)."""
        if self._gone:
            return
        if self.close_code is None:
            self.close_code = CLOSE_ABNORMAL
        self._peer_done = True  # we will not wait for the peer any more
        self._mark_gone()
        sock = self._sock
        try:
            # Linger 0: the close() in the handler's teardown sends RST instead of
            # waiting for the peer to read what the kernel still holds.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        # Wakes the reader greenlet if it is blocked in a read.
        _shutdown(sock, socket.SHUT_RDWR)

    # ------------------------------------------------------------------ reading

    def _read_exact(self, n: int) -> bytes:
        data = self._read(n)
        if len(data) != n:
            raise EOFError("connection closed mid-frame")
        return data

    def _read_message(self) -> str | bytes:
        """Read frames until one data message is complete (RFC 6455 §5.4 reassembly)."""
        read_exact = self._read_exact
        opcode = None  # the opcode of the message being reassembled
        parts: list[bytes] = []
        total = 0
        while True:
            b0, b1 = read_exact(2)
            op = b0 & 0x0F
            # §5.2: every check below is decided from the first two bytes, before any
            # length extension, mask or payload is read.
            if b0 & 0x70:
                raise _Violation(1002, "reserved bits set")
            if op not in _KNOWN_OPCODES:
                raise _Violation(1002, "unknown opcode")
            if not b1 & 0x80:
                raise _Violation(1002, "unmasked client frame")  # §5.1
            length = b1 & 0x7F
            if op >= OP_CLOSE:
                if not b0 & 0x80:
                    raise _Violation(1002, "fragmented control frame")  # §5.5
                if length > 125:
                    raise _Violation(1002, "control frame too long")  # §5.5
            elif op == OP_CONT:
                if opcode is None:
                    raise _Violation(1002, "continuation without a start")  # §5.4
            elif opcode is not None:
                raise _Violation(1002, "new data frame inside a fragmented message")
            if length == 126:
                (length,) = struct.unpack("!H", read_exact(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", read_exact(8))
                if length >> 63:
                    raise _Violation(1002, "64-bit length with the top bit set")  # §5.2
            if op < OP_CLOSE and total + length > self.max_message:
                # Refuse from the header: never read (or buffer) what we will not accept.
                raise _Violation(1009, "message too big")
            mask = read_exact(4)
            payload = unmask(read_exact(length), mask) if length else b""

            if op >= OP_CLOSE:
                self._control(op, payload)
                continue
            if op != OP_CONT:
                opcode = op
            parts.append(payload)
            total += length
            if b0 & 0x80:
                break

        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if opcode == OP_TEXT:
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                raise _Violation(1007, "invalid UTF-8") from None  # §8.1
        return data

    def _control(self, op: int, payload: bytes) -> None:
        if op == OP_PING:
            # §5.5.2: a pong with the same payload, through the outbox (so it can neither
            # block the reader nor interleave with a half-written frame). None after our
            # close frame: nothing may follow it.
            if self.close_code is None:
                self._queue_frame(OP_PONG, payload)
        elif op == OP_PONG:
            callback = self.on_pong
            if callback is not None:
                try:
                    callback()
                except Exception:
                    # The reader must survive the owner's bugs (e.g. a dead actor).
                    log.exception("on_pong callback failed")
        else:
            self._peer_close(payload)

    def _peer_close(self, payload: bytes) -> None:
        """The peer's close frame (RFC 6455 §5.5.1, §7.1.5)."""
        self._peer_done = True
        if self.close_code is not None:  # the answer to our own close frame
            raise _PeerClosed
        if not payload:
            # No status code: echo a normal closure; internally the code is 1005.
            self._queue_close(1000, "")
            self.close_code = CLOSE_NO_STATUS
            raise _PeerClosed
        if len(payload) == 1:
            raise _Violation(1002, "close frame with a 1-byte payload")
        (code,) = struct.unpack("!H", payload[:2])
        if not is_valid_close_code(code):
            raise _Violation(1002, "invalid close code")
        try:
            reason = payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise _Violation(1007, "invalid UTF-8 in close reason") from None
        self._queue_close(code, reason)
        raise _PeerClosed

    def _drain_until_peer_close(self) -> None:
        """After our close frame: discard input until the peer's close frame or EOF.

        ``close_timeout`` is enforced by the timer armed in ``_queue_close`` (it aborts
        the socket, which turns the blocked read into EOF). Raises EOFError at EOF.
        """
        if self._in_sync:
            try:
                while True:
                    self._read_message()  # data messages after our close frame are dropped
            except _PeerClosed:
                return
            except _Violation:
                self._in_sync = False  # a broken peer: fall through to raw draining
        # Frame boundaries are lost (protocol error): discard bytes until EOF.
        while self._read1(65536):
            pass
        raise EOFError

    # ------------------------------------------------------------------ writing

    def _queue_frame(self, opcode: int, payload: bytes) -> None:
        if self._gone:
            return
        header = _frame_header(opcode, len(payload))
        self._chunks.append(header + payload)
        self._backlog += len(header) + len(payload)
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.run_callback(self._flush)

    def _queue_close(self, code: int, reason: str) -> None:
        if self.close_code is not None or self._gone:
            return
        body, sent_reason = _close_payload(code, reason)
        self.close_code = code
        self.close_reason = sent_reason
        self._queue_frame(OP_CLOSE, body)
        self._close_queued = True
        # Bound the whole goodbye: flushing the close frame and hearing back from the
        # peer. Without it a peer that stops reading and writing would pin the handler
        # greenlet (blocked in a read) and the socket forever.
        self._timer = self._loop.timer(self.close_timeout, ref=False)
        self._timer.start(self._on_close_timeout)

    def _on_close_timeout(self) -> None:
        if not (self._peer_done and self._drained.is_set()):
            self.abort()

    def _flush(self) -> None:
        """Write as much of the outbox as the kernel takes, without ever waiting.

        Runs in the hub (a run_callback or the write watcher), so it must not raise.
        """
        if self._gone:
            return
        try:
            send = self._send
            while True:
                buf = self._buf
                if buf is None:
                    chunks = self._chunks
                    if not chunks:
                        break
                    # Coalesce: everything queued since the last flush in one syscall.
                    buf = memoryview(chunks[0] if len(chunks) == 1 else b"".join(chunks))
                    chunks.clear()
                sent = send(buf)
                self._backlog -= sent
                if sent < len(buf):
                    self._buf = buf[sent:]
                    self._arm_watcher()
                    if self._backlog > self.max_backlog:
                        self._overflow()  # the kernel is full and the rest is over the limit
                    return
                self._buf = None
            self._flush_pending = False
            if self._close_queued and not self._shut_wr:
                self._shut_wr = True
                # §7.1.1: the peer sees our close frame, then EOF.
                _shutdown(self._sock, socket.SHUT_WR)
            if self._close_queued:
                self._drained.set()
        except Exception as exc:
            if not isinstance(exc, OSError):
                log.exception("flush failed")
            self._lost()

    def _arm_watcher(self) -> None:
        watcher = self._watcher
        if watcher is None:
            watcher = self._watcher = self._loop.io(self._sock.fileno(), 2, ref=False)  # 2 = write
        if not watcher.active:
            watcher.start(self._on_writable)

    def _on_writable(self) -> None:
        self._watcher.stop()
        self._flush()

    # ------------------------------------------------------------------ teardown

    def _mark_gone(self) -> None:
        self._gone = True
        self._chunks.clear()
        self._buf = None
        self._backlog = 0
        self._flush_pending = True  # nothing may schedule another flush
        if self._watcher is not None:
            self._watcher.stop()
        self._drained.set()

    def _eof(self) -> None:
        """The peer shut its write side."""
        self._peer_done = True
        if self.close_code is None:
            self._lost()
        # Else our close frame may still be on its way: _finish waits for it (bounded by
        # the close timer), since a half-closed peer can still read.

    def _lost(self) -> None:
        """EOF, reset or write error: the socket is gone (RFC 6455 §7.1.5: code 1006)."""
        self._peer_done = True
        if self.close_code is None:
            self.close_code = CLOSE_ABNORMAL
        if not self._gone:
            self._mark_gone()
            # Wake the reader if it is blocked on a socket we can no longer use.
            _shutdown(self._sock, socket.SHUT_RDWR)

    def _finish(self, failed: BaseException | None) -> None:
        """Called by the handler when the app returns: complete the close handshake
        (bounded by close_timeout), then release the watchers."""
        try:
            if isinstance(failed, gevent.GreenletExit):
                self.abort()  # the server is killing its handlers: no more waiting
            elif not self.closed:
                self._queue_close(1000 if failed is None else 1011, "")
            if not self._done:
                self.receive()  # discards until the peer's close frame / EOF / timeout
            elif not self._peer_done and not self._gone:
                try:
                    self._drain_until_peer_close()
                except EOFError:
                    self._eof()
            self._drained.wait()  # the close frame reached the kernel, or we gave up
        except (OSError, EOFError, ValueError):
            pass
        finally:
            self._release()

    def _release(self) -> None:
        self._done = True
        if not self._gone:
            self._mark_gone()
        if self._timer is not None:
            self._timer.stop()
            self._timer.close()
            self._timer = None
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.close()
            self._watcher = None

    def __repr__(self) -> str:
        state = "open" if not self.closed else f"closed {self.close_code}"
        return f"<Connection {self.remote_addr} {state} backlog={self._backlog}>"


def _ignore_start_response(
    status: str, headers: Any, exc_info: Any = None
) -> Callable[[bytes], None]:
    """After a 101 the HTTP response is over: whatever the app "responds" is ignored."""
    return lambda data: None


class HardenedHandler(WebSocketHandler):
    """gevent-websocket's handler with a strict upgrade and a hardened connection.

    Configure by subclassing, e.g.
    ``type("H", (HardenedHandler,), {"max_message": 4096})``, and pass it as
    ``WSGIServer(..., handler_class=H)``. Non-upgrade requests go to the WSGI app
    unchanged; upgraded ones call the app with ``environ["hubbub.connection"]`` set.
    """

    max_message: int = 65536
    max_backlog: int = 1048576
    close_timeout: float = 1.0

    ws_connection: Connection | None = None
    SUPPORTED_VERSIONS = ("13",)

    # pywsgi reads through a BufferedReader with io.DEFAULT_BUFFER_SIZE (8 KiB), kept for
    # the whole life of the connection: the largest single item of a logged-in user's
    # memory (tracemalloc, 1,000 users).  Chat frames are small and a bigger read goes
    # around the buffer anyway, so 1 KiB costs nothing in speed.
    read_buffer: int = 1024

    def __init__(self, sock: Any, address: Any, server: Any, rfile: Any = None) -> None:
        if rfile is None:
            rfile = sock.makefile("rb", self.read_buffer)
        super().__init__(sock, address, server, rfile)

    def check_upgrade(self, environ: dict[str, Any]) -> str | None:
        """Hook: return an HTTP status (e.g. ``"403 Forbidden"``) to refuse a valid
        upgrade before the 101 is sent (origin checks, connection limits), or None."""
        return None

    #: Paths where an upgrade is accepted (None: any path).  Elsewhere: 404.
    ws_paths: frozenset[str] | None = frozenset({"/ws"})

    def handle(self) -> None:
        # gevent leaves Nagle on: every small frame of a fan-out would wait for the
        # previous one's ACK (~3.5x slower fan-out measured).
        try:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass  # not TCP (a Unix socket)
        try:
            super().handle()
        except OSError as exc:
            # gevent answers a malformed request with a bare sendall; a client that
            # already reset the connection would otherwise print a traceback per request.
            log.info("connection from %s dropped: %s", self.client_address, exc)

    def _handle_client_error(self, ex: BaseException) -> tuple[str, bytes]:
        # gevent prints a traceback for any client error that is not a ValueError (e.g.
        # more than 100 headers): bad input is a 400 and a log line, never a traceback.
        log.info("bad request from %s: %s", self.client_address, str(ex) or type(ex).__name__)
        return ("400", b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")

    @property
    def logger(self) -> logging.Logger:  # upstream installs its own logger on the server
        return log

    def log_request(self) -> None:
        # gevent's access log (server.log, configurable), minus the 101 line that would
        # only be written when the WebSocket session ends.
        if self.code != 101:
            WSGIHandler.log_request(self)

    def run_application(self) -> None:
        result = self.upgrade_websocket()
        if self.ws_connection is not None:
            self.write(b"")  # sends the 101 response headers
            self.run_websocket()
        elif self.status:  # the upgrade was refused: send the 4xx/5xx
            self.result = result or []
            try:
                self.process_result()
            finally:
                self.result = None
        else:  # not an upgrade request: a plain WSGI call
            WSGIHandler.run_application(self)

    def _refuse(
        self, status: str, message: str, headers: Iterable[tuple[str, str]] = ()
    ) -> list[bytes]:
        log.info(
            "WebSocket upgrade refused (from %s): %s: %s", self.client_address, status, message
        )
        self.start_response(
            status,
            [*headers, ("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close")],
        )
        return [message.encode("utf-8")]

    def upgrade_websocket(self) -> list[bytes] | None:
        """Validate the upgrade (RFC 6455 §4.2.1). Returns the body of a refusal, or
        None (upgraded, or not an upgrade request: then ``self.status`` is unset)."""
        environ = self.environ
        if environ.get("REQUEST_METHOD", "") != "GET":
            return None
        if environ.get("HTTP_UPGRADE", "").strip().lower() != "websocket":
            return None
        tokens = {t.strip() for t in environ.get("HTTP_CONNECTION", "").lower().split(",")}
        if "upgrade" not in tokens:
            return None
        if self.ws_paths is not None and environ.get("PATH_INFO") not in self.ws_paths:
            # An upgrade anywhere else would hand a socket to a route that cannot speak it.
            return self._refuse("404 Not Found", "no WebSocket endpoint at this path")
        if self.request_version != "HTTP/1.1":
            return self._refuse("400 Bad Request", "WebSocket upgrade needs HTTP/1.1")
        if environ.get("CONTENT_LENGTH", "0") not in ("", "0") or environ.get(
            "HTTP_TRANSFER_ENCODING"
        ):
            # A body would be read as frames (or discarded after the session).
            return self._refuse("400 Bad Request", "WebSocket upgrade must not have a body")
        version = environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip()
        if version != "13":
            # §4.4: answer with the versions we speak.
            return self._refuse(
                "426 Upgrade Required",
                "unsupported Sec-WebSocket-Version",
                [("Sec-WebSocket-Version", "13")],
            )
        key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
        try:
            # Upstream catches TypeError, but b64decode raises binascii.Error (and a
            # non-ASCII key raises UnicodeEncodeError): both are ValueErrors.
            decoded = base64.b64decode(key.encode("ascii"), validate=True)
        except (ValueError, binascii.Error):
            decoded = b""
        if len(decoded) != 16:
            return self._refuse("400 Bad Request", "missing or invalid Sec-WebSocket-Key")
        refusal = self.check_upgrade(environ)
        if refusal:
            return self._refuse(refusal, "upgrade refused")
        return self.upgrade_connection()

    def upgrade_connection(self) -> None:
        """Accept: create the Connection and start the 101 response."""
        key = self.environ["HTTP_SEC_WEBSOCKET_KEY"].strip()
        address = self.client_address
        remote_addr = address[0] if isinstance(address, tuple) else str(address or "")
        connection = Connection(
            self.socket,
            self.rfile,
            remote_addr,
            max_message=self.max_message,
            max_backlog=self.max_backlog,
            close_timeout=self.close_timeout,
        )
        self.ws_connection = connection
        # ``wsgi.websocket`` must be set before start_response: upstream's
        # _prepare_response keys the 101 handling (no Content-Length, close after) on it.
        self.environ.update(
            {
                "hubbub.connection": connection,
                "wsgi.websocket": connection,
                "wsgi.websocket_version": "13",
            }
        )
        accept = base64.b64encode(hashlib.sha1((key + _GUID).encode("ascii")).digest()).decode(
            "ascii"
        )
        self.start_response(
            "101 Switching Protocols",
            [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept)],
        )

    def run_websocket(self) -> None:
        """Run the app (the reader) for the upgraded connection; close cleanly after."""
        connection = self.ws_connection
        assert connection is not None
        failed: BaseException | None = None
        try:
            result = self.application(self.environ, _ignore_start_response)
            try:
                for _ in result:
                    pass
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:
            failed = exc  # 1011 (internal error) to the peer; the error goes on to gevent
            raise
        finally:
            connection._finish(failed)
            failed = None
            self.environ["wsgi.websocket"] = None
            self.ws_connection = None
