"""The accept-level gate's thin shell: ``GatedServer``, a ``WSGIServer`` whose ``handle``
asks ``AcceptGate`` (hubbub/admission.py) about every accepted socket before any HTTP is
read, runs the TLS handshake under its deadline, and closes the sockets the gate sheds or
whose phase deadline passed (issue 15 item 2).

Why a socket-level deadline and not a timeout on each read: a slowloris client sends a
byte just before every read timeout would fire, so only a deadline for the whole phase
(request line and headers, body, keep-alive idle, TLS handshake) bounds how long it holds
the socket.  One ticker greenlet serves every socket's deadline (a heap in the gate), so
a waiting socket costs no timer and no greenlet of its own.

Closing another greenlet's socket: ``socket.close()`` does not close an fd that a
``makefile()`` still references (the handler's ``rfile``), so the shell shuts the raw
socket down instead: the blocked read returns EOF, the handler ends as if the client had
left, and its ``finally`` frees the fd.  A request body that times out is only shut for
reading, so the application can still answer ``408``.
"""

from __future__ import annotations

import errno
import logging
import socket
from functools import partial
from typing import Any

import gevent
from gevent.pywsgi import WSGIServer

from actors.clock import Clock, MonotonicClock

from .admission import SHED_SLACK, AcceptGate, GateTicket
from .http import is_loopback

__all__ = ["GatedServer", "gate_for"]

log = logging.getLogger("hubbub.gate")

# Sent to a plain-HTTP socket the gate refuses: the contract's answer to a client over a
# connection limit, and short enough to fit any fresh socket's send buffer (never blocks).
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n"
    b"Content-Length: 29\r\n\r\ntoo many connections, retry\r\n"
)
# File descriptors the automatic --max-sockets leaves spare: 64 for everything that is
# not a client socket (the listener, epoll, logs, the SQLite store, Redis, plugin files),
# SHED_SLACK for shed sockets on their way out, and one accept batch (gevent accepts up to
# ``max_accept`` = 100 sockets before their handlers run and ask the gate).
SPARE_FDS = 64 + SHED_SLACK + 100


def gate_for(config: Any, fd_limit: int) -> AcceptGate:
    """The node's gate from its Config; ``fd_limit`` is the process's open-file limit."""
    # A small limit (a test's 256) keeps a 16th spare: SPARE_FDS would leave nothing.
    auto = max(1, fd_limit - config.admin_reserve - min(SPARE_FDS, fd_limit // 16))
    return AcceptGate(
        max_sockets=config.max_sockets or auto,
        admin_reserve=config.admin_reserve,
        # --max-connections 0 means "every client has the proxy's address": no per-IP caps.
        max_pending_per_ip=config.max_pending_per_ip if config.max_connections else 0,
        timeouts={
            "handshake": config.tls_handshake_timeout,
            "headers": config.header_timeout,
            "body": config.body_timeout,
            "idle": config.keepalive_timeout,
        },
    )


def _raw(sock: Any) -> Any:
    """The OS-level socket under a gevent (or gevent SSL) socket."""
    return getattr(sock, "_sock", sock)


def _shutdown(sock: Any, how: int) -> None:
    try:
        _raw(sock).shutdown(how)
    except OSError:
        pass  # already closed or reset: nothing left to wake


def _bytes_waiting(sock: Any) -> bool:
    try:
        return bool(_raw(sock).recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return False


class GatedServer(WSGIServer):
    """``WSGIServer`` with the accept-level gate in front of its handler class."""

    clock: Clock = MonotonicClock()
    #: pre-chat sockets shed at once when an accept fails for want of file descriptors
    emfile_batch = 32

    def __init__(self, *args: Any, gate: AcceptGate, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = gate
        self._ticker: gevent.Greenlet | None = None
        self._quiet_until = float("-inf")
        self._pause: Any = None
        # Fine enough that a deadline fires within a tenth of the shortest phase, coarse
        # enough that the ticker costs nothing (a heap peek).
        self.tick = min(1.0, max(0.02, min(gate.timeouts.values()) / 10))

    def start(self) -> None:
        super().start()
        if self._ticker is None:
            self._ticker = gevent.spawn(self._run_ticker)

    def stop_accepting(self) -> None:
        # A pause after running out of files must not start accepting again once the
        # node has stopped accepting for good (shutdown).
        if self._pause is not None:
            self._pause.close()
            self._pause = None
        super().stop_accepting()

    def close(self) -> None:
        if self._pause is not None:
            self._pause.close()
            self._pause = None
        if self._ticker is not None:
            self._ticker.kill(block=False)
            self._ticker = None
        super().close()

    # --- accept ---------------------------------------------------------------------

    def do_read(self) -> Any:
        # Out of file descriptors (the caps keep us under the limit, but other files
        # count too, and --max-sockets may be set too high): gevent would print a
        # traceback per failed accept.  Instead, shed a batch of the oldest pre-chat
        # sockets, so that the accept queue drains (a /healthz waits behind everything
        # queued before it), and pause accepting until their handlers have closed them.
        try:
            return super().do_read()
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            now = self.clock.monotonic()
            if now >= self._quiet_until:
                self._quiet_until = now + 10.0
                log.warning(
                    "out of file descriptors (%s): shedding the oldest connection "
                    "not yet in chat; lower --max-sockets",
                    exc.strerror,
                )
            for _ in range(self.emfile_batch):
                victim = self.gate.shed_oldest()
                if victim is None:
                    break
                self._drop(victim)
            self.stop_accepting()  # also cancels an earlier pause
            self._pause = self.loop.timer(0.01)
            self._pause.start(self._start_accepting_if_started)
            return None

    def handle(self, sock: Any, address: Any) -> None:
        ip = address[0] if isinstance(address, tuple) else ""
        tls = hasattr(sock, "do_handshake")
        conn: Any = None
        ticket, shed = self.gate.admit(
            ip, self.clock.monotonic(), sock, loopback=is_loopback(ip), tls=tls
        )
        for victim in shed:
            log.debug("closing a connection from %s (%s) to make room", victim.ip, victim.phase)
            self._drop(victim)
        if ticket is None:
            log.debug("connection from %s refused: too many connections", ip)
            if not tls:
                try:
                    _raw(sock).send(_REFUSAL, socket.MSG_DONTWAIT)
                except OSError:
                    pass
            return  # StreamServer closes the socket
        try:
            if tls and not self._handshake(sock, ticket, ip):
                return
            handler = self.handler_class(sock, address, self)
            handler.gate_ticket = ticket
            handler.handle()
            conn = handler.handed_over
        finally:
            if conn is not None:
                # The chat socket outlives this greenlet (hubbub/transport.py): it holds its
                # place at the gate until the connection is released.
                conn.add_done_callback(partial(self.gate.release, ticket))
            else:
                self.gate.release(ticket)

    def _handshake(self, sock: Any, ticket: GateTicket, ip: str) -> bool:
        # Here, not on the handler's first read: under the gate's deadline, and a failed
        # handshake (a plain-HTTP probe, a client that rejects the certificate) is one
        # log line instead of a traceback.
        try:
            sock.do_handshake()
        except OSError as exc:  # ssl.SSLError is an OSError, and so is our shutdown's EOF
            why = "timed out" if ticket.expired else (str(exc) or type(exc).__name__)
            log.debug("TLS handshake with %s failed: %s", ip, why)
            return False
        self.gate.enter(ticket, "headers", self.clock.monotonic())
        return True

    # --- deadlines ------------------------------------------------------------------

    #: seconds between the summary lines; per socket the gate logs at DEBUG only, so
    #: that a flood of slow sockets cannot flood the log too
    summary_every = 10.0

    def _run_ticker(self) -> None:
        seen = dict(self.gate.counts)
        next_summary = self.clock.monotonic() + self.summary_every
        while True:
            gevent.sleep(self.tick)
            now = self.clock.monotonic()
            try:
                self.expire(now)
            except Exception:  # never let one bad socket stop every deadline
                log.exception("gate ticker")
            if now >= next_summary:
                next_summary = now + self.summary_every
                counts = dict(self.gate.counts)
                delta = {k: counts[k] - seen[k] for k in ("shed", "refused", "expired")}
                seen = counts
                if any(delta.values()):
                    log.info(
                        "gate: %d closed at a deadline, %d shed to make room, %d refused in the "
                        "last %gs; %d sockets open, %d before the chat",
                        delta["expired"],
                        delta["shed"],
                        delta["refused"],
                        self.summary_every,
                        self.gate.open,
                        self.gate.waiting(),
                    )

    def expire(self, now: float) -> None:
        """Act on every deadline that has passed."""
        for ticket in self.gate.due(now):
            if ticket.phase == "idle" and _bytes_waiting(ticket.conn):
                # The next request is arriving: it gets the header deadline from now.
                ticket.expired = False
                self.gate.enter(ticket, "headers", now)
            elif ticket.phase == "body":
                # Shut for reading only: a body read returns short and the app answers
                # 408.  If the client does not read that either (a slow reader), the
                # closing grace ends it for good.
                log.debug("request from %s timed out (body or response)", ticket.ip)
                _shutdown(ticket.conn, socket.SHUT_RD)
                ticket.expired = True
                self.gate.enter(ticket, "closing", now)
            else:
                log.debug("connection from %s closed: %s timed out", ticket.ip, ticket.phase)
                _shutdown(ticket.conn, socket.SHUT_RDWR)

    @staticmethod
    def _drop(ticket: GateTicket) -> None:
        ticket.expired = True
        _shutdown(ticket.conn, socket.SHUT_RDWR)
