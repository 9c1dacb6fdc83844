"""The accept-level gate's thin shell: ``GatedServer``, a ``WSGIServer`` that asks
``AcceptGate`` (hubbub/admission.py) about every accepted socket right in the accept loop,
before a greenlet is spawned or any HTTP read, runs the TLS handshake under its deadline,
and closes the sockets the gate sheds or whose phase deadline passed (issue 15 item 2).

Why in the accept loop: gevent accepts up to ``max_accept`` (100) sockets in one batch and
spawns their handlers before any of them runs.  Asked there (``do_handle``), the gate
knows every open socket but the one being accepted, so the file descriptors kept spare
below the open-file limit are what the process really holds, not a batch's worst case
(``auto_max_sockets``; issue "lightweight users" wants 19,970 users from 20,000 files).
A plain socket whose WebSocket upgrade request is already in its buffer is upgraded
right there too (``Handler.upgrade_at_once``): most logins never get a greenlet.

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
import os
import socket
from functools import partial
from typing import Any

import gevent
from gevent.pywsgi import WSGIServer

from actors.clock import Clock, MonotonicClock

from .admission import SHED_SLACK, AcceptGate, GateTicket
from .http import is_loopback

__all__ = ["GatedServer", "auto_max_sockets", "gate_for", "open_fds"]

log = logging.getLogger("hubbub.gate")

# Sent to a plain-HTTP socket the gate refuses: the contract's answer to a client over a
# connection limit, and short enough to fit any fresh socket's send buffer (never blocks).
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n"
    b"Content-Length: 29\r\n\r\ntoo many connections, retry\r\n"
)
# Files the process may open after it started listening, on top of those it holds then
# (measured, ``open_fds``): a Redis link reconnecting opens its new socket before the old
# one is closed (1 per link; the store's and the cluster's, 2), SQLite's -wal and -shm
# files appear with the store's first write (2), a log handler reopening its file after
# rotation (1), /debug/stats reading /proc (1), and two to spare for a plugin's file.
LATER_FDS = 8
# Where /proc/self/fd cannot be read: a guess at the process's own files (the listener,
# the event loop, std streams, logs, the store, Redis), as before it was measured.
FALLBACK_FDS = 64


def open_fds() -> int | None:
    """How many file descriptors this process holds now; None where that is unknown."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # not counting the listing's own
    except OSError:  # not Linux
        return None


def auto_max_sockets(fd_limit: int, in_use: int, admin_reserve: int) -> int:
    """``--max-sockets 0``: the most sockets that keep the process under ``fd_limit``.

    The gate holds at most ``max_sockets + admin_reserve + SHED_SLACK`` sockets
    (hubbub/admission.py ``AcceptGate``), and the shell one more: the socket being accepted,
    before the gate is asked (or held back while shed ones close).  Besides those, the
    ``in_use`` files open when the node started listening and ``LATER_FDS`` more.  With
    20,000 files and 9 in use: 20,000 - 9 - 8 - 8 - 1 - 32 = 19,942, and 19,974 sockets
    from loopback.
    """
    spare = in_use + LATER_FDS + SHED_SLACK + 1
    return max(1, fd_limit - spare - admin_reserve)


def gate_for(config: Any, fd_limit: int, in_use: int | None = None) -> AcceptGate:
    """The node's gate from its Config; ``fd_limit`` is the process's open-file limit and
    ``in_use`` the files open besides client sockets (None: ``FALLBACK_FDS``).
    ``GatedServer(fd_limit=...)`` sizes the automatic cap again once it listens."""
    auto = auto_max_sockets(
        fd_limit, FALLBACK_FDS if in_use is None else in_use, config.admin_reserve
    )
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


def _ip(address: Any) -> str:
    return address[0] if isinstance(address, tuple) else ""


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
    """``WSGIServer`` with the accept-level gate in front of its handler class.

    ``fd_limit``: the open-file limit, given when ``--max-sockets`` is automatic; then the
    cap is sized from the files open once the server listens (``auto_max_sockets``), and
    lowered if ``accept`` runs out of files after all."""

    clock: Clock = MonotonicClock()
    #: pre-chat sockets shed at once when an accept fails for want of file descriptors
    emfile_batch = 32
    #: seconds between looks at a socket held back while shed ones close, and the most it
    #: waits before it is refused after all (a shed socket whose app is still answering)
    park_poll = 0.01
    park_limit = 0.5

    def __init__(
        self, *args: Any, gate: AcceptGate, fd_limit: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.gate = gate
        self.fd_limit = fd_limit
        self.fds_at_start: int | None = None  #: files open when it started listening
        self._ticker: gevent.Greenlet | None = None
        self._quiet_until = float("-inf")
        self._pause: Any = None
        #: the accepted socket held back (sock, address, since) while accepting pauses
        self._parked: tuple[Any, Any, float] | None = None
        # Fine enough that a deadline fires within a tenth of the shortest phase, coarse
        # enough that the ticker costs nothing (a heap peek).
        self.tick = min(1.0, max(0.02, min(gate.timeouts.values()) / 10))

    def start(self) -> None:
        super().start()
        if self.fd_limit is not None and self.fds_at_start is None:
            # Listening, not yet serving: every file open now is not a client's.
            self.fds_at_start = open_fds()
            self.gate.max_sockets = auto_max_sockets(
                self.fd_limit,
                FALLBACK_FDS if self.fds_at_start is None else self.fds_at_start,
                self.gate.admin_reserve,
            )
            log.debug(
                "%s files open at start: up to %d sockets (+%d from loopback)",
                self.fds_at_start,
                self.gate.max_sockets,
                self.gate.admin_reserve,
            )
        if self._ticker is None:
            self._ticker = gevent.spawn(self._run_ticker)

    def stop_accepting(self) -> None:
        # A pause (out of files, or a socket held back) must not start accepting again
        # once the node has stopped accepting for good (shutdown).  The held-back socket
        # is closed like those still in the kernel's backlog.
        self._cancel_pause()
        if self._parked is not None:
            self._parked[0].close()
            self._parked = None
        super().stop_accepting()

    def close(self) -> None:
        self.stop_accepting()
        if self._ticker is not None:
            self._ticker.kill(block=False)
            self._ticker = None
        super().close()

    def _cancel_pause(self) -> None:
        if self._pause is not None:
            self._pause.close()
            self._pause = None

    def _pause_accepting(self, seconds: float, then: Any, repeat: float = 0.0) -> None:
        self._cancel_pause()
        super().stop_accepting()  # not ours: that would drop a held-back socket
        self._pause = self.loop.timer(seconds, repeat)
        self._pause.start(then)

    # --- accept ---------------------------------------------------------------------

    def do_read(self) -> Any:
        if self._parked is not None:
            return None  # a socket is held back: this accept batch ends here
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
            self._out_of_files(exc)
            for _ in range(self.emfile_batch):
                victim = self.gate.shed_oldest()
                if victim is None:
                    break
                self._drop(victim)
            self._pause_accepting(0.01, self._start_accepting_if_started)
            return None

    def _out_of_files(self, exc: OSError) -> None:
        # Logged once, then at most every 10 s: accepting is retried every 10 ms.
        now = self.clock.monotonic()
        if exc.errno == errno.EMFILE and self.fd_limit is not None:
            # Every file is taken, so the files that are not client sockets are the limit
            # minus the gate's count: more than the margin allowed for.  Size the
            # automatic cap from that, so that this does not happen again.
            in_use = self.fd_limit - self.gate.open
            cap = auto_max_sockets(self.fd_limit, in_use, self.gate.admin_reserve)
            if cap < self.gate.max_sockets:
                log.warning(
                    "out of file descriptors: %d files open besides client sockets (%s at "
                    "start); shedding the oldest connections not yet in chat, and the "
                    "automatic --max-sockets is now %d (was %d)",
                    in_use,
                    self.fds_at_start,
                    cap,
                    self.gate.max_sockets,
                )
                self.gate.max_sockets = cap
                self._quiet_until = now + 10.0
                return
        if now >= self._quiet_until:
            self._quiet_until = now + 10.0
            log.warning(
                "out of file descriptors (%s): shedding the oldest connection "
                "not yet in chat; lower --max-sockets",
                exc.strerror,
            )

    def do_handle(self, *args: Any) -> None:
        # Called by gevent's accept loop for each accepted socket, before the next accept:
        # the gate decides here, so a refused socket costs no greenlet and the gate never
        # misses more than this one socket (see the module docstring).
        sock, address = args
        if self.gate.must_wait(loopback=is_loopback(_ip(address))):
            # Full, and the sockets shed to make room still hold their files: rather than
            # refuse a client that a moment's wait lets in, hold this one back and stop
            # accepting (the kernel's backlog holds the next ones) until one has closed.
            self._parked = (sock, address, self.clock.monotonic())
            self._pause_accepting(self.park_poll, self._unpark, repeat=self.park_poll)
            return
        self._admit(sock, address)

    def _unpark(self) -> None:
        if self._parked is None:
            return
        sock, address, since = self._parked
        waited = self.clock.monotonic() - since
        if self.gate.must_wait(loopback=is_loopback(_ip(address))) and waited < self.park_limit:
            return  # the pause's timer looks again
        self._parked = None
        self._cancel_pause()
        self._admit(sock, address)  # past park_limit the gate refuses it: a 503
        self._start_accepting_if_started()

    def _admit(self, sock: Any, address: Any) -> None:
        ip = _ip(address)
        tls = self.ssl_enabled
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
            sock.close()
            return
        if not self.ssl_enabled and self._upgrade_at_once(sock, address, ticket):
            return
        try:
            if self._spawn is None:
                self._serve(sock, address, ticket)
            else:
                self._spawn(self._serve, sock, address, ticket)
        except BaseException:
            sock.close()
            self.gate.release(ticket)
            raise

    def _upgrade_at_once(self, sock: Any, address: Any, ticket: GateTicket) -> bool:
        """A WebSocket upgrade whose request is already here, done in the accept loop
        (``Handler.upgrade_at_once``): no greenlet. False: serve it the usual way."""
        upgrade = getattr(self.handler_class, "upgrade_at_once", None)
        if upgrade is None:
            return False
        handler = self.handler_class(sock, address, self)
        handler.gate_ticket = ticket
        try:
            conn = handler.upgrade_at_once()
        except Exception:  # never let one socket stop the accept loop: drop this one
            log.exception("upgrade of a connection from %s failed", _ip(address))
            sock.close()
            self.gate.release(ticket)
            return True
        if conn is None:
            return False
        # As _serve's end: the connection keeps the fd open until it is released.
        sock.close()
        conn.add_done_callback(partial(self.gate.release, ticket))
        return True

    def _serve(self, sock: Any, address: Any, ticket: GateTicket) -> None:
        """The socket's greenlet: TLS handshake, then the handler; close, then release."""
        conn: Any = None
        try:
            if self.ssl_enabled:
                # The TLS socket takes over the fd: it is what a shed or deadline shuts.
                sock = ticket.conn = self.wrap_socket(sock, **self.ssl_args)
                if not self._handshake(sock, ticket, ticket.ip):
                    return
            handler = self.handler_class(sock, address, self)
            handler.gate_ticket = ticket
            handler.handle()
            conn = handler.handed_over
        finally:
            try:
                # A chat socket's fd stays open through its reader (hubbub/transport.py):
                # it holds its place at the gate until the connection is released.
                sock.close()
            finally:
                if conn is not None:
                    conn.add_done_callback(partial(self.gate.release, ticket))
                else:
                    self.gate.release(ticket)
                    if self._parked is not None:
                        # One fewer socket on its way out: maybe the held-back one fits.
                        self.loop.run_callback(self._unpark)

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
