"""Does ``server.tune_gc`` pay for itself? Logins/s and GC pauses with and without it.

    python -m bench.gc_tuning [--users 3000] [--runs 2]

Starts ``server.py`` twice per run (``tune_gc`` as shipped, and replaced by a no-op),
logs in ``--users`` users over raw sockets (upgrade + hello + profile in one write, 100
at a time) and reports logins/s and the server's garbage-collection pauses (from
``gc.callbacks``: count, p99, max, total) during the logins (not start-up or shutdown). Bounded: each server is
killed after the logins.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs server.main() with gc.callbacks timing every collection; at SIGTERM the pauses
# go to stderr as one JSON line.
WRAPPER = """
import gc, json, sys, time, atexit
import server
if sys.argv[1] == "off":
    server.tune_gc = lambda: None
pauses, start = [], [0.0]
def timer(phase, info):
    # CLOCK_MONOTONIC is system-wide on Linux: the bench can pick its login window.
    if phase == "start":
        start[0] = time.monotonic()
    else:
        pauses.append((info["generation"], start[0], time.monotonic() - start[0]))
gc.callbacks.append(timer)
atexit.register(lambda: print("GCPAUSES " + json.dumps(pauses), file=sys.stderr, flush=True))
sys.exit(server.main(sys.argv[2:]))
"""


def mask(payload: bytes) -> bytes:
    key = b"\x01\x02\x03\x04"
    return (
        bytes((0x81, 0x80 | len(payload)))
        + key
        + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    )


def login_all(port: int, users: int) -> tuple[float, list[socket.socket]]:
    socks: list[socket.socket] = []
    start = time.perf_counter()
    for first in range(0, users, 100):
        batch = []
        for i in range(first, min(users, first + 100)):
            s = socket.create_connection(("127.0.0.1", port), timeout=20)
            s.sendall(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                + mask(b'{"type":"hello"}')
                + mask(json.dumps({"type": "profile", "nick": f"g{i}"}).encode())
            )
            batch.append(s)
        for s in batch:
            data = b""
            while b"profile_ok" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    raise RuntimeError(f"EOF before profile_ok: {data[:200]!r}")
                data += chunk
        socks += batch
    return time.perf_counter() - start, socks


def one(mode: str, users: int) -> dict[str, float]:
    # stderr to a file: a pipe nobody reads during the logins would fill with the
    # connect log lines and block the server.
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, mode, "--port", "0", "--max-connections", "0"],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")},
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        port = int(re.search(r":(\d+)$", line.strip()).group(1))  # type: ignore[union-attr]
        begin = time.monotonic()
        elapsed, socks = login_all(port, users)
        end = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for s in socks:
            s.close()
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    log.seek(0)
    err = log.read()
    pauses = json.loads(next(line for line in err.splitlines() if line.startswith("GCPAUSES "))[9:])
    pauses = [(g, p) for g, t, p in pauses if begin <= t <= end]  # during the logins only
    ms = sorted(p * 1e3 for _, p in pauses)
    return {
        "logins_per_s": users / elapsed,
        "collections": len(ms),
        "full_collections": sum(1 for g, _ in pauses if g == 2),
        "pause_p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else 0.0,
        "pause_max_ms": ms[-1] if ms else 0.0,
        "pause_total_ms": sum(ms),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    for run in range(args.runs):
        for mode in ("on", "off"):
            r = one(mode, args.users)
            print(
                json.dumps({"run": run, "tune_gc": mode, **{k: round(v, 2) for k, v in r.items()}}),
                flush=True,
            )


if __name__ == "__main__":
    main()
