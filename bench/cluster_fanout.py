"""Fan-out across workers: messages delivered per second in one room, 2 workers vs 1 node.

    python -m bench.cluster_fanout                  # defaults below, best of 3 runs each
    python -m bench.cluster_fanout --receivers 400 --seconds 8 --runs 5

One room of R receivers and S senders.  Each sender keeps W of its own says in flight
(sent, not yet seen come back as a `message`), so the server sets the pace and no
client backlog grows without bound.  Deliveries per second are every `message` frame
read by every member, divided by the time from the first say to the last delivery
(the senders stop after ``--seconds``; the tail is drained and counted).

Three setups, each a fresh server on a free port:

* ``1 node``: ``python server.py`` alone, the embedded default (no Redis);
* ``1 node + redis``: the same process in a cluster of one (every say through Redis);
* ``2 workers + redis``: ``--workers 2``: two processes on one port, one room.

The load generator is one process of raw non-blocking sockets and ``select.epoll``:
receivers count ``"type":"message"`` in what they read (bytes.count, no parsing).  Its
CPU time is printed next to the servers': on a machine with few cores the clients,
Redis and the workers share them, and the ratio says as much about the machine as
about hubbub.  A real redis-server is started on a free port with no persistence.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import resource
import select
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scenarios import HUBBUB_LIFTED  # noqa: E402 - after the path
from tests.support.redis_fixture import RedisServer  # noqa: E402 - after the path

# Flood control and per-IP limits would throttle the senders; a backlog limit that
# cannot trip during a run; pings that never come during one.
LIFTED = [
    *HUBBUB_LIFTED,
    "--max-backlog",
    str(256 * 1024 * 1024),
    "--ping-interval",
    "600",
    "--pong-timeout",
    "1200",
]
MASK = b"\x5a\xc3\x17\xe9"
MESSAGE = b'"type":"message"'


def masked(payload: bytes) -> bytes:
    """One final client text frame (RFC 6455 §5.2; payloads here are < 64 KiB)."""
    n = len(payload)
    head = bytes((0x81, 0x80 | n)) if n < 126 else bytes((0x81, 0xFE)) + n.to_bytes(2, "big")
    key = (MASK * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + MASK + body


# --- servers ------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


class Node:
    """``python server.py --port 0 ...`` and its listening URL."""

    def __init__(self, *flags: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
        self.log = open(os.devnull, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "server.py", "--port", "0", *LIFTED, *flags],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]  # stdout=PIPE: never None
        match = re.match(r"hubbub listening on http://([^:]+):(\d+)", line)
        if not match:
            self.stop()
            raise RuntimeError(f"server did not start: {line!r}")
        self.host, self.port = match.group(1), int(match.group(2))

    def pids(self) -> list[int]:
        """The process and its children (the workers)."""
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            try:
                kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                kids = []
            todo.extend(int(k) for k in kids)
        return out

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# --- clients ------------------------------------------------------------------------


@dataclass
class Member:
    sock: socket.socket
    nick: str
    sender: bool
    seen: int = 0
    """`message` frames read."""
    mine: int = 0
    """Of them, this sender's own."""
    sent: int = 0
    tail: bytes = b""
    marker: bytes = field(default=b"")


def _read_until(sock: socket.socket, token: bytes, buf: bytes = b"") -> bytes:
    while token not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before {token!r}")
        buf += chunk
    return buf


def connect(host: str, port: int, nick: str, room: str, sender: bool) -> Member:
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    buf = _read_until(sock, b"\r\n\r\n")
    if b" 101 " not in buf.split(b"\r\n", 1)[0]:
        raise ConnectionError(f"upgrade refused: {buf[:80]!r}")
    buf = buf.split(b"\r\n\r\n", 1)[1]
    sock.sendall(masked(b'{"type":"hello"}'))
    buf = _read_until(sock, b'"welcome"', buf)
    sock.sendall(masked(b'{"type":"profile","nick":"%s"}' % nick.encode()))
    buf = _read_until(sock, b'"profile_ok"', buf)
    sock.sendall(masked(b'{"type":"join","room":"%s"}' % room.encode()))
    _read_until(sock, b'"joined"', buf)
    sock.setblocking(False)
    member = Member(sock, nick, sender)
    member.marker = b'"from":"%s"' % nick.encode()
    return member


def run_load(
    host: str,
    port: int,
    receivers: int,
    senders: int,
    window: int,
    seconds: float,
    room: str = "fanout",
) -> dict[str, Any]:
    """One measurement: returns deliveries/s and the counts behind it."""
    members = [connect(host, port, f"s{i}", room, True) for i in range(senders)]
    members += [connect(host, port, f"r{i}", room, False) for i in range(receivers)]
    time.sleep(0.5)  # the joins' presence frames arrive and are drained below
    poll = select.epoll()
    by_fd = {m.sock.fileno(): m for m in members}
    for fd in by_fd:
        poll.register(fd, select.EPOLLIN)
    for m in members:  # drain presence
        try:
            while m.sock.recv(1 << 20):
                pass
        except BlockingIOError:
            pass
    say = {
        m.nick: masked(
            b'{"type":"say","room":"%s","text":"fan-out benchmark payload"}' % room.encode()
        )
        for m in members
        if m.sender
    }
    members_count = len(members)
    start = time.monotonic()
    stop_sending = start + seconds
    last_delivery = start
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    for m in members:
        if m.sender:
            m.sock.sendall(say[m.nick] * window)
            m.sent = window
    while True:
        now = time.monotonic()
        sending = now < stop_sending
        expected = sum(m.sent for m in members if m.sender) * members_count
        delivered = sum(m.seen for m in members)
        if not sending and delivered >= expected:
            break
        if now > stop_sending + 30:
            raise RuntimeError(f"deliveries stalled: {delivered} of {expected}")
        for fd, _ev in poll.poll(0.5):
            m = by_fd[fd]
            try:
                data = m.sock.recv(1 << 20)
            except BlockingIOError:
                continue
            if not data:
                raise RuntimeError(f"{m.nick}: the server closed the connection")
            chunk = m.tail + data
            n = chunk.count(MESSAGE)
            if n:
                m.seen += n
                last_delivery = time.monotonic()
            if m.sender:
                mine = chunk.count(m.marker)
                m.mine += mine
                if sending and m.sent - m.mine < window:
                    more = window - (m.sent - m.mine)
                    m.sock.sendall(say[m.nick] * more)
                    m.sent += more
            # Keep a short tail: a marker split across two reads is counted once.
            m.tail = chunk[-(len(m.marker) - 1) :] if m.sender else chunk[-(len(MESSAGE) - 1) :]
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = last_delivery - start
    delivered = sum(m.seen for m in members)
    for m in members:
        m.sock.close()
    poll.close()
    return {
        "deliveries": delivered,
        "messages": sum(m.sent for m in members if m.sender),
        "seconds": elapsed,
        "per_second": delivered / elapsed,
        "client_cpu": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
    }


SETUPS: dict[str, list[str]] = {
    "1 node": [],
    "1 node + redis": ["--redis", "{redis}"],
    "2 workers + redis": ["--redis", "{redis}", "--workers", "2"],
}


def measure(setup: str, args: argparse.Namespace, redis: RedisServer) -> dict[str, Any]:
    flags = [f.format(redis=redis.url) for f in SETUPS[setup]]
    node = Node(*flags)
    redis_pid = redis.proc.pid if redis.proc is not None else 0
    try:
        cpu0, rcpu0 = node.cpu_seconds(), cpu_seconds(redis_pid)
        result = run_load(
            node.host, node.port, args.receivers, args.senders, args.window, args.seconds
        )
        result["server_cpu"] = node.cpu_seconds() - cpu0
        result["redis_cpu"] = cpu_seconds(redis_pid) - rcpu0
        return result
    finally:
        node.stop()
        redis.command("FLUSHALL")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.cluster_fanout", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--receivers", type=int, default=200, help="members that only read (default 200)"
    )
    p.add_argument("--senders", type=int, default=4, help="members that also say (default 4)")
    p.add_argument("--window", type=int, default=16, help="says in flight per sender (default 16)")
    p.add_argument("--seconds", type=float, default=5.0, help="sending time per run (default 5)")
    p.add_argument(
        "--runs", type=int, default=3, help="runs per setup; the best is reported (default 3)"
    )
    p.add_argument(
        "--setups", default=",".join(SETUPS), help="comma-separated subset of: " + ", ".join(SETUPS)
    )
    args = p.parse_args(argv)
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    redis = RedisServer().start()
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        for run in range(args.runs):  # interleaved: a noisy minute hits every setup alike
            for setup in setups:
                r = measure(setup, args, redis)
                results.setdefault(setup, []).append(r)
                print(
                    f"run {run + 1} {setup:<18} {r['per_second']:>10,.0f} deliveries/s "
                    f"({r['messages']} messages to {args.receivers + args.senders} members in {r['seconds']:.2f} s; "
                    f"cpu: server {r['server_cpu']:.1f} s, redis {r['redis_cpu']:.1f} s, "
                    f"clients {r['client_cpu']:.1f} s)",
                    file=sys.stderr,
                )
    finally:
        redis.close()
    print(
        f"\none room, {args.receivers} receivers + {args.senders} senders (window {args.window}), "
        f"{args.seconds:g} s per run, best of {args.runs}; {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    print("| setup | deliveries/s, best | median | CPU s of the best run: server, redis, clients |")
    print("| --- | ---: | ---: | --- |")
    best: dict[str, float] = {}
    median: dict[str, float] = {}
    for setup, runs in results.items():
        top = max(runs, key=lambda r: r["per_second"])
        best[setup] = top["per_second"]
        median[setup] = statistics.median(r["per_second"] for r in runs)
        print(
            f"| {setup} | {best[setup]:,.0f} | {median[setup]:,.0f} | "
            f"{top['server_cpu']:.1f}, {top['redis_cpu']:.1f}, {top['client_cpu']:.1f} |"
        )
    print()
    for base in ("1 node", "1 node + redis"):
        if base in best and "2 workers + redis" in best:
            print(
                f"ratio 2 workers / {base}: {best['2 workers + redis'] / best[base]:.2f} (best), "
                f"{median['2 workers + redis'] / median[base]:.2f} (median)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
