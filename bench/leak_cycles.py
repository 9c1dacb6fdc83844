"""Connect / chat / disconnect cycles against a real server: does everything come back?

    python bench/leak_cycles.py --cycles 20000 [--concurrency 100] [--warmup 500]

Starts its own server exactly as tests/support/e2e.py does (``python server.py --port 0`` with
short hello/profile timeouts and no per-IP limits), runs a warm-up, reads
``/debug/stats`` as the baseline, runs the cycles with ``--concurrency`` greenlets, waits
(bounded) for the server to settle, prints baseline against after, and exits 1 if
anything did not come back: actors, pending timers and mailboxes exactly; greenlets
within +5, file descriptors within +3, RSS within +10% (of the post-warm-up RSS: the
allocator keeps what the first peak took). Every cycle and every wait is bounded in time;
loopback only.

Each cycle is one connection that ends one of seven ways (``KINDS``, taken in turn):

* ``bye``          hello, profile, join, say (each answered), then ``bye`` → close 1000
* ``close_frame``  the same, then a WebSocket close frame → the server echoes 1000
* ``reset``        the same, then an abrupt TCP reset (SO_LINGER 0, close)
* ``reset_early``  upgrade and every chat frame written at once, reset straight away
* ``fin``          the same as ``bye`` but a TCP half-close instead (EOF, no close frame)
* ``no_hello``     never says hello → the server closes with 4001 (hello timeout)
* ``no_profile``   hello but no profile → the server closes with 4004 (profile timeout)

tests/e2e/test_e2e_leaks.py runs the same cycles at CI size.
"""

from gevent import monkey

if not monkey.is_module_patched("socket"):  # imported by the tests: already patched
    monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent.pool  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.e2e import Server, frame, split_frame, walk  # noqa: E402

__all__ = ["KINDS", "SERVER_FLAGS", "Report", "check", "run_cycles", "settle", "stats"]

HELLO_TIMEOUT, PROFILE_TIMEOUT = 0.3, 0.6
SERVER_FLAGS = (
    "--hello-timeout",
    str(HELLO_TIMEOUT),
    "--profile-timeout",
    str(PROFILE_TIMEOUT),
    # Every cycle comes from 127.0.0.1: the per-IP connection limits would
    # refuse most of them (503) and measure nothing.
    "--max-connections",
    "0",
    # A dropped user's nick is held for its owner (--nick-grace, 30 s): a bounded cache
    # of rate x grace entries (docs/operations.md), not a leak; at ~750 unique nicks a
    # second it alone is ~3 MB, which would hide a real per-connection leak of that size.
    "--nick-grace",
    "1",
)
KINDS = ("bye", "close_frame", "reset", "reset_early", "fin", "no_hello", "no_profile")
ROOMS = tuple(f"leak-{i}" for i in range(8))
CYCLE_TIMEOUT = 5.0  # any single read; a cycle that waits longer counts as an error
UPGRADE = (
    "GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
TEXT, CLOSE = 0x1, 0x8


class CycleError(Exception):
    pass


class Late(Exception):
    """The server's hello or profile timer fired before our frame was handled: a legitimate
    outcome on a loaded machine with 0.3 s timeouts, counted apart from errors."""


class Peer:
    """One raw WebSocket client connection (frames from tests/support/e2e.py's ``frame``)."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=CYCLE_TIMEOUT)
        self.request = UPGRADE.format(host=host, port=port).encode()
        self.buf = b""

    def upgrade(self) -> None:
        self.sock.sendall(self.request)
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise CycleError("EOF during the upgrade")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise CycleError(f"upgrade refused: {head[:40]!r}")

    @staticmethod
    def chat(*frames: dict[str, Any]) -> bytes:
        return b"".join(frame(TEXT, json.dumps(f).encode()) for f in frames)

    def next_frame(self) -> tuple[int, bytes] | None:
        """(opcode, payload) of the next server frame; None at EOF."""
        while True:
            got = self._parse()
            if got is not None:
                return got
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buf += chunk

    def _parse(self) -> tuple[int, bytes] | None:
        got = split_frame(self.buf)
        if got is None:
            return None
        opcode, payload, self.buf = got
        return opcode, payload

    def until(self, kind: str) -> dict[str, Any]:
        """Read text frames (others' presence and messages included) until one of ``kind``."""
        while True:
            got = self.next_frame()
            if got is not None and got[0] == CLOSE and got[1][:2] in (b"\x0f\xa1", b"\x0f\xa4"):
                raise Late(int.from_bytes(got[1][:2], "big"))  # 4001 / 4004
            if got is None or got[0] == CLOSE:
                raise CycleError(f"connection ended waiting for {kind}: {got!r}")
            if got[0] == TEXT:
                msg = json.loads(got[1])
                if msg["type"] == kind:
                    return msg
                if msg["type"] == "error":
                    raise CycleError(f"waiting for {kind}: {msg}")

    def close_code(self) -> int | None:
        """Read until the server's close frame; its code (None: EOF without one)."""
        while True:
            got = self.next_frame()
            if got is None:
                return None
            if got[0] == CLOSE:
                return int.from_bytes(got[1][:2], "big")

    def reset(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


def cycle(host: str, port: int, i: int) -> str:
    """One connection, ending the ``KINDS[i % 7]`` way. Returns the kind, "late: ..." or
    "error: ..."."""
    kind = KINDS[i % len(KINDS)]
    room = ROOMS[i % len(ROOMS)]
    login = (
        {"type": "hello", "client": "leak_cycles"},
        {"type": "profile", "nick": f"leak{i}"},
        {"type": "join", "room": room},
        {"type": "say", "room": room, "text": f"cycle {i}", "id": str(i)},
    )
    peer = None
    try:
        peer = Peer(host, port)
        if kind == "reset_early":
            peer.sock.sendall(peer.request + peer.chat(*login))
            peer.reset()
            return kind
        peer.upgrade()
        if kind == "no_hello":
            code = peer.close_code()
            return kind if code == 4001 else f"error: no_hello closed with {code}"
        if kind == "no_profile":
            peer.sock.sendall(peer.chat(login[0]))
            peer.until("welcome")
            code = peer.close_code()
            return kind if code == 4004 else f"error: no_profile closed with {code}"
        # One step at a time: profile and join are answered asynchronously (directory,
        # room), and a join before profile_ok is rightly not_ready.
        peer.sock.sendall(peer.chat(*login[:2]))
        peer.until("profile_ok")
        peer.sock.sendall(peer.chat(login[2]))
        peer.until("joined")
        peer.sock.sendall(peer.chat(login[3]))
        ack = peer.until("ack")
        if ack.get("id") != str(i):
            return f"error: ack {ack}"
        if kind == "reset":
            peer.reset()
            return kind
        if kind == "fin":
            peer.sock.shutdown(socket.SHUT_WR)
            code = peer.close_code()  # the server hangs up: EOF (or a close frame)
            return kind if code in (None, 1000) else f"error: fin got close {code}"
        if kind == "bye":
            peer.sock.sendall(peer.chat({"type": "bye"}))
        else:
            peer.sock.sendall(frame(CLOSE, (1000).to_bytes(2, "big")))
        code = peer.close_code()
        return kind if code == 1000 else f"error: {kind} closed with {code}"
    except Late as late:
        return f"late: {kind} ({late.args[0]})"
    except (OSError, CycleError, ValueError) as exc:
        return f"error: {kind}: {exc!r}"[:200]
    finally:
        if peer is not None:
            peer.close()


def run_cycles(
    server: Server, n: int, concurrency: int, start: int = 0, deadline: float = 600.0
) -> Counter[str]:
    """``n`` cycles, ``concurrency`` at a time; outcome counts (kinds, "late: ...", errors)."""
    pool = gevent.pool.Pool(concurrency)
    outcomes: Counter[str] = Counter()
    with gevent.Timeout(deadline, AssertionError(f"{n} cycles took more than {deadline} s")):
        for outcome in pool.imap_unordered(
            lambda i: cycle(server.host, server.port, i), range(start, start + n)
        ):
            outcomes[outcome] += 1
    return outcomes


def stats(server: Server) -> dict[str, Any]:
    """/debug/stats plus the directory's nick and room counts from /debug/actors."""
    s = dict(server.json("/debug/stats"))
    for node in walk(server.actors()):
        if node["kind"] == "DirectoryActor":
            s["nicks"] = node.get("nicks")
            s["dir_rooms"] = node.get("rooms")
    return s


@dataclass
class Report:
    base: dict[str, Any]
    after: dict[str, Any]
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def check(base: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What did not come back to the baseline (empty: everything did)."""
    failures = []
    for key in ("users", "actors", "pending_timers", "nicks", "dir_rooms"):
        if after.get(key) != base.get(key):
            failures.append(f"{key}: {base.get(key)} → {after.get(key)}")
    if after["mailbox_total"] != 0:
        failures.append(f"mailbox_total: {after['mailbox_total']}")
    if after["greenlets"] > base["greenlets"] + 5:
        failures.append(f"greenlets: {base['greenlets']} → {after['greenlets']} (> +5)")
    if after["fds"] > base["fds"] + 3:
        failures.append(f"fds: {base['fds']} → {after['fds']} (> +3)")
    if after["rss_kb"] > base["rss_kb"] * 1.10:
        failures.append(f"rss_kb: {base['rss_kb']} → {after['rss_kb']} (> +10%)")
    return failures


def settle(
    server: Server, base: dict[str, Any] | None = None, timeout: float = 15.0
) -> dict[str, Any]:
    """Poll /debug/stats until the server is quiet: no users, empty mailboxes, and (with a
    baseline) everything back; without one, until two reads in a row agree. Bounded: after
    ``timeout`` the last reading is returned as it is (and the checks report it)."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while True:
        s = stats(server)
        quiet = s["users"] == 0 and s["mailbox_total"] == 0
        if quiet and base is not None and not check(base, s):
            return s
        if (
            quiet
            and base is None
            and last is not None
            and all(s[k] == last[k] for k in ("actors", "pending_timers", "greenlets", "fds"))
        ):
            return s
        if time.monotonic() > deadline:
            return s
        last = s
        time.sleep(0.1)


ROWS = (
    "users",
    "actors",
    "pending_timers",
    "mailbox_total",
    "nicks",
    "dir_rooms",
    "greenlets",
    "fds",
    "rss_kb",
)


def table(
    base: dict[str, Any], after: dict[str, Any], cycles: int, elapsed: float, outcomes: Counter[str]
) -> str:
    lines = [f"{'':16} {'baseline':>10} {'after':>10} {'delta':>8}"]
    for key in ROWS:
        b, a = base.get(key), after.get(key)
        delta = f"{a - b:+d}" if isinstance(a, int) and isinstance(b, int) else ""
        lines.append(f"{key:16} {b!s:>10} {a!s:>10} {delta:>8}")
    lines.append(f"{'cycles':16} {cycles:>10}")
    lines.append(f"{'elapsed_s':16} {elapsed:>10.1f}")
    lines.append(f"{'cycles_per_s':16} {cycles / elapsed:>10.0f}")
    lines.append("outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(outcomes.items())))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=500, help="cycles before the baseline")
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds for all the cycles")
    args = parser.parse_args(argv)

    failures: list[str] = []
    try:
        with Server(*SERVER_FLAGS) as server:
            warm = run_cycles(server, args.warmup, args.concurrency, deadline=args.deadline)
            base = settle(server)
            start = time.monotonic()
            outcomes = run_cycles(
                server, args.cycles, args.concurrency, start=args.warmup, deadline=args.deadline
            )
            elapsed = time.monotonic() - start
            after = settle(server, base)
            print(
                f"hubbub leak cycles: {args.cycles} cycles, concurrency {args.concurrency}, "
                f"warm-up {args.warmup}, server {' '.join(SERVER_FLAGS)}"
            )
            print(table(base, after, args.cycles, elapsed, outcomes))
            failures += check(base, after)
            errors = {k: v for k, v in (warm + outcomes).items() if k.startswith("error")}
            failures += [f"{v} x {k}" for k, v in errors.items()]
            late = sum(v for k, v in (warm + outcomes).items() if k.startswith("late"))
            if late > (args.warmup + args.cycles) // 100:
                failures.append(
                    f"{late} cycles late (> 1%): the server took > {HELLO_TIMEOUT} s to "
                    "handle a hello or a profile"
                )
    except AssertionError as exc:  # Server.__exit__: exit code not 0, or a traceback in its log
        failures.append(f"server: {str(exc)[-2000:]}")
    if failures:
        print("NOT BACK TO BASELINE:\n  " + "\n  ".join(failures))
        return 1
    print("everything back to baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
