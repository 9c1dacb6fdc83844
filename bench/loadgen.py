"""The load generator worker: one process, one epoll loop, thousands of raw sockets.

``harness.Fleet`` forks several of these, pinned to the load core. Each takes commands
from the coordinator over a ``multiprocessing`` pipe (a dict in, a dict out) and runs
them on its own share of the connections. The pipe is one more fd in the epoll set,
so pings are answered while a command runs and between commands, and no command ever
blocks the loop.

Cheap on purpose, so that the server, not this, is the bottleneck: raw non-blocking
sockets and ``select.epoll`` (no asyncio, no library parser), frames masked once
(``wire``), server frames recognised by the 3 bytes after ``{"type":"`` (both servers
write compact JSON with ``type`` first), and only every ``sample_every``-th receiver
parses a message for its latency and ``seq``; the others count.

Bounded: every command has a deadline and answers when it passes; the worker exits
when the coordinator's end of the pipe closes or after ``LIFETIME`` seconds.
"""

from __future__ import annotations

import errno
import os
import resource
import select
import socket
import struct
import time
from array import array
from collections import Counter
from typing import Any

from . import wire

__all__ = ["main", "Worker"]

LIFETIME = 3600.0  #: seconds; a worker never outlives this, whatever happens to its parent
IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h: pick the port at connect(), per 4-tuple

# Connection states.
CONNECTING, UPGRADING, WELCOME, PROFILE, JOIN, READY, OPEN, CLOSED = range(8)
GOALS = {"upgrade": OPEN, "hello": WELCOME, "profile": PROFILE, "join": JOIN}

EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
EPOLLERR, EPOLLHUP = select.EPOLLERR, select.EPOLLHUP
_LINGER_0 = struct.pack("ii", 1, 0)
_PREFIX = b'{"type":"'
monotonic = time.monotonic


def source_ip(n: int) -> str:
    """The n-th loopback address (n >= 1): 127.0.0.n up to 255, then 127.0.1.0, ...

    Spreading clients over source addresses keeps each (source, destination) pair
    well inside the ephemeral port range, and is what per-IP limits see.
    """
    return f"127.0.{n >> 8}.{n & 255}"


class Conn:
    """One client socket and what was seen on it."""

    __slots__ = (
        "sock", "fd", "gid", "state", "goal", "nick", "room", "rbuf", "wbuf", "sample",
        "t_start", "t_open", "t_ready", "t_close", "t_last", "code", "why",
        "msgs", "pings", "errors", "last_seq", "gaps",
        "sender", "sent", "acked", "outstanding", "due",
    )  # fmt: skip

    def __init__(self, gid: int, goal: int, nick: str, room: str, sample: bool) -> None:
        self.gid, self.goal, self.nick, self.room, self.sample = gid, goal, nick, room, sample
        self.state = CONNECTING
        self.sock: socket.socket | None = None
        self.fd = -1
        self.rbuf = b""
        self.wbuf = b""
        self.t_start = self.t_open = self.t_ready = self.t_close = self.t_last = 0.0
        self.code = 0
        self.why = ""
        self.msgs = self.pings = self.errors = self.gaps = 0
        self.last_seq = -1
        self.sender = False
        self.sent = self.acked = self.outstanding = 0
        self.due = 0.0


class Worker:
    def __init__(self, pipe: Any, index: int) -> None:
        self.pipe = pipe
        self.index = index
        self.ep = select.epoll()
        self.ctrl = pipe.fileno()
        self.ep.register(self.ctrl, EPOLLIN)
        self.conns: dict[int, Conn] = {}  # fd → open socket
        self.all: list[Conn] = []  # every connection of the current set, open or not
        self.by_gid: dict[int, Conn] = {}
        self.cmd: dict[str, Any] | None = None  # the command running
        self.deadline = 0.0
        self.lat = array("d")  # latency samples (seconds) since the last fanout
        self.addr: tuple[str, int] = ("127.0.0.1", 0)
        self.request = b""
        self.pending: list[Conn] = []  # login: not started yet
        self.inflight = 0
        self.senders: list[Conn] = []
        self.sending = False
        self.lag = 0.0  # paced: worst lateness of a send against its schedule
        self.say_prefix = b""
        self.batch: list[Conn] = []  # login: this command's connections
        self.per_ip, self.ip_base = 4000, 2
        self.hold_until = self.stop_at = 0.0
        self.closed_now = 0
        self.quit = False
        self.t_poll = monotonic()  # when the last poll returned (see run)
        self.awaiting: list[Conn] = []  # the storm's opened sockets (await_close)
        self.await_i = 0
        self.t0 = monotonic()

    # --- the loop ---------------------------------------------------------------------

    def run(self) -> None:
        end = self.t0 + LIFETIME
        poll, conns, ctrl = self.ep.poll, self.conns, self.ctrl
        while not self.quit:
            now = monotonic()
            if now > end:
                break
            timeout = 0.005 if self.cmd is not None else 0.2
            events = poll(timeout, 4096)
            # When the kernel had these bytes (to within this poll's return): the time
            # stamped on a 101, a close frame or a sampled message's receipt, however long
            # this batch takes to handle.
            # Under a burst (3,000 storm closes in half a second) handling lags, and the
            # load generator's own lag must not count as the server's.
            self.t_poll = monotonic()
            for fd, ev in events:
                if fd == ctrl:
                    if not self.command():
                        return
                    continue
                c = conns.get(fd)
                if c is None:
                    continue
                if ev == EPOLLIN and c.state == READY and not c.sample and not c.rbuf:
                    self.counting(c)  # the bulk of a fan-out: a member that only counts
                    continue
                if ev & EPOLLOUT:
                    self.writable(c)
                if ev & (EPOLLIN | EPOLLERR | EPOLLHUP) and c.state != CLOSED:
                    self.readable(c)
            if self.cmd is not None:
                self.step(monotonic())

    def command(self) -> bool:
        try:
            cmd = self.pipe.recv()
        except (EOFError, OSError):
            return False  # the coordinator is gone
        name = cmd["cmd"]
        if name == "quit":
            self.quit = True
            return False
        self.cmd = cmd
        self.deadline = monotonic() + cmd.get("timeout", 30.0)
        getattr(self, "start_" + name)(cmd)
        return True

    def reply(self, result: dict[str, Any]) -> None:
        t = os.times()
        result["cpu"] = t.user + t.system
        result["worker"] = self.index
        self.cmd = None
        self.pipe.send(result)

    def step(self, now: float) -> None:
        cmd = self.cmd
        assert cmd is not None
        getattr(self, "step_" + cmd["cmd"])(cmd, now, now > self.deadline)

    # --- sockets ----------------------------------------------------------------------

    def open(self, c: Conn, ip: str) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((ip, 0))
        except OSError as exc:
            sock.close()
            return self.fail(c, f"bind {ip}: {exc.strerror}")
        c.sock, c.fd, c.t_start = sock, sock.fileno(), monotonic()
        self.conns[c.fd] = c
        err = sock.connect_ex(self.addr)
        if err in (0, errno.EINPROGRESS):
            self.ep.register(c.fd, EPOLLOUT)
        else:
            self.fail(c, f"connect: {os.strerror(err)}")

    def send(self, c: Conn, data: bytes) -> None:
        if c.state == CLOSED:
            return
        if c.wbuf:
            c.wbuf += data
            return
        try:
            n = c.sock.send(data)  # type: ignore[union-attr]  # only connected clients (sock set) are polled
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            return self.lost(c, exc.strerror or "send failed")
        if n < len(data):
            c.wbuf = data[n:]
            self.ep.modify(c.fd, EPOLLIN | EPOLLOUT)

    def writable(self, c: Conn) -> None:
        if c.state == CONNECTING:
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # type: ignore[union-attr]  # only connected clients (sock set) are polled
            if err:
                return self.fail(c, f"connect: {os.strerror(err)}")
            c.state = UPGRADING
            self.ep.modify(c.fd, EPOLLIN)
            return self.send(c, self.request)
        data, c.wbuf = c.wbuf, b""
        self.ep.modify(c.fd, EPOLLIN)
        if data:
            self.send(c, data)

    def readable(self, c: Conn) -> None:
        try:
            data = c.sock.recv(65536)  # type: ignore[union-attr]  # only connected clients (sock set) are polled
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            return self.lost(c, exc.strerror or "recv failed")
        if not data:
            return self.lost(c, "eof")
        if c.state == UPGRADING:
            buf = c.rbuf + data
            head = wire.parse_response(buf)
            if head is None:
                c.rbuf = buf
                return
            status, size = head
            if status != 101:
                return self.fail(c, f"http {status}")
            c.t_open = self.t_poll
            c.rbuf, data = b"", buf[size:]
            if c.goal == OPEN:
                c.state = OPEN
                self.done(c)
            else:
                c.state = WELCOME
                self.send(c, wire.HELLO)
            if not data:
                return
        frames, c.rbuf = wire.split_frames(c.rbuf + data if c.rbuf else data)
        return self.frames(c, frames)

    def counting(self, c: Conn) -> None:
        """``readable`` for a logged-in member that does not sample: walks the frames in
        place and counts messages without copying them; anything but a short text frame
        that is a message or a ping goes the general way."""
        try:
            buf = c.sock.recv(65536)  # type: ignore[union-attr]  # only connected clients (sock set) are polled
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            return self.lost(c, exc.strerror or "recv failed")
        if not buf:
            return self.lost(c, "eof")
        pos, n, msgs = 0, len(buf), 0
        while n - pos >= 14:
            length = buf[pos + 1]
            if buf[pos] != 0x81 or length > 125:
                break  # not a short final text frame (server frames are never masked)
            end = pos + 2 + length
            if end > n:
                break
            kind = buf[pos + 11 : pos + 14]  # {"type":" is 9 bytes after the 2-byte header
            if kind == b"mes":
                msgs += 1
            elif kind == b"pin":
                c.pings += 1
                self.send(c, wire.PONG)
            else:
                break
            pos = end
        if msgs:
            c.msgs += msgs
            c.t_last = monotonic()
        if pos < n:  # the rest, frame by frame (and what is left of a partial frame)
            frames, c.rbuf = wire.split_frames(buf[pos:] if pos else buf)
            return self.frames(c, frames)

    def frames(self, c: Conn, frames: list[tuple[int, bytes]]) -> None:
        """Handle whole server frames: text parsed, close recorded, ping answered."""
        for op, payload in frames:
            if op == wire.OP_TEXT:
                self.text(c, payload)
            elif op == wire.OP_CLOSE:
                return self.closed(c, payload)
            elif op == wire.OP_PING:
                self.send(c, wire.masked(payload, wire.OP_PONG))
            elif op != wire.OP_PONG:
                c.errors += 1
        return None

    def text(self, c: Conn, payload: bytes) -> None:
        kind = payload[9:12] if payload.startswith(_PREFIX) else b"???"
        if kind == b"mes":
            c.msgs += 1
            c.t_last = monotonic()
            if c.sample:
                self.sampled(c, payload, self.t_poll)  # received: when the poll returned
        elif kind == b"pin":
            c.pings += 1
            self.send(c, wire.PONG)
        elif kind == b"ack":
            c.acked += 1
            c.outstanding -= 1
            if self.sending and self.cmd is not None and self.cmd.get("rate") is None:
                self.say(c, monotonic())  # saturated: one out for each one acked
        elif kind == b"pre" or kind == b"pon":
            pass
        elif kind == b"wel" and c.state == WELCOME:
            if c.goal == WELCOME:
                return self.done(c)
            c.state = PROFILE
            self.send(c, wire.masked(b'{"type":"profile","nick":"%s"}' % c.nick.encode()))
        elif kind == b"pro" and c.state == PROFILE:
            if c.goal == PROFILE:
                return self.done(c)
            c.state = JOIN
            self.send(c, wire.masked(b'{"type":"join","room":"%s"}' % c.room.encode()))
        elif kind == b"joi" and c.state == JOIN:
            self.done(c)
        elif kind == b"bye":
            pass  # the close frame follows; its code is what counts
        else:
            c.errors += 1
            if c.state in (WELCOME, PROFILE, JOIN):
                self.fail(c, payload[:60].decode("utf-8", "replace"))

    def sampled(self, c: Conn, payload: bytes, now: float) -> None:
        # {"type":"message","room":"fan","from":"u3","text":"3 17 12345.678901","seq":42,"ts":...}
        i = payload.find(b'"text":"') + 8
        j = payload.find(b'"', i)
        try:
            self.lat.append(now - float(payload[i:j].rsplit(b" ", 1)[1]))
        except (IndexError, ValueError):
            c.errors += 1
        k = payload.find(b'"seq":', j) + 6
        end = payload.find(b",", k)
        seq = int(payload[k : end if end > 0 else payload.find(b"}", k)])
        if c.last_seq >= 0 and seq != c.last_seq + 1:
            c.gaps += 1
        c.last_seq = seq

    def closed(self, c: Conn, payload: bytes) -> None:
        """The server's close frame: echo it (§5.5.1), then drop the socket."""
        c.code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        c.t_close = self.t_poll
        self.send(c, wire.masked_close(c.code if c.code != 1005 else 1000))
        if c.state in (READY, OPEN):
            self.drop(c, linger=False)
        else:  # closed while logging in
            self.fail(c, f"closed {c.code}")

    def lost(self, c: Conn, why: str) -> None:
        if c.state in (READY, OPEN):
            c.code, c.t_close, c.why = 1006, monotonic(), why
            self.drop(c)
        else:
            self.fail(c, why)

    def fail(self, c: Conn, why: str) -> None:
        """A login that did not complete."""
        if c.state == CLOSED:
            return
        c.why = why
        c.code = c.code or -1
        self.drop(c)
        self.inflight -= 1

    def drop(self, c: Conn, linger: bool = True) -> None:
        if c.state == CLOSED:
            return
        c.state = CLOSED
        if c.sock is not None:
            self.conns.pop(c.fd, None)
            try:
                self.ep.unregister(c.fd)
            except (OSError, ValueError):
                pass
            if linger:
                try:  # reset, not FIN: no TIME_WAIT left behind for the next run
                    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
                except OSError:
                    pass
            c.sock.close()

    def done(self, c: Conn) -> None:
        """A login reached its goal."""
        if c.goal != OPEN:
            c.state = READY
        c.t_ready = monotonic()
        self.inflight -= 1

    # --- login: open connections and bring each to its goal ---------------------------

    def start_login(self, cmd: dict[str, Any]) -> None:
        self.addr = (cmd["host"], cmd["port"])
        self.request = wire.upgrade_request(*self.addr)
        goal = GOALS[cmd["goal"]]
        gid0, room, size = cmd["gid0"], cmd.get("room"), cmd.get("room_size", 10)
        every = cmd.get("sample_every", 10)
        self.pending = [
            Conn(g, goal, f"{cmd.get('prefix', 'u')}{g}", room or f"r{g // size}", g % every == 0)
            for g in range(gid0 + cmd["count"] - 1, gid0 - 1, -1)  # popped from the end
        ]
        self.batch = list(reversed(self.pending))
        self.all.extend(self.batch)
        self.by_gid.update((c.gid, c) for c in self.batch)
        self.inflight = 0
        self.per_ip = cmd.get("per_ip", 4000)
        self.ip_base = cmd.get("ip_base", 2)

    def step_login(self, cmd: dict[str, Any], now: float, late: bool) -> None:
        window = cmd.get("window", 32)
        while self.pending and self.inflight < window:
            c = self.pending.pop()
            self.inflight += 1
            self.open(c, source_ip(self.ip_base + c.gid // self.per_ip))
        if self.pending or self.inflight > 0:
            if not late:
                return
            for c in self.batch:  # the deadline passed: whatever is still logging in failed
                if c.state not in (READY, OPEN, CLOSED):
                    self.fail(c, "timeout")
            self.pending = []
        # t_ready: the goal was reached (a storm socket may be closed again already)
        ok = [c for c in self.batch if c.t_ready]
        took = array("d", (c.t_ready - c.t_start for c in ok))
        self.reply(
            {
                "ok": len(ok),
                "failed": len(self.batch) - len(ok),
                "why": dict(Counter(c.why for c in self.batch if not c.t_ready)),
                "t_first": min((c.t_start for c in self.batch), default=0.0),
                "t_last": max((c.t_ready for c in ok), default=0.0),
                "took": took,
            }
        )

    # --- hold: keep the connections and count pings -----------------------------------

    def live(self) -> list[Conn]:
        return [c for c in self.all if c.state in (READY, OPEN)]

    def start_hold(self, cmd: dict[str, Any]) -> None:
        for c in self.all:
            c.pings = 0
        self.hold_until = monotonic() + cmd["seconds"]

    def step_hold(self, cmd: dict[str, Any], now: float, late: bool) -> None:
        if now < self.hold_until and not late:
            return
        live = self.live()
        held = [c for c in self.all if c.t_ready]
        self.reply(
            {
                "live": len(live),
                "lost": len(held) - len(live),
                "codes": dict(Counter(c.code for c in held if c.state == CLOSED)),
                "why": dict(Counter(c.why for c in held if c.state == CLOSED and c.why)),
                "pings_min": min((c.pings for c in live), default=0),
                "pings_max": max((c.pings for c in live), default=0),
                "answering": sum(1 for c in live if c.pings >= cmd.get("min_pings", 1)),
            }
        )

    # --- fan-out: senders say, everyone counts ----------------------------------------

    def start_fanout(self, cmd: dict[str, Any]) -> None:
        now = monotonic()
        self.lat = array("d")
        for c in self.all:
            c.msgs = c.gaps = c.sent = c.acked = c.outstanding = 0
            c.last_seq, c.t_last, c.sender = -1, 0.0, False
        # senders: gid → when in the period to send (0..1), so that the senders of all
        # workers do not fire together
        offsets = cmd["senders"]
        self.senders = [self.by_gid[g] for g in offsets if g in self.by_gid]
        room = cmd["room"].encode()
        self.say_prefix = b'{"type":"say","room":"%s","id":"' % room
        self.stop_at = now + cmd["seconds"]
        self.sending, self.lag = True, 0.0
        rate = cmd.get("rate")
        for c in self.senders:
            c.sender = True
            if rate is None:
                for _ in range(cmd.get("window", 2)):
                    self.say(c, now)
            else:
                c.due = now + offsets[c.gid] / rate

    def say(self, c: Conn, now: float) -> None:
        if c.state != READY:
            return
        c.sent += 1
        c.outstanding += 1
        # the text carries the sender, a counter and the send time (CLOCK_MONOTONIC is
        # one clock for every process of the machine)
        self.send(
            c,
            wire.masked(
                b'%s%d","text":"%d %d %.6f"}' % (self.say_prefix, c.sent, c.gid, c.sent, now)
            ),
        )

    def step_fanout(self, cmd: dict[str, Any], now: float, late: bool) -> None:
        rate = cmd.get("rate")
        if self.sending:
            if now >= self.stop_at or late:
                self.sending = False
            elif rate is not None:
                period = 1.0 / rate
                for c in self.senders:
                    n = 0
                    while c.due <= now and n < 100:
                        self.lag = max(self.lag, now - c.due)
                        self.say(c, monotonic())
                        c.due += period
                        n += 1
            return
        if any(c.outstanding > 0 and c.state == READY for c in self.senders) and not late:
            return  # the last says are still on their way: wait for their acks
        self.reply(
            {
                "sent": {c.gid: c.sent for c in self.senders},
                "acked": {c.gid: c.acked for c in self.senders},
                "lag": self.lag,
            }
        )

    def start_drain(self, cmd: dict[str, Any]) -> None:
        pass

    def step_drain(self, cmd: dict[str, Any], now: float, late: bool) -> None:
        live = self.live()
        expect = cmd["expect"]
        if not late and any(c.msgs < expect for c in live):
            return
        self.reply(
            {
                "received": sum(c.msgs for c in live),
                "receivers": len(live),
                "min": min((c.msgs for c in live), default=0),
                "max": max((c.msgs for c in live), default=0),
                "short": sum(max(0, expect - c.msgs) for c in live),
                "lost_conns": sum(1 for c in self.all if c.t_ready and c.state == CLOSED),
                "gaps": sum(c.gaps for c in live),
                "errors": sum(c.errors for c in self.all),
                "t_last": max((c.t_last for c in live), default=0.0),
                "lat": self.lat,
            }
        )

    # --- hello storm: wait for the server to close every socket -----------------------

    def start_await_close(self, cmd: dict[str, Any]) -> None:
        self.awaiting = [c for c in self.all if c.t_open]
        self.await_i = 0

    def step_await_close(self, cmd: dict[str, Any], now: float, late: bool) -> None:
        # Called after every poll: amortised O(1) (a cursor over the sockets, which close
        # in any order), not a scan of them all, or the load generator itself falls
        # behind during the burst of closes it is timing.
        opened, i = self.awaiting, self.await_i
        while i < len(opened) and opened[i].state == CLOSED:
            i += 1
        self.await_i = i
        if not late and i < len(opened):
            return
        after = cmd["after"]
        self.reply(
            {
                "opened": len(opened),
                "still_open": sum(1 for c in opened if c.state != CLOSED),
                "codes": dict(Counter(c.code for c in opened if c.state == CLOSED)),
                "late": array(
                    "d", (c.t_close - c.t_open - after for c in opened if c.state == CLOSED)
                ),
            }
        )

    # --- teardown ---------------------------------------------------------------------

    def start_close_all(self, cmd: dict[str, Any]) -> None:
        n = 0
        for c in self.all:
            if c.state != CLOSED:
                self.drop(c)
                n += 1
        self.all, self.by_gid, self.pending = [], {}, []
        self.inflight = 0
        self.lat = array("d")
        self.closed_now = n

    def step_close_all(self, cmd: dict[str, Any], now: float, late: bool) -> None:
        self.reply({"closed": self.closed_now})

    def start_cpu(self, cmd: dict[str, Any]) -> None:
        pass

    def step_cpu(self, cmd: dict[str, Any], now: float, late: bool) -> None:
        self.reply({})


def main(pipe: Any, index: int, core: int | None) -> None:
    """Entry point of a worker process (``harness.Fleet`` forks it)."""
    if core is not None:
        os.sched_setaffinity(0, {core})
    # The open-file limit: soft up to hard (20,000 on these machines).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    worker = Worker(pipe, index)
    try:
        worker.run()
    finally:
        for c in list(worker.conns.values()):
            worker.drop(c)
        worker.ep.close()
