"""``python -m bench.workers``: several server processes on one machine (``--workers N``).

One node started with ``--workers N --redis URL`` (a throwaway redis-server on a free
port), as many users as the workers can hold logged in (hello → profile → join, rooms of
10), held for a few ping intervals; then the RSS of each worker process and how many
users answered every ping.  Each worker process has its own open-file limit (20,000 on
these machines), so N workers hold about N × 19,000 users.

    python -m bench.workers                       # 2 workers, 18,500 users each
    python -m bench.workers --workers 2 --per-worker 1000 --hold 3   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .harness import Fleet, ServerProcess, cores
from .scenarios import SCALES, _close_all, _login, _timeouts

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.redis_fixture import RedisServer  # noqa: E402


def _children(pid: int) -> list[int]:
    """The worker processes under the supervisor ``pid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run(workers: int, per_worker: int, hold_pings: float, ping: float) -> dict[str, Any]:
    server_core, load_core = cores()
    scale = SCALES["full"]
    with RedisServer() as redis:
        flags = [
            "--workers",
            str(workers),
            "--redis",
            redis.url,
            *_timeouts(ping=ping, pong=2 * ping, session=3600),
        ]
        # The supervisor and its workers share core 0 only when pinned: with N workers
        # they need the cores, so nothing is pinned here (the load generator included).
        server = ServerProcess(
            "hubbub",
            [
                *flags,
                "--rate",
                "1000000",
                "--burst",
                "1000000",
                "--frame-budget",
                "0",
                "--max-connections",
                "0",
            ],
            core=None,
        )
        try:
            time.sleep(1.0)
            pids = _children(server.pid)
            rss0 = {p: _rss_kb(p) for p in pids}
            with Fleet(max(4, workers * 2), core=None) as fleet:
                total = workers * per_worker
                t0 = time.monotonic()
                login = _login(fleet, server, scale, total, "join", prefix="w")
                took = time.monotonic() - t0
                rss1 = {p: _rss_kb(p) for p in pids}
                hold = hold_pings * ping
                held = fleet.all(
                    {
                        "cmd": "hold",
                        "seconds": hold,
                        "timeout": hold + 20,
                        "min_pings": max(1, int(hold_pings) - 1),
                    }
                )
                alive = server.alive()
                _close_all(fleet)
        finally:
            server.close()
    users = login["ok"]
    return {
        "workers": workers,
        "attempted": workers * per_worker,
        "logged_in": users,
        "failed": login["failed"],
        "why": login["why"],
        "login_seconds": round(took, 1),
        "logins_per_s": round(login["per_s"]),
        "answering": sum(h["answering"] for h in held),
        "held": sum(h["live"] for h in held),
        "lost": sum(h["lost"] for h in held),
        "hold_seconds": hold_pings * ping,
        "rss_mb_per_worker": {str(p): round(rss1[p] / 1024, 1) for p in pids},
        "kb_per_user": round((sum(rss1.values()) - sum(rss0.values())) / max(1, users), 1),
        "server_alive": alive,
        "cores": [server_core, load_core],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.workers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--per-worker",
        type=int,
        default=18_500,
        help="users per worker process (each has a 20,000 open-file limit)",
    )
    p.add_argument("--hold", type=float, default=3, help="hold this many ping intervals")
    p.add_argument("--ping", type=float, default=5.0, help="--ping-interval of the node")
    args = p.parse_args(argv)
    result = run(args.workers, args.per_worker, args.hold, args.ping)
    print(json.dumps(result, indent=2))
    ok = result["answering"] >= 0.99 * result["attempted"] and result["server_alive"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
