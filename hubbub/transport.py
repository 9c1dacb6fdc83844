"""The WebSocket edge's gevent shell: the HTTP upgrade, then bytes in and out.

``Handler`` (a ``gevent.pywsgi.WSGIHandler``) reads requests with a small strict parser
(``hubbub/httphead.py``, no ``email`` package), enforces the header and keep-alive time
limits, validates an upgrade (RFC 6455 §4.2.1), writes the 101 itself, hands the app a
``Connection`` in ``environ["hubbub.connection"]`` and *returns*: the handler greenlet,
its environ, headers and buffered reader are gone once the socket is upgraded.
``Handler.upgrade_at_once`` does the same without a greenlet when the whole request is
already there (the accept gate calls it in gevent's accept loop: most logins), and the
handler reads a first request that arrives whole from one peek (``_serve_peeked``).

``Connection`` shuttles bytes between the socket and the Sans-I/O ``hubbub.wsproto.Protocol``:

* reading: a libev io watcher calls ``_on_readable`` in the hub; it does one bounded
  non-blocking ``recv`` per event, feeds the protocol and calls the app's callbacks
  (``on_message``, ``on_pong``, ``on_overflow``, ``on_close``). An idle connection holds
  no greenlet and no parked stack: a watcher and two small objects.
* writing: frames go to the protocol's outbox; a hub callback flushes everything queued
  meanwhile in one non-blocking ``send``; a full kernel buffer arms a write watcher.
  ``send_text_now`` writes at once instead, with what is queued before it (a room's
  fan-out with nothing else in its mailbox, a sender's ``ack``).
  Nothing ever waits on the socket, so a slow peer cannot block anyone.
* fairness: the protocol charges every frame to a per-connection budget (4006 over it),
  a ping flood from a peer that does not read leaves at most one pending pong, and
  each read event does bounded work.

Callbacks run in the hub: they must not block and must not raise (an exception is
logged and the connection dropped).

Over 500 lines on purpose: this is the one module that touches a client's socket (the
upgrade, reads, writes, TLS, the close handshake); splitting it would spread the socket
rules over files that must change together.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import gevent.socket
import gevent.ssl
from gevent.pywsgi import (
    Input,
    WSGIHandler,
    _InvalidClientInput,  # pywsgi: "the client sent a bad body" (a 400)
)

from . import httphead
from .wsproto import (
    BinaryMessage,
    Budget,
    CloseReceived,
    Pong,
    Protocol,
    State,
    TextMessage,
    Violation,
    is_valid_close_code,
)  # fmt: skip

__all__ = ["Connection", "Handler", "HardenedHandler"]

# The logger keeps the name operators filter on (docs/operations.md).
log = logging.getLogger("hubbub.websocket")

CLOSE_ABNORMAL = 1006  # RFC 6455 §7.1.5: no close frame at all (EOF, reset)
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3

#: The most one read event takes from a socket (uWebSockets' rule: one bounded read per
#: event). A max-size message takes a few events; a flooding socket cannot hold the hub.
READ_MAX = 65536

# Plain ints: the socket module's are IntFlag members, and `|` on those is an enum
# operation (~0.7 us) on every login.
_PEEK = int(socket.MSG_PEEK)
_PEEK_NOW = int(socket.MSG_PEEK | socket.MSG_DONTWAIT)
_TLS_SOCKETS = (ssl.SSLSocket, gevent.ssl.SSLSocket)  # one class once gevent has patched

_WANT = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_TLS_EOF = (ssl.SSLZeroReturnError, ssl.SSLEOFError)


def _shutdown(sock: Any, how: int) -> None:
    """``sock.shutdown(how)`` ignoring errors, and without gevent's ``SSLSocket.shutdown``
    (it drops the TLS state first: the peer would then get raw bytes)."""
    try:
        if isinstance(sock, gevent.socket.socket):
            gevent.socket.socket.shutdown(sock, how)
        else:
            sock.shutdown(how)
    except OSError:
        pass


def _io_of(
    sock: Any,
) -> tuple[Callable[[int], bytes], Callable[[memoryview | bytes], int], bool]:
    """``(recv(n), send(buf) -> written, tls)`` that never wait. ``recv`` raises one of
    ``_WANT`` when nothing is there; ``send`` returns 0 when the kernel is full.

    They run in hub callbacks, where waiting is impossible; gevent's own SSLSocket.send
    still waits on SSLWantWrite, so TLS goes straight to the SSL object.
    """
    if isinstance(sock, gevent.ssl.SSLSocket):
        sslobj = sock._sslobj

        def send_tls(buf: memoryview | bytes) -> int:
            try:
                return sslobj.write(buf)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return 0

        return sslobj.read, send_tls, True

    raw = getattr(sock, "_sock", sock)  # the real non-blocking socket under gevent's

    def send_plain(buf: memoryview | bytes) -> int:
        try:
            return raw.send(buf)
        except (BlockingIOError, InterruptedError):
            return 0

    return raw.recv, send_plain, False


class Connection:
    """One upgraded WebSocket, as the app and the actors see it.

    ``send_text()``, ``close()`` and ``abort()`` may be called from any greenlet of the
    socket's OS thread and never block. The app sets the callbacks before ``start()``.
    """

    # Thousands of these stay alive at once: no per-instance __dict__.
    __slots__ = (
        "remote_addr", "upgraded_at", "on_message", "on_pong", "on_overflow", "on_close",
        "max_backlog", "close_timeout",
        "_proto", "_sock", "_recv", "_send", "_tls", "_loop",
        "_reader", "_writer", "_timer", "_buf", "_flush_pending", "_overflowed",
        "_shut_wr", "_gone", "_peer_done", "_lost_code", "_done", "_done_callbacks",
    )  # fmt: skip

    def __init__(
        self,
        sock: Any,
        remote_addr: str,
        *,
        max_message: int = 65536,
        max_backlog: int = 1048576,
        close_timeout: float = 1.0,
        budget: Budget | None = None,
    ) -> None:
        self.remote_addr = remote_addr
        self.upgraded_at = time.monotonic()
        """When the upgrade was accepted (``time.monotonic``; the 101 is written right
        after): where the connection's rules count from (see UserActor)."""
        self.on_message: Callable[[str | bytes], None] | None = None
        self.on_pong: Callable[[], None] | None = None
        self.on_overflow: Callable[[], None] | None = None
        self.on_close: Callable[[int | None], None] | None = None
        self.max_backlog = max_backlog
        self.close_timeout = close_timeout
        self._proto = Protocol(max_message, budget)
        # The socket stays open after the server "closes" it: one io reference, the same
        # mechanism socket.makefile() uses, released in _release().
        sock._io_refs += 1
        self._sock = sock
        self._recv, self._send, self._tls = _io_of(sock)
        self._loop = loop = gevent.get_hub().loop
        self._reader = loop.io(sock.fileno(), 1, ref=False)  # 1 = read
        self._writer: Any = None
        self._timer: Any = None
        self._buf: memoryview | None = None  # the unsent tail of the last flush
        self._flush_pending = False  # a run_callback or the write watcher is armed
        self._overflowed = False
        self._shut_wr = False
        self._gone = False  # the socket failed, or was aborted or released
        self._peer_done = False  # the peer's close frame or EOF was seen
        self._lost_code: int | None = None
        self._done = False  # on_close has been called
        self._done_callbacks: list[Callable[[], None]] | None = None

    # ------------------------------------------------------------------ public API

    @property
    def closed(self) -> bool:
        """A close frame was sent (queued) or received, or the socket is gone."""
        return self._proto.close_code is not None or self._gone

    @property
    def close_code(self) -> int | None:
        """The first close code sent or received; 1005 if the peer's had none, 1006 if
        the connection ended without one."""
        return self._proto.close_code if self._lost_code is None else self._lost_code

    @property
    def close_reason(self) -> str:
        return self._proto.close_reason

    @property
    def backlog(self) -> int:
        """Bytes accepted by send_text/close but not yet written to the kernel."""
        buf = self._buf
        return self._proto.out_bytes + (len(buf) if buf is not None else 0)

    def start(self, initial: bytes = b"") -> None:
        """Start reading: ``initial`` are bytes that arrived with the upgrade request."""
        if self._gone:
            return
        self._reader.start(self._on_readable)
        if initial:
            self._feed(initial)
        if self._tls and not self._gone:
            # The TLS layer may already hold decrypted bytes that epoll will never report.
            self._loop.run_callback(self._on_readable)

    def send_text(self, payload: bytes) -> None:
        """Queue one text frame; ``payload`` is already UTF-8. Never blocks. After a
        close frame (or once the socket is gone) a silent no-op (RFC 6455 §5.5.1)."""
        if not isinstance(payload, (bytes, bytearray)):
            # Fail here, in the caller, not later in a hub callback.
            raise TypeError(f"send_text needs UTF-8 bytes, not {type(payload).__name__}")
        if self._gone:
            return
        proto = self._proto
        proto.send_text(payload)
        if not self._flush_pending:
            self._flush_pending = True
            # Deferred, so every frame queued before this greenlet yields leaves in one send.
            self._loop.run_callback(self._flush)
        # Over the limit while the kernel is already full (a flush waits for the socket to
        # become writable): the peer does not read. Without a blocked flush the next flush
        # decides (a 1 MiB `joined` to a fast reader is fine); x8 keeps a burst finite.
        backlog = proto.out_bytes
        if self._buf is not None:
            backlog += len(self._buf)
            if backlog > self.max_backlog:
                self._overflow()
        elif backlog > 8 * self.max_backlog:
            self._overflow()

    def send_text_now(self, payload: bytes) -> None:
        """``send_text``, then written to the kernel at once, with whatever this
        connection has queued before it (in order, one ``send``), instead of from a hub
        callback once the caller yields: for the last frame a caller queues before it
        yields (a room's fan-out with nothing else in its mailbox, a sender's `ack`).
        A callback already scheduled then finds nothing left. Exactly ``send_text``
        when the kernel is full (a write watcher waits), after a close frame, or once
        the socket is gone; what the kernel does not take waits as a flush's rest would."""
        proto = self._proto
        if self._buf is not None or self._gone or type(payload) is not bytes:
            return self.send_text(payload)
        data = proto.text_to_send(payload)  # nothing queued: the frame alone, built once
        if data is None:
            if proto.state is not State.OPEN:
                return self.send_text(payload)  # after a close frame: a no-op (§5.5.1)
            proto.send_text(payload)
            data = proto.data_to_send()  # what waited, then this frame
        try:
            self._write(data)
        except OSError:
            # Lost: told from a hub callback, as _flush would, never inside the caller's loop.
            self._flush_pending = True
            self._loop.run_callback(self._lost)

    def send(self, message: str | bytes, binary: bool | None = None) -> None:
        """Send a text (``str``) or binary (``bytes``) message."""
        if binary is None:
            binary = not isinstance(message, str)
        data = message.encode("utf-8") if isinstance(message, str) else bytes(message)
        if binary:
            if not self._gone:
                self._proto.send_binary(data)
                self._schedule_flush()
        else:
            self.send_text(data)

    def close(self, code: int, reason: str = "") -> None:
        """Queue a close frame after everything already queued; never blocks.

        Once it is written the write side is shut down (the peer sees the close frame,
        then EOF). Input is discarded until the peer's close frame or EOF, for at most
        ``close_timeout``; then the TCP connection is dropped. A no-op after a close frame
        was sent or received.
        """
        if not is_valid_close_code(code):
            raise ValueError(f"close code {code} may not be sent (RFC 6455 §7.4)")
        if self._gone or self._proto.state is not State.OPEN:
            return
        self._proto.send_close(code, reason)
        self._closing()

    def abort(self) -> None:
        """Drop the TCP connection now: no close frame, unsent data discarded (RST)."""
        if self._gone:
            return
        try:
            # Linger 0: the close sends RST instead of waiting for the peer to read what
            # the kernel still holds.
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self._lost()

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the socket is released (now if it already is): how the
        handler gives back what it held for the connection (an admission slot)."""
        if self._done:
            callback()
        elif self._done_callbacks is None:
            self._done_callbacks = [callback]
        else:
            self._done_callbacks.append(callback)

    # ------------------------------------------------------------------ reading

    def _on_readable(self) -> None:
        """One bounded read, fed to the protocol (a hub callback: must not raise)."""
        if self._gone:
            return
        try:
            data = self._recv(READ_MAX)
        except _WANT:
            return
        except _TLS_EOF:
            data = b""
        except OSError:
            self._lost()
            return
        if not data:
            self._eof()
            return
        self._feed(data)
        if self._tls and not self._gone and self._sock._sslobj.pending():
            # Decrypted bytes wait inside the TLS layer, where epoll cannot see them: read
            # them on the next turn of the loop (not now: one read per event).
            self._loop.run_callback(self._on_readable)

    def _feed(self, data: bytes) -> None:
        proto = self._proto
        proto.feed(data)
        now = self._loop.now()
        try:
            while (event := proto.next_event(now)) is not None:
                kind = type(event)
                if kind is TextMessage or kind is BinaryMessage:
                    # After our close frame data messages are no longer delivered (the
                    # app decided to end it); the peer's close frame still is awaited.
                    if proto.state is State.OPEN and self.on_message is not None:
                        self.on_message(event.data)  # type: ignore[union-attr]
                elif kind is Pong:
                    if self.on_pong is not None:
                        self.on_pong()
                elif kind is CloseReceived:
                    self._peer_done = True
                elif kind is Violation:
                    code, reason = event  # type: ignore[misc]
                    log.info("WebSocket from %s: %s (%d)", self.remote_addr, reason, code)
                    # §7.1.7: after failing the connection, no further processing of the
                    # peer's data. Not even reading it: a flood would go on costing a recv
                    # per event until close_timeout. The close frame still goes out, then
                    # EOF; the socket is closed when the close timer fires.
                    self._reader.stop()
                    self._closing()
                # Ping: the pong is pending in the protocol; the flush below sends it.
        except Exception:
            # The app's callbacks must not raise; if one does, this connection is broken
            # but the hub (and every other connection) must go on.
            log.exception("WebSocket callback failed (%s)", self.remote_addr)
            self._lost()
            return
        if proto._pong is not None or proto.out_bytes:
            self._schedule_flush()
        if proto.state is State.CLOSED:
            self._closing()  # the handshake is complete once our frames are written

    def _eof(self) -> None:
        """The peer shut its write side."""
        self._peer_done = True
        closed_by_us = self._proto.close_code is not None
        self._proto.receive_eof()
        self._reader.stop()
        if closed_by_us and not self._gone and self.backlog:
            return  # our close frame is still on its way (the close timer bounds it)
        self._release()

    # ------------------------------------------------------------------ writing

    def _schedule_flush(self) -> None:
        if not self._flush_pending and not self._gone:
            self._flush_pending = True
            self._loop.run_callback(self._flush)

    def _overflow(self) -> None:
        if not self._overflowed:
            self._overflowed = True
            if self.on_overflow is not None:
                try:
                    self.on_overflow()
                except Exception:
                    log.exception("on_overflow callback failed (%s)", self.remote_addr)

    def _flush(self) -> None:
        """Write as much as the kernel takes, without ever waiting (a hub callback)."""
        if self._gone:
            return
        proto = self._proto
        try:
            while True:
                buf: memoryview | bytes | None = self._buf
                if buf is None:
                    buf = proto.data_to_send()
                    if not buf:
                        break
                self._buf = None
                if not self._write(buf):
                    return
        except OSError:
            self._lost()
            return
        proto.coalesce_pongs = False
        self._flush_pending = False
        if proto.close_code is not None and not self._shut_wr:
            self._shut_wr = True
            # §7.1.1: the peer sees our close frame, then EOF.
            _shutdown(self._sock, socket.SHUT_WR)
        if self._shut_wr and (self._peer_done or proto.state is State.CLOSED):
            self._release()  # both close frames exchanged (or EOF) and ours is written

    def _write(self, buf: memoryview | bytes) -> bool:
        """One non-blocking ``send`` of ``buf``; True if the kernel took all of it. The
        rest waits in ``_buf`` for writability, checked against --max-backlog. Raises
        OSError: the caller decides when the connection is told it is lost."""
        sent = self._send(buf)
        if sent == len(buf):
            return True
        self._buf = memoryview(buf)[sent:]
        self._proto.coalesce_pongs = True  # the peer is not reading: one pending pong
        self._arm_writer()
        if self.backlog > self.max_backlog:
            self._overflow()  # the kernel is full and the rest is over the limit
        return False

    def _arm_writer(self) -> None:
        writer = self._writer
        if writer is None:
            writer = self._writer = self._loop.io(self._sock.fileno(), 2, ref=False)  # 2 = write
        if not writer.active:
            writer.start(self._on_writable)

    def _on_writable(self) -> None:
        self._writer.stop()
        self._flush()

    # ------------------------------------------------------------------ closing

    def _closing(self) -> None:
        """A close frame is queued (ours or our echo): bound the rest of the goodbye.
        Without the timer a peer that stops reading and writing would hold the socket."""
        if self._buf is None and not self._gone:
            # Written now, not from a callback at the back of the hub's queue: a close
            # ends the connection's frames, there is nothing left to gather, and under a
            # burst of closes (a hello storm) that queue is long with other work.
            self._flush()
        else:
            self._schedule_flush()  # the kernel is full: the write watcher finishes it
        if self._timer is None and not self._gone:
            self._timer = self._loop.timer(self.close_timeout, ref=False)
            self._timer.start(self._on_close_timeout)

    def _on_close_timeout(self) -> None:
        if not self._gone:
            self.abort()

    def _lost(self) -> None:
        """EOF, reset, write error or abort: the socket is gone (§7.1.5: 1006)."""
        if self._proto.close_code is None:
            self._lost_code = CLOSE_ABNORMAL
        self._peer_done = True
        self._release()

    def _release(self) -> None:
        """Stop the watchers, close the socket, tell the app (exactly once)."""
        if self._done:
            return
        self._gone = True
        self._done = True
        self._flush_pending = True  # nothing may schedule another flush
        self._buf = None
        for watcher in (self._reader, self._writer, self._timer):
            if watcher is not None:
                watcher.stop()
                watcher.close()
        self._writer = self._timer = None
        self._proto.receive_eof()
        self._proto.data_to_send()  # drop what was never written
        sock = self._sock
        sock._io_refs = max(0, sock._io_refs - 1)
        try:
            sock.close()
        except OSError:
            pass
        callbacks, self._done_callbacks = self._done_callbacks, None
        for callback in [*(callbacks or ()), self._notify_close]:
            try:
                callback()
            except Exception:
                log.exception("close callback failed (%s)", self.remote_addr)

    def _notify_close(self) -> None:
        if self.on_close is not None:
            self.on_close(self.close_code)

    def __repr__(self) -> str:
        state = "open" if not self.closed else f"closed {self.close_code}"
        return f"<Connection {self.remote_addr} {state} backlog={self.backlog}>"


# ---------------------------------------------------------------------- the HTTP handler


class _Body(Input):
    """``wsgi.input``: a body that ends early (the client closed, or stopped sending) is
    the client's fault - a 400 and a log line, not a traceback per request. pywsgi
    answers its own ``_InvalidClientInput`` that way; its short-body ``IOError`` is
    turned into one here."""

    def _do_read(self, length: int | None = None, use_readline: bool = False) -> bytes:
        try:
            return super()._do_read(length, use_readline)
        except _InvalidClientInput:
            raise
        except OSError as exc:
            raise _InvalidClientInput(str(exc)) from None

    def _chunked_read(self, length: int | None = None, use_readline: bool = False) -> bytes:
        try:
            return super()._chunked_read(length, use_readline)
        except _InvalidClientInput:
            raise
        except OSError as exc:
            raise _InvalidClientInput(str(exc)) from None


class _HeadTimeout(Exception):
    """The request line and headers did not arrive within ``header_timeout``."""


class Handler(WSGIHandler):
    """pywsgi's handler with a strict, cheap request reader and the WebSocket upgrade.

    Configure by subclassing (``type("H", (Handler,), {"max_message": 4096})``) and pass
    it as ``WSGIServer(..., handler_class=H)``. Non-upgrade requests go to the WSGI app
    unchanged; an upgrade calls the app with ``environ["hubbub.connection"]`` set, then
    the handler returns and the connection lives on in watchers.
    """

    max_message: int = 65536
    max_backlog: int = 1048576
    close_timeout: float = 1.0
    header_timeout: float = 60.0  #: seconds for the request line + headers
    keepalive_timeout: float = 75.0  #: seconds an idle keep-alive connection is kept
    max_header_bytes: int = 32768  #: request line + headers; over it: 431
    frame_budget: int = 1000  #: frames per second per connection (0: no limit)
    byte_budget: int = 8 << 20  #: bytes per second per connection (0: no limit)

    #: Paths where an upgrade is accepted (None: any path). Elsewhere: 404.
    ws_paths: frozenset[str] | None = frozenset({"/ws"})

    # pywsgi reads through a BufferedReader; 1 KiB holds any ordinary request head and
    # is dropped at the upgrade (the connection reads with recv from then on).
    read_buffer: int = 1024

    # pywsgi's attributes, untyped upstream (None at class level): what they hold here.
    socket: Any
    rfile: Any
    environ: Any
    status: Any
    result: Any

    ws_connection: Connection | None = None
    _detached: Connection | None = None  # the connection this handler handed over
    _deadline: Any = None
    _requests = 0

    #: The most of a first request head the fast path looks at (one peek at the socket):
    #: an upgrade with a few cookies fits; anything longer is read by pywsgi's path.
    peek_bytes: int = 4096

    def __init__(self, sock: Any, address: Any, server: Any, rfile: Any = None) -> None:
        # Not WSGIHandler.__init__: it makes the buffered reader at once, and the first
        # request usually needs none (``_serve_peeked``); ``handle`` makes it when needed.
        self.socket = sock
        self.client_address = address
        self.server = server
        self.rfile = rfile

    @property
    def logger(self) -> logging.Logger:
        return log

    def check_upgrade(self, environ: dict[str, Any]) -> str | None:
        """Hook: return an HTTP status (e.g. ``"403 Forbidden"``) to refuse a valid
        upgrade before the 101 is sent (origin checks, connection limits), or None."""
        return None

    #: After an error response, unread request bytes are read and dropped for at most
    #: this long (nginx's lingering close): closing with unread input would send a RST,
    #: and a RST can destroy the response before the client reads it.
    linger_timeout: float = 2.0
    linger_bytes: int = 1 << 20

    def handle(self) -> None:
        """pywsgi's keep-alive loop (``WSGIHandler.handle``), with its ending changed:
        a socket handed to a ``Connection`` is left alone, any other one is closed
        after a lingering read instead of pywsgi's single 16 KiB drain."""
        # gevent leaves Nagle on: every small frame of a fan-out would wait for the
        # previous one's ACK (~3.5x slower fan-out measured).
        try:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass  # not TCP (a Unix socket)
        try:
            if self.rfile is None:
                if self._serve_peeked() and self.close_connection:
                    return  # one request, answered or upgraded: the finally closes or not
                if self.socket is None:
                    return
                self.rfile = self.socket.makefile("rb", self.read_buffer)
            while self.socket is not None:
                self.time_start = time.time()
                self.time_finish = 0
                result = self.handle_one_request()
                if result is None:
                    break
                if result is True:
                    continue
                self.status, response_body = result  # a request pywsgi could not parse
                self.socket.sendall(response_body)
                if self.time_finish == 0:
                    self.time_finish = time.time()  # type: ignore[assignment]  # pywsgi declares it an int; it holds time.time()
                self.log_request()
                break
        except OSError as exc:
            # A client that resets mid-response must not print a traceback per request.
            log.info("connection from %s dropped: %s", self.client_address, exc)
        finally:
            self._stop_deadline()  # e.g. pywsgi's own 414 ends a request before read_request
            sock, rfile = self.socket, self.rfile
            self.socket = self.rfile = self.wsgi_input = None
            if sock is not None:  # not handed over to a Connection
                self._linger_and_close(sock, rfile)

    def _linger_and_close(self, sock: Any, rfile: Any) -> None:
        try:
            _shutdown(sock, socket.SHUT_WR)  # the response is complete: FIN after it
            with gevent.Timeout(self.linger_timeout, False):
                dropped = 0
                while dropped < self.linger_bytes:
                    data = sock.recv(65536)
                    if not data:
                        break
                    dropped += len(data)
        except OSError:
            pass
        finally:
            try:
                if rfile is not None:
                    rfile.close()  # its io reference would keep the socket open
                sock.close()
            except OSError:
                pass

    # --- reading a request head (no `email`: httphead's strict parser) ------------

    def read_requestline(self) -> str:
        # Keep-alive (RFC 9112 §9.3): between requests the connection may idle for
        # keepalive_timeout; the first request's head has header_timeout in all.
        first = self._requests == 0
        self._requests += 1
        if not first:
            with gevent.Timeout(self.keepalive_timeout, False):
                self.rfile.peek(1)
                first = True  # got a byte in time
            if not first:
                return ""  # idle too long: closed quietly, like nginx
        self._deadline = gevent.Timeout(self._head_left or self.header_timeout, _HeadTimeout())
        self._head_left = 0.0
        self._deadline.start()
        try:
            line = self.rfile.readline(self.max_header_bytes + 1)
            if not line:
                self._stop_deadline()  # EOF: no request
        except _HeadTimeout:
            self._deadline = None
            log.info("request line from %s timed out", self.client_address)
            return ""
        except BaseException:
            self._stop_deadline()
            raise
        return line.decode("latin-1")

    # --- the first request, from one peek (no buffered reader, no line reads) --------

    _head_left = 0.0  #: what is left of header_timeout after waiting in _serve_peeked

    def _serve_peeked(self) -> bool:
        """Serve the first request from a peek at the socket, if its head is complete in
        one ``recv`` and it has no body (every WebSocket upgrade from a client that is
        not pathologically slow): parsed at once by ``httphead.parse_head``, consumed
        from the socket, and answered by ``handle_one_response`` as pywsgi's path would.
        This is the login's HTTP cost: no ``makefile`` reader, no line-by-line reads, no
        ``Timeout`` (docs/benchmarks.md).

        False: nothing consumed, pywsgi's path reads the request as always (TLS, a head
        that is incomplete, too long or malformed, a body: its answers and its 408 are
        that path's). True: one request was served (or the socket failed quietly)."""
        sock = self.socket
        if isinstance(sock, _TLS_SOCKETS):
            return False  # TLS: its records are not the request's bytes
        raw = getattr(sock, "_sock", sock)
        try:
            try:
                data = raw.recv(self.peek_bytes, _PEEK)
            except (BlockingIOError, InterruptedError):
                # Nothing yet: wait, as long as the head may take (the accept gate may
                # shut the socket down sooner: that reads as EOF here).
                started = time.monotonic()
                try:
                    gevent.socket.wait_read(raw.fileno(), self.header_timeout, _HeadTimeout())
                except _HeadTimeout:
                    log.info("request line from %s timed out", self.client_address)
                    self.close_connection = True
                    return True
                self._head_left = max(0.001, self.header_timeout - (time.monotonic() - started))
                data = raw.recv(self.peek_bytes, _PEEK)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self.close_connection = True  # reset before a request: nothing to answer
            return True
        end = data.find(b"\r\n\r\n") + 4
        if end < 4:
            return False
        try:
            head = httphead.parse_head(data[:end], self.max_header_bytes)
        except httphead.HttpError:
            return False  # the slow path answers it, with its log line
        if head.content_length or head.chunked:
            return False  # the body is read through the buffered reader
        try:
            taken = raw.recv(end)
        except OSError:
            taken = b""
        if len(taken) != end:  # cannot happen: the bytes were in the kernel's buffer
            self.close_connection = True
            return True
        self._head_left = 0.0
        self._requests = 1
        self._take_head(head, data)
        self.close_connection = head.close
        self.time_start = time.time()
        self.time_finish = 0
        self.response_length = 0
        self.environ = self.get_environ()
        self.application = self.server.application
        self.handle_one_response()
        return True

    def _take_head(self, head: httphead.Head, data: bytes) -> None:
        """The request attributes pywsgi's handler keeps, from a head parsed out of a
        peek (``data`` starts with it) by ``_serve_peeked`` or ``upgrade_at_once``.
        Both refuse a body, so there is none to read."""
        self.requestline = data[: data.find(b"\n")].rstrip(b"\r").decode("latin-1")
        self.command, self.path, self.request_version = head.method, head.target, head.version
        self.headers = head.fields
        self.content_length = None if head.content_length is None else 0
        self._chunked = False

    def _switching_protocols(self) -> bytes:
        """The 101 answer to the upgrade ``_new_connection`` accepted (RFC 6455 §4.2.2)."""
        return (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + self._accept + b"\r\n\r\n"
        )

    def _stop_deadline(self) -> None:
        deadline = self._deadline
        if deadline is not None:
            deadline.close()
            self._deadline = None

    def read_request(self, raw_requestline: str) -> bool:
        try:
            self.requestline = raw_requestline.rstrip("\r\n")
            head = httphead.read_head(raw_requestline, self.rfile, self.max_header_bytes)
        finally:
            self._stop_deadline()
        self.command, self.path, self.request_version = head.method, head.target, head.version
        self.headers = head.fields
        self.content_length = head.content_length
        self._chunked = head.chunked
        self.close_connection = head.close
        return True

    def _handle_client_error(self, ex: BaseException) -> tuple[str, bytes]:
        # Any bad input is a 4xx and a log line, never a traceback.
        if isinstance(ex, _HeadTimeout):
            log.info("request head from %s timed out", self.client_address)
            return "408", httphead.response(408, "Request Timeout")
        status = getattr(ex, "status", 400)
        log.info("bad request from %s: %s", self.client_address, str(ex) or type(ex).__name__)
        return str(status), httphead.response(status, httphead.REASONS.get(status, "Bad Request"))

    def get_environ(self) -> dict[str, Any]:
        env = self.server.get_environ()  # a copy of the server's base environ
        path, _, query = self.path.partition("?")
        env["REQUEST_METHOD"] = self.command
        env["SCRIPT_NAME"] = ""
        env["PATH_INFO"] = httphead.unquote_path(path)
        env["QUERY_STRING"] = query
        env["SERVER_PROTOCOL"] = self.request_version
        address = self.client_address
        if isinstance(address, tuple):
            env["REMOTE_ADDR"] = str(address[0])
            env["REMOTE_PORT"] = str(address[1])
        env.update(httphead.cgi_headers(self.headers))
        sock = self.socket if env.get("HTTP_EXPECT") == "100-continue" else None
        self.wsgi_input = _Body(  # type: ignore[assignment]  # pywsgi declares None; our reader of the body
            self.rfile, self.content_length, socket=sock, chunked_input=self._chunked
        )
        env["wsgi.input"] = self.wsgi_input
        env["wsgi.input_terminated"] = True
        return env

    def log_request(self) -> None:
        if self.code != 101:  # the upgrade is logged by the app (connect/disconnect)
            WSGIHandler.log_request(self)

    # --- the upgrade ----------------------------------------------------------------

    def run_application(self) -> None:
        refusal = self.upgrade_websocket()
        if self.ws_connection is not None:
            self.run_websocket()
        elif self.status:  # the upgrade was refused: send the 4xx/5xx
            self.result = refusal or []
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

    def _upgrade_problem(self) -> tuple[str, str, list[tuple[str, str]]] | None | bool:
        """The RFC 6455 §4.2.1 checks of a request: False if it is not an upgrade request
        at all, ``(status, message, headers)`` for a refusal, None if it is a valid one."""
        environ = self.environ
        if environ.get("REQUEST_METHOD", "") != "GET":
            return False
        if environ.get("HTTP_UPGRADE", "").strip().lower() != "websocket":
            return False
        tokens = {t.strip() for t in environ.get("HTTP_CONNECTION", "").lower().split(",")}
        if "upgrade" not in tokens:
            return False
        if self.ws_paths is not None and environ.get("PATH_INFO") not in self.ws_paths:
            # An upgrade anywhere else would hand a socket to a route that cannot speak it.
            return "404 Not Found", "no WebSocket endpoint at this path", []
        if self.request_version != "HTTP/1.1":
            return "400 Bad Request", "WebSocket upgrade needs HTTP/1.1", []
        if self.content_length or self._chunked:
            # A body would be read as frames.
            return "400 Bad Request", "WebSocket upgrade must not have a body", []
        if environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip() != "13":
            # §4.4: answer with the versions we speak.
            return (
                "426 Upgrade Required",
                "unsupported Sec-WebSocket-Version",
                [("Sec-WebSocket-Version", "13")],
            )
        key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
        try:
            decoded = base64.b64decode(key.encode("ascii"), validate=True)
        except (ValueError, binascii.Error):  # a non-ASCII key: UnicodeEncodeError
            decoded = b""
        if len(decoded) != 16:
            return "400 Bad Request", "missing or invalid Sec-WebSocket-Key", []
        return None

    def upgrade_websocket(self) -> list[bytes] | None:
        """Validate the upgrade (RFC 6455 §4.2.1). Returns the body of a refusal, or
        None (upgraded, or not an upgrade request: then ``self.status`` is unset)."""
        problem = self._upgrade_problem()
        if problem is False:
            return None
        if problem:
            assert isinstance(problem, tuple)
            return self._refuse(*problem)
        refusal = self.check_upgrade(self.environ)
        if refusal:
            return self._refuse(refusal, "upgrade refused")
        self.ws_connection = self._new_connection()
        return None

    def _new_connection(self) -> Connection:
        address = self.client_address
        key = self.environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
        self._accept = base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest())
        return Connection(
            self.socket,
            address[0] if isinstance(address, tuple) else str(address or ""),
            max_message=self.max_message,
            max_backlog=self.max_backlog,
            close_timeout=self.close_timeout,
            budget=Budget(self.frame_budget, self.byte_budget)
            if (self.frame_budget or self.byte_budget)
            else None,
        )

    def on_upgraded(self, conn: Connection) -> None:
        """Hook: the connection is live and handed to the app (e.g. hold an admission slot
        until it ends: ``conn.add_done_callback``). Called by ``upgrade_at_once`` only; on
        pywsgi's path ``run_application`` ends after the handover and does it there."""

    def upgrade_aborted(self) -> None:
        """Hook: ``upgrade_at_once`` failed after ``check_upgrade`` let the request in."""

    def upgrade_at_once(self) -> Connection | None:
        """The whole upgrade in the caller (the accept loop), with no greenlet of its own,
        when it can be done without waiting: a plain socket whose complete request head
        is already in the kernel's buffer, a valid upgrade that ``check_upgrade`` lets
        in, and a ``101`` the fresh socket takes in one ``send``. Returns the live
        connection; None when any of that does not hold, with nothing read from the
        socket and nothing reserved: serve it with ``handle()`` as always (its answers,
        refusals and deadlines are that path's).

        This is most of a login's HTTP cost saved (docs/benchmarks.md): no greenlet, no
        pywsgi request cycle. Nothing here may block: it runs in the hub."""
        sock = self.socket
        if isinstance(sock, _TLS_SOCKETS):  # (hasattr would raise inside gevent's socket)
            return None
        raw = getattr(sock, "_sock", sock)
        try:
            data = raw.recv(self.peek_bytes, _PEEK_NOW)
        except OSError:  # not there yet (or reset: the greenlet's path sees it)
            return None
        end = data.find(b"\r\n\r\n") + 4
        if end < 4 or not data.startswith(b"GET "):
            return None
        try:
            head = httphead.parse_head(data[:end], self.max_header_bytes)
        except httphead.HttpError:
            return None
        if head.content_length or head.chunked:
            return None
        self._take_head(head, data)
        self.environ = environ = self.get_environ()
        if self._upgrade_problem() is not None or self.check_upgrade(environ):
            return None  # not an upgrade, or one that gets an answer: the greenlet's job
        self.application = self.server.application
        try:
            conn = self._new_connection()
        except BaseException:
            self.upgrade_aborted()  # check_upgrade let it in: give back what that took
            raise
        response = self._switching_protocols()
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as handle() does
            taken = raw.recv(end)  # the head; frames behind it stay for the reader
            sent = raw.send(response) if len(taken) == end else 0
        except OSError as exc:
            log.info("upgrade from %s failed: %s", self.client_address, exc)
            sent = 0
        self.socket = self.rfile = None
        self.on_upgraded(conn)
        if sent != len(response):  # a fresh socket's buffer takes 130 bytes: not reached
            conn.abort()
            return conn
        self._hand_over(environ, conn)
        return conn

    def _hand_over(self, environ: dict[str, Any], conn: Connection, initial: bytes = b"") -> None:
        """Call the app once with the connection (it sets the callbacks), then start it;
        a failing app aborts the connection."""
        environ["hubbub.connection"] = conn
        try:
            result = self.application(environ, _ignore_start_response)
            close = getattr(result, "close", None)
            if close is not None:
                close()
        except Exception:
            log.exception("the app failed on a new WebSocket connection")
            conn.abort()
            return
        finally:
            self.environ = None
        conn.start(initial)

    def run_websocket(self) -> None:
        """Send the 101, call the app once to set the callbacks, start the connection and
        detach: this greenlet, the handler and its reader end here."""
        conn = self.ws_connection
        assert conn is not None
        sock, rfile = self.socket, self.rfile
        self.code, self.status = 101, "101 Switching Protocols"
        self.close_connection = True  # ends pywsgi's keep-alive loop
        # pywsgi closes self.socket when handle() ends: from here on the connection owns it.
        self.socket = self.rfile = None
        try:
            sock.sendall(self._switching_protocols())
            # Frames sent right behind the request may sit in the reader's buffer (none
            # when the head was peeked: they are still in the kernel's).
            sock.settimeout(0.0)
            initial = b""
            if rfile is not None:
                try:
                    initial = rfile.read1(self.read_buffer)
                except OSError:
                    pass
                rfile.close()
        except OSError as exc:
            log.info("upgrade from %s failed: %s", self.client_address, exc)
            conn.abort()
            return
        self._detached = conn
        self._hand_over(self.environ, conn, initial)


# The class name the rest of hubbub (admission.py) subclasses.
HardenedHandler = Handler


def _ignore_start_response(
    status: str, headers: Any, exc_info: Any = None
) -> Callable[[bytes], None]:
    """After a 101 the HTTP response is over: whatever the app "responds" is ignored."""
    return lambda data: None
