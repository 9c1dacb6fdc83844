"""``--workers N``: N server processes on one port, one chat through ``--redis``.

One gevent process uses one core.  The master process forks N workers and then only
supervises; it serves nothing.  Each worker is a complete node (its own actor tree,
scheduler and timers, its own node id in the cluster) with its own listening socket
bound with ``SO_REUSEPORT``, so the kernel spreads new connections over the workers.
They share rooms, nicks, dms and kicks through Redis exactly like nodes on different
machines (docs/cluster.md); that is why config.py refuses ``--workers > 1`` without
``--redis``.

The master prints the one ``hubbub listening on ...`` line once every worker listens,
passes SIGTERM / SIGINT on to the workers (each says `bye` `shutdown` to its users and
exits 0) and starts a worker again if one dies.  Each worker runs ``server.main``, which
raises its own open-file limit to the hard limit: the users' sockets are per process.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event

__all__ = ["listen_reuseport", "run_workers"]

log = logging.getLogger("hubbub.workers")

READY_WAIT = 15.0
"""Seconds the workers get to start listening (each one waits up to 2 s for Redis)."""
STOP_WAIT = 4.8
"""After SIGTERM, seconds before the master kills workers that are still running: the
contract says the process exits within 5 s."""
RESPAWN_PAUSE = 1.0
"""A worker that died is started again this much later (not a busy loop of forks)."""

NodeRunner = Callable[[socket.socket, Callable[[str], None]], int]
"""Runs one node on a listening socket; calls ready(url) once it serves; returns the exit code."""


def _address(host: str, port: int) -> tuple[int, Any]:
    family, _type, _proto, _name, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return family, sockaddr


def listen_reuseport(
    host: str, port: int, backlog: int = socket.SOMAXCONN, listen: bool = True
) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEPORT (and listening, by default)."""
    family, sockaddr = _address(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(sockaddr)
    if listen:
        sock.listen(backlog)
    return sock


def _port_is_free(host: str, port: int) -> None:
    """Raise OSError(EADDRINUSE) if anything listens on the port, SO_REUSEPORT or not.

    Sockets that all set SO_REUSEPORT share a port silently: without this check a second
    ``hubbub --workers 2 --port 8080`` of the same user would take half of the first
    one's connections instead of failing.
    """
    family, sockaddr = _address(host, port)
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no user
        probe.bind(sockaddr)
    finally:
        probe.close()


class _Master:
    def __init__(self, config: Any, run_node: NodeRunner) -> None:
        self.config = config
        self.run_node = run_node
        self.workers: dict[int, int] = {}
        """slot → pid."""
        self.port = config.port
        self.reservation: socket.socket | None = None
        self.ready_r, self.ready_w = socket.socketpair()

    def fork(self, slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                self.ready_r.close()
                if self.reservation is not None:
                    self.reservation.close()
                listener = listen_reuseport(self.config.host, self.port)
                code = self.run_node(listener, lambda _url: self.ready_w.sendall(b"."))
            except BaseException:  # noqa: BLE001 - a worker never returns into the master's code
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.workers[slot] = pid

    def reap(self) -> dict[int, int]:
        """slot → exit code of every worker that ended since the last call."""
        ended = {}
        for slot, pid in list(self.workers.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                ended[slot] = os.waitstatus_to_exitcode(status)
                del self.workers[slot]
        return ended

    def start(self) -> int | None:
        """Fork every worker and wait until all listen; an exit code if that failed."""
        config = self.config
        try:
            if config.port:
                _port_is_free(config.host, config.port)
            # Holds the port (for --port 0: picks it) until the workers have their own.
            self.reservation = listen_reuseport(config.host, config.port, listen=False)
        except OSError as exc:
            why = exc.strerror or str(exc)
            if exc.errno == errno.EADDRINUSE:
                why = "address already in use"
            print(
                f"hubbub: error: cannot listen on {config.host}:{config.port}: {why}",
                file=sys.stderr,
            )
            return 2
        self.port = self.reservation.getsockname()[1]
        for slot in range(config.workers):
            self.fork(slot)
        ready, deadline = 0, time.monotonic() + READY_WAIT
        self.ready_r.settimeout(0.1)
        while ready < config.workers:
            try:
                ready += len(self.ready_r.recv(64))
            except TimeoutError:
                pass
            ended = self.reap()
            if ended or time.monotonic() > deadline:
                what = (
                    f"exited with code {next(iter(ended.values()))}"
                    if ended
                    else "did not start in time"
                )
                print(f"hubbub: error: a worker {what}", file=sys.stderr)
                self.stop()
                return 2
        self.reservation.close()
        self.reservation = None
        return None

    def supervise(self, stopping: gevent.event.Event) -> None:
        while not stopping.wait(0.2):
            for slot, code in self.reap().items():
                log.error("worker %d exited with code %d; starting it again", slot, code)
                gevent.sleep(RESPAWN_PAUSE)
                if not stopping.is_set():
                    self.fork(slot)

    def stop(self) -> int:
        """SIGTERM every worker, wait (bounded), kill the rest; 0 if all exited 0."""
        for slot, code in self.reap().items():  # died on its own: not an answer to SIGTERM
            log.error("worker %d had exited with code %d", slot, code)
        for pid in self.workers.values():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        worst, deadline = 0, time.monotonic() + STOP_WAIT
        while self.workers and time.monotonic() < deadline:
            for code in self.reap().values():
                worst = worst or code
            gevent.sleep(0.05)
        for pid in self.workers.values():
            log.error("worker pid %d did not stop in time; killed", pid)
            os.kill(pid, signal.SIGKILL)
            worst = worst or 1
        self.workers.clear()
        return worst


def run_workers(config: Any, run_node: NodeRunner) -> int:
    """The master process: fork ``config.workers`` nodes on one port and supervise them."""
    master = _Master(config, run_node)
    failed = master.start()
    if failed is not None:
        return failed
    scheme = "https" if config.certfile else "http"
    print(f"hubbub listening on {scheme}://{config.host}:{master.port}", flush=True)
    stopping = gevent.event.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stopping.set)
    master.supervise(stopping)
    log.info("stopping %d workers", len(master.workers))
    return master.stop()
