"""``python -m bench debug``: does watching a busy node slow its chat? (issue 14)

N users log in with the load generator (rooms of 10) and stay. One more chat user, alone
in a quiet room, says something every ``--interval`` seconds and times `say` → `ack`.
That is measured in phases of ``--seconds`` each, interleaved over ``--rounds`` rounds
(so that a machine shared with other work disturbs every kind of phase alike):

* ``quiet``: nobody looks at /debug;
* ``page``: a client polls what the /debug page fetches at its default refresh (once a
  second: ``/debug/summary`` and the default users page);
* ``control``: a client fetches the static chat page twice a second (any HTTP poll's
  cost, to tell it from the inspector's);
* ``tree``: a client fetches the whole ``/debug/actors`` tree once a second (what the
  old page did; the contract's JSON, now streamed in slices).

Each kind's figures pool its rounds' samples; each phase also records the CPU that
other processes used meanwhile (``other_cpu_pct``, % of one core), the sign of a busy
machine.  Each debug request's time and bytes are recorded.  The pollers run in processes of
their own (forked), so their JSON parsing never delays the probe's clock.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from .harness import Fleet, ServerProcess, cores
from .scenarios import SCALES, _cores_busy, _login, _proc_cpu, _timeouts, hubbub_flags, pct

__all__ = ["measure", "PAGE_POLLS"]

PAGE_POLLS = ("/debug/summary", "/debug/users?sort=age&order=asc&offset=0&limit=50")
"""What /debug (hubbub/static/debug.html) fetches at every refresh with its defaults."""
TREE_POLLS = ("/debug/actors",)
CONTROL_POLLS = ("/", "/?again")
"""Two requests a second for the static chat page: what any HTTP poll costs, for comparison."""


def _poller(base: str, paths: tuple[str, ...], every: float, seconds: float, pipe: Any) -> None:
    """Fetch ``paths`` one after the other every ``every`` seconds; send back (path, s, bytes)."""
    out: list[tuple[str, float, int]] = []
    end = time.monotonic() + seconds
    next_at = time.monotonic()
    while time.monotonic() < end:
        for path in paths:
            t0 = time.perf_counter()
            with urllib.request.urlopen(base + path, timeout=30) as res:
                body = res.read()
            out.append((path, time.perf_counter() - t0, len(body)))
            if path.startswith("/debug"):
                json.loads(body)  # a page would parse it too; also proves it is whole
        next_at += every
        time.sleep(max(0.0, next_at - time.monotonic()))
    pipe.send(out)
    pipe.close()


class Probe:
    """One chat user in a room of its own: say, wait for the ack, repeat."""

    def __init__(self, host: str, port: int) -> None:
        from websockets.sync.client import connect

        self.ws = connect(f"ws://{host}:{port}/ws", open_timeout=10, max_size=None)
        self._send({"type": "hello", "client": "bench-debug"})
        self._until("welcome")
        self._send({"type": "profile", "nick": "probe"})
        self._until("profile_ok")
        self._send({"type": "join", "room": "quiet-probe"})
        self._until("joined")
        self.n = 0

    def _send(self, frame: dict[str, Any]) -> None:
        self.ws.send(json.dumps(frame))

    def _until(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        while True:
            frame = json.loads(self.ws.recv(timeout=timeout))
            if frame["type"] == "ping":
                self._send({"type": "pong"})
            elif frame["type"] == kind:
                return frame

    def run(self, seconds: float, interval: float) -> list[float]:
        """say → ack round trips (seconds) for ``seconds``, one every ``interval``."""
        rtts: list[float] = []
        end = time.monotonic() + seconds
        next_at = time.monotonic()
        while time.monotonic() < end:
            self.n += 1
            t0 = time.perf_counter()
            self._send({"type": "say", "room": "quiet-probe", "text": "tick", "id": str(self.n)})
            self._until("ack")
            rtts.append(time.perf_counter() - t0)
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        return rtts

    def close(self) -> None:
        self.ws.close()


def _phase(
    probe: Probe,
    base: str,
    polls: tuple[str, ...],
    seconds: float,
    interval: float,
    every: float,
    server: ServerProcess,
) -> dict[str, Any]:
    proc = pipe = None
    if polls:
        ctx = multiprocessing.get_context("fork")
        pipe, theirs = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_poller, args=(base, polls, every, seconds, theirs), daemon=True)
        proc.start()
        theirs.close()
    t0, busy0, ours0, cpu0 = time.monotonic(), _cores_busy(), _ours(), server.cpu_seconds()
    rtts = probe.run(seconds, interval)
    other = (_cores_busy() - busy0) - (_ours() - ours0)
    server_cpu = server.cpu_seconds() - cpu0
    requests: dict[str, Any] = {}
    if proc is not None and pipe is not None:
        got = pipe.recv() if pipe.poll(60) else []
        proc.join(5)
        for path in polls:
            times = [t for p, t, _ in got if p == path]
            sizes = [b for p, _, b in got if p == path]
            requests[path] = {
                "n": len(times),
                "p50_ms": pct(times, 50) * 1e3,
                "max_ms": max(times, default=0) * 1e3,
                "bytes": max(sizes, default=0),
            }
    return {
        "rtts": rtts,
        "says": len(rtts),
        "p50_ms": pct(rtts, 50) * 1e3,
        "p99_ms": pct(rtts, 99) * 1e3,
        "max_ms": max(rtts) * 1e3,
        "requests": requests,
        "other_cpu_pct": max(0.0, 100 * other / max(1e-9, time.monotonic() - t0)),
        "server_cpu_pct": 100 * server_cpu / max(1e-9, time.monotonic() - t0),
    }


_PIDS: list[int] = []  #: the server's and the load generator's pids (set by measure)


def _ours() -> float:
    t = os.times()
    return (
        t.user + t.system + t.children_user + t.children_system + sum(_proc_cpu(p) for p in _PIDS)
    )


def _pool(phases: list[dict[str, Any]]) -> dict[str, Any]:
    rtts = [r for p in phases for r in p["rtts"]]
    requests: dict[str, Any] = {}
    for p in phases:
        for path, r in p["requests"].items():
            agg = requests.setdefault(path, {"n": 0, "p50s": [], "max_ms": 0.0, "bytes": 0})
            agg["n"] += r["n"]
            agg["p50s"].append(r["p50_ms"])
            agg["max_ms"] = max(agg["max_ms"], r["max_ms"])
            agg["bytes"] = max(agg["bytes"], r["bytes"])
    for agg in requests.values():
        agg["p50_ms"] = pct(agg.pop("p50s"), 50)
    return {
        "says": len(rtts),
        "p50_ms": pct(rtts, 50) * 1e3,
        "p99_ms": pct(rtts, 99) * 1e3,
        "max_ms": max(rtts) * 1e3,
        "requests": requests,
        "round_p99_ms": [round(p["p99_ms"], 2) for p in phases],
        "server_cpu_pct": pct([p["server_cpu_pct"] for p in phases], 50),
        "other_cpu_pct": [round(p["other_cpu_pct"]) for p in phases],
    }


def measure(
    users: int,
    seconds: float,
    interval: float,
    every: float,
    rounds: int = 3,
    log: Callable[[str], None] = lambda s: None,
    warmup: float = 10.0,
) -> dict[str, Any]:
    server_core, load_core = cores()
    scale = dataclasses.replace(SCALES["full"], connect_users=users)
    # Pings every 30 s (the default) answered by the load generator; a pong timeout the run
    # never reaches, so no user leaves during the measurement.
    flags = [*_timeouts(ping=30, pong=3600, session=7200), *hubbub_flags()]
    with (
        Fleet(scale.workers, load_core) as fleet,
        ServerProcess("hubbub", flags, core=server_core) as server,
    ):
        base = f"http://{server.host}:{server.port}"
        _PIDS[:] = [server.pid, *(p.pid for p in fleet.procs)]
        log(f"logging in {users} users (rooms of {scale.room_size}) ...")
        login = _login(fleet, server, scale, users, "join")
        log(
            f"{login['ok']} logged in in {login['seconds']:.1f} s; RSS {server.rss_kb() / 1024:.0f} MB"
        )
        probe = Probe(server.host, server.port)
        out: dict[str, Any] = {
            "users": login["ok"],
            "failed": login["failed"],
            "seconds": seconds,
            "interval": interval,
            "every": every,
            "rounds": rounds,
            "phases": {},
        }
        try:
            # What one request costs at this size, on an otherwise idle node.
            for path in (*PAGE_POLLS, *TREE_POLLS):
                t0 = time.perf_counter()
                with urllib.request.urlopen(base + path, timeout=30) as res:
                    size = len(res.read())
                out.setdefault("single", {})[path] = {
                    "ms": (time.perf_counter() - t0) * 1e3,
                    "bytes": size,
                }
            # Warm-up, not reported: the first full GC collection after 19,000 logins takes
            # seconds, and whichever phase it lands in would carry it.
            log(f"warm-up ({warmup:g} s) ...")
            _phase(probe, base, (*PAGE_POLLS, *TREE_POLLS), warmup, interval, every, server)
            kinds = (
                ("quiet", ()),
                ("control", CONTROL_POLLS),
                ("page", PAGE_POLLS),
                ("tree", TREE_POLLS),
            )
            raw: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in kinds}
            for i in range(rounds):
                for name, polls in kinds:
                    ph = _phase(probe, base, polls, seconds, interval, every, server)
                    raw[name].append(ph)
                    log(
                        f"round {i + 1} {name}: say→ack p50 {ph['p50_ms']:.2f} ms, p99 {ph['p99_ms']:.2f} ms, "
                        f"max {ph['max_ms']:.2f} ms, server CPU {ph['server_cpu_pct']:.0f}%, "
                        f"other processes {ph['other_cpu_pct']:.0f}% of a core"
                        + "".join(
                            f"; {p} {r['p50_ms']:.0f} ms {r['bytes']} B"
                            for p, r in ph["requests"].items()
                        )
                    )
            out["phases"] = {name: _pool(phases) for name, phases in raw.items()}
        finally:
            probe.close()
            fleet.all({"cmd": "close_all", "timeout": 10.0})
        out["server_alive"] = server.alive()
        if os.environ.get("BENCH_SERVER_LOG"):  # e.g. with a sitecustomize that logs GC pauses
            with open(os.environ["BENCH_SERVER_LOG"], "w") as f:
                f.write(server.log_text())
    out["machine"] = {"cpus": os.cpu_count(), "load_avg": os.getloadavg()}
    return out


def describe(r: dict[str, Any]) -> str:
    ph = r["phases"]
    quiet = ph["quiet"]["p99_ms"]
    lines = [
        f"{r['users']} users logged in (rooms of 10), probe says every {r['interval']:g} s, "
        f"{r['rounds']} rounds of {r['seconds']:g} s per phase, debug polled every {r['every']:g} s",
        "",
        "| phase | says | say→ack p50 | p99 | max | p99 per round | other processes' CPU per round | "
        "server CPU (median) | debug requests (median time, bytes) |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- | ---: | --- |",
    ]
    for name, p in ph.items():
        req = (
            "; ".join(
                f"`{k}` {v['p50_ms']:.0f} ms, {v['bytes']:,} B" for k, v in p["requests"].items()
            )
            or "—"
        )
        lines.append(
            f"| {name} | {p['says']} | {p['p50_ms']:.2f} ms | {p['p99_ms']:.2f} ms | "
            f"{p['max_ms']:.2f} ms | {', '.join(f'{x:g}' for x in p['round_p99_ms'])} ms | "
            f"{', '.join(f'{x}%' for x in p['other_cpu_pct'])} | {p['server_cpu_pct']:.0f}% | {req} |"
        )
    lines += [
        "",
        "One request each on the idle node: "
        + "; ".join(f"`{k}` {v['ms']:.0f} ms, {v['bytes']:,} B" for k, v in r["single"].items()),
        "",
        f"p99 with the page open / quiet p99: {ph['page']['p99_ms'] / quiet:.2f}× pooled, "
        f"{min(ph['page']['round_p99_ms']) / min(ph['quiet']['round_p99_ms']):.2f}× between the least "
        f"disturbed rounds; with the whole tree every second: {ph['tree']['p99_ms'] / quiet:.2f}× pooled, "
        f"{min(ph['tree']['round_p99_ms']) / min(ph['quiet']['round_p99_ms']):.2f}× least disturbed",
    ]
    return "\n".join(lines)
