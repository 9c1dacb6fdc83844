"""The six scenarios of issue 4, run against one server kind ("hubbub" or "peer").

Each group starts a fresh server (pinned to the server core) and measures one or more
scenarios on it; every figure comes back in a flat dict per scenario:

==========  =========================================================================
connect     N users log in concurrently (upgrade, hello, profile, join a room of 10):
            logins/s, RSS per logged-in user
idle        the same N users held with a ping every few seconds, clients pong: server
            CPU %, and that every user was pinged and stayed
paced       1 room of M, S senders saying at a fixed rate each (open loop): latency
            from send to receipt (p50/p99), deliveries/s, lost
saturated   the same room, each sender keeps W says un-acked: deliveries/s, latency,
            lost, fairness (min/max says sent per sender)
storm       K sockets upgrade and never say hello: every one closed 4001, lateness of
            the close against the hello timeout (p50/p99/max)
maxconn     as many users as the server's open-file limit allows log in, then are held
            with every rule armed for 2.6 ping intervals: how many still answer pings
==========  =========================================================================

The paced level of the table is one point of a sweep of rates (``fan_rates``); the
whole sweep and the saturated point make the latency-vs-load chart.

"Lost" is counted at the receivers: every live member must receive every message the
server acked (its own included); a sampled receiver also checks that ``seq`` never
skips. Latency is measured on every ``sample_every``-th member, spread over the join
order, so the sample sees the start and the end of each fan-out loop alike.
"""

from __future__ import annotations

import math
import os
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .harness import Fleet, ServerProcess

__all__ = ["Scale", "SCALES", "SCENARIOS", "GROUPS", "run", "hubbub_flags"]


@dataclass(frozen=True)
class Scale:
    name: str
    workers: int  #: load generator processes
    window: int  #: logins in flight per worker (both servers listen with a backlog of 128)
    connect_users: int
    room_size: int
    ping_interval: float  #: idle and maxconn
    idle_seconds: float
    fan_members: int
    fan_senders: int
    fan_rates: tuple[float, ...]  #: paced levels of the sweep, says/s per sender
    paced_rate: float  #: the level reported as "paced"
    fan_seconds: float  #: per paced level
    sat_seconds: float
    sat_window: int  #: un-acked says per sender, saturated
    storm_sockets: int
    storm_timeout: float
    max_nofile: int | None  #: the server's open-file soft limit; None: its hard limit
    max_hold_pings: float  #: hold maxconn users this many ping intervals
    sample_every: int  #: every n-th member measures latency
    per_ip: int  #: connections per source address (127.0.0.2, .3, ...)
    drain_timeout: float


SCALES = {
    "full": Scale(
        "full",
        workers=4,
        window=24,
        connect_users=5000,
        room_size=10,
        ping_interval=5.0,
        idle_seconds=15.0,
        fan_members=500,
        fan_senders=5,
        fan_rates=(2, 5, 10, 20, 40),
        paced_rate=10,
        fan_seconds=5.0,
        sat_seconds=8.0,
        sat_window=2,
        storm_sockets=3000,
        storm_timeout=2.0,
        max_nofile=None,
        max_hold_pings=2.6,
        sample_every=10,
        per_ip=4000,
        drain_timeout=40.0,
    ),
    # CI-sized: correctness figures in seconds. max connections runs against a server
    # whose open-file limit is lowered to 256.
    "smoke": Scale(
        "smoke",
        workers=2,
        window=16,
        connect_users=200,
        room_size=10,
        ping_interval=1.0,
        idle_seconds=2.5,
        fan_members=50,
        fan_senders=5,
        fan_rates=(10,),
        paced_rate=10,
        fan_seconds=1.0,
        sat_seconds=1.0,
        sat_window=2,
        storm_sockets=100,
        storm_timeout=0.5,
        max_nofile=256,
        max_hold_pings=2.6,
        sample_every=5,
        per_ip=60,
        drain_timeout=15.0,
    ),
}

# Limits hubbub has and the peer does not: lifted, so that both do the same work.
# --rate/--burst: flood control would stop the saturated senders (the peer has none);
# --max-connections 0: no per-IP cap and no per-IP connection rate;
# --frame-budget/--byte-budget 0: a saturated sender exceeds 1,000 frames/s.
HUBBUB_LIFTED = [
    "--rate",
    "1000000",
    "--burst",
    "1000000",
    "--max-connections",
    "0",
    "--frame-budget",
    "0",
    "--byte-budget",
    "0",
]


def hubbub_flags() -> list[str]:
    return list(HUBBUB_LIFTED)


def _timeouts(
    hello: float = 5.0,
    ping: float = 30.0,
    pong: float = 120.0,
    profile: float = 300.0,
    session: float = 3600.0,
) -> list[str]:
    return [
        "--hello-timeout",
        f"{hello:g}",
        "--ping-interval",
        f"{ping:g}",
        "--pong-timeout",
        f"{pong:g}",
        "--profile-timeout",
        f"{profile:g}",
        "--max-session",
        f"{session:g}",
    ]


#: Called as PHASE(server, scenario, "begin" | "end") around each measured phase; the
#: profiler (bench/profile.py) attaches py-spy there.
def no_phase(server: ServerProcess, scenario: str, event: str) -> None:
    """The default PHASE: nothing."""


PHASE: Callable[[ServerProcess, str, str], None] = no_phase


#: Extra environment for the servers started (the memory profiler sets BENCH_SNAPSHOT).
SERVER_ENV: dict[str, str] = {}


# --- interference: CPU used on the two cores by processes other than ours -------------


def _cores_busy() -> float:
    """Seconds the whole machine spent in user, nice and system time (every core)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:4]
    return sum(int(x) for x in fields) / _CLK_TCK


def _proc_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


_CLK_TCK = os.sysconf("SC_CLK_TCK")
_OURS: list[int] = []  #: the load generator workers' pids (set by run)
_METER: dict[str, tuple[float, float, float]] = {}  #: scenario → (t0, busy0, ours0)
OTHER: dict[str, float] = {}  #: scenario → % of one core used by other processes meanwhile


def _ours(server: ServerProcess) -> float:
    t = os.times()
    return t.user + t.system + _proc_cpu(server.pid) + sum(_proc_cpu(p) for p in _OURS)


def _phase(server: ServerProcess, scenario: str, event: str) -> None:
    """Around each measured phase: meter the interference, then the PHASE hook."""
    if event == "begin":
        _METER[scenario] = (time.monotonic(), _cores_busy(), _ours(server))
    elif scenario in _METER:
        t0, busy0, ours0 = _METER.pop(scenario)
        other = (_cores_busy() - busy0) - (_ours(server) - ours0)
        OTHER[scenario] = max(0.0, 100 * other / max(1e-9, time.monotonic() - t0))
    PHASE(server, scenario, event)


def _start(
    kind: str, flags: list[str], core: int | None, nofile: int | None = None
) -> ServerProcess:
    extra = HUBBUB_LIFTED if kind.startswith("hubbub") else []
    server = ServerProcess(kind, [*flags, *extra], core=core, nofile=nofile, extra_env=SERVER_ENV)
    time.sleep(0.3)  # let start-up allocations settle before the first RSS reading
    return server


def pct(values: Any, q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a sequence; nan if empty."""
    data = sorted(values)
    if not data:
        return math.nan
    return data[min(len(data) - 1, max(0, math.ceil(q / 100 * len(data)) - 1))]


def _split(total: int, parts: int) -> list[tuple[int, int]]:
    """(first gid, count) per worker: contiguous slices of 0..total-1."""
    out, gid = [], 0
    for i in range(parts):
        n = total // parts + (1 if i < total % parts else 0)
        out.append((gid, n))
        gid += n
    return out


def _login(
    fleet: Fleet,
    server: ServerProcess,
    scale: Scale,
    total: int,
    goal: str,
    room: str | None = None,
    prefix: str = "u",
) -> dict[str, Any]:
    timeout = max(30.0, total / 150)
    cmds = [
        {
            "cmd": "login",
            "host": server.host,
            "port": server.port,
            "goal": goal,
            "gid0": g0,
            "count": n,
            "room": room,
            "room_size": scale.room_size,
            "window": scale.window,
            "prefix": prefix,
            "sample_every": scale.sample_every,
            "per_ip": scale.per_ip,
            "timeout": timeout,
        }
        for g0, n in _split(total, len(fleet))
    ]
    cpu0 = fleet.cpu_seconds()
    answers = fleet.each(cmds)
    ok = sum(a["ok"] for a in answers)
    t_first = min(a["t_first"] for a in answers)
    t_last = max(a["t_last"] for a in answers)
    took = array("d")
    why: Counter[str] = Counter()
    for a in answers:
        took.extend(a["took"])
        why.update(a["why"])
    span = max(1e-9, t_last - t_first)
    return {
        "attempted": total,
        "ok": ok,
        "failed": total - ok,
        "why": dict(why),
        "per_s": ok / span,
        "seconds": span,
        "p50_ms": pct(took, 50) * 1e3,
        "p99_ms": pct(took, 99) * 1e3,
        "loadgen_cpu_pct": 100 * (sum(fleet.cpu) - cpu0) / span,
    }


def _close_all(fleet: Fleet) -> None:
    fleet.all({"cmd": "close_all", "timeout": 10.0})


# --- connect + idle ------------------------------------------------------------------


def group_connect(
    kind: str, scale: Scale, fleet: Fleet, core: int | None, want: set[str]
) -> dict[str, dict[str, Any]]:
    p = scale.ping_interval
    server = _start(kind, _timeouts(ping=p, pong=3 * p), core)
    out: dict[str, dict[str, Any]] = {}
    try:
        rss0 = server.rss_kb()
        _phase(server, "connect", "begin")
        cpu0 = server.cpu_seconds()
        login = _login(fleet, server, scale, scale.connect_users, "join")
        cpu = server.cpu_seconds() - cpu0
        _phase(server, "connect", "end")
        time.sleep(1.0)
        rss1 = server.rss_kb()
        out["connect"] = {
            "users": login["ok"],
            "failed": login["failed"],
            "why": login["why"],
            "logins_per_s": login["per_s"],
            "kb_per_user": (rss1 - rss0) / max(1, login["ok"]),
            "rss_mb": rss1 / 1024,
            "login_p50_ms": login["p50_ms"],
            "login_p99_ms": login["p99_ms"],
            "loadgen_cpu_pct": login["loadgen_cpu_pct"],
            # over the login span, plus the few ms until the answers reached the coordinator
            "server_cpu_pct": 100 * cpu / login["seconds"],
        }
        if "idle" in want:
            _phase(server, "idle", "begin")
            cpu0, l0, t0 = server.cpu_seconds(), sum(fleet.cpu), time.monotonic()
            held = fleet.all(
                {
                    "cmd": "hold",
                    "seconds": scale.idle_seconds,
                    "timeout": scale.idle_seconds + 10,
                    "min_pings": 1,
                }
            )
            _phase(server, "idle", "end")
            wall = time.monotonic() - t0
            cpu = server.cpu_seconds() - cpu0
            expected = math.floor(scale.idle_seconds / p)
            out["idle"] = {
                "users": sum(h["live"] for h in held),
                "lost": sum(h["lost"] for h in held),
                "codes": _merge(h["codes"] for h in held),
                "cpu_pct": 100 * cpu / wall,
                "pings_min": min(h["pings_min"] for h in held),
                "pings_expected": expected,
                "seconds": wall,
                "loadgen_cpu_pct": 100 * (sum(fleet.cpu) - l0) / wall,
            }
        _close_all(fleet)
    finally:
        server.close()
    return out


def _merge(dicts: Any) -> dict[Any, int]:
    total: Counter[Any] = Counter()
    for d in dicts:
        total.update(d)
    return dict(total)


# --- fan-out: paced sweep, then saturated ------------------------------------------------


def _fan_level(
    fleet: Fleet, server: ServerProcess, scale: Scale, rate: float | None, seconds: float
) -> dict[str, Any]:
    phase = "saturated" if rate is None else "paced" if rate == scale.paced_rate else "sweep"
    _phase(server, phase, "begin")
    try:
        return _fan_measure(fleet, server, scale, rate, seconds)
    finally:
        _phase(server, phase, "end")


def _fan_measure(
    fleet: Fleet, server: ServerProcess, scale: Scale, rate: float | None, seconds: float
) -> dict[str, Any]:
    senders = [i * scale.fan_members // scale.fan_senders for i in range(scale.fan_senders)]
    offsets = {g: k / len(senders) for k, g in enumerate(senders)}
    cpu0, l0, t0 = server.cpu_seconds(), sum(fleet.cpu), time.monotonic()
    said = fleet.all(
        {
            "cmd": "fanout",
            "senders": offsets,
            "room": "fan",
            "rate": rate,
            "window": scale.sat_window,
            "seconds": seconds,
            "timeout": seconds + 20,
        }
    )
    sent = _merge(a["sent"] for a in said)
    acked = _merge(a["acked"] for a in said)
    expect = sum(acked.values())
    drained = fleet.all({"cmd": "drain", "expect": expect, "timeout": scale.drain_timeout})
    t_end = time.monotonic()
    t_last = max(d["t_last"] for d in drained) or t_end
    lat = array("d")
    for d in drained:
        lat.extend(d["lat"])
    received = sum(d["received"] for d in drained)
    span = max(1e-9, t_last - t0)
    return {
        "rate": rate,
        "members": sum(d["receivers"] for d in drained),
        "messages": expect,
        "unacked": sum(sent.values()) - expect,
        "deliveries": received,
        "deliveries_per_s": received / span,
        "offered_per_s": None if rate is None else rate * len(senders) * scale.fan_members,
        "lost": sum(d["short"] for d in drained),
        "lost_conns": sum(d["lost_conns"] for d in drained),
        "seq_gaps": sum(d["gaps"] for d in drained),
        "errors": sum(d["errors"] for d in drained),
        "p50_ms": pct(lat, 50) * 1e3,
        "p99_ms": pct(lat, 99) * 1e3,
        "max_ms": max(lat, default=math.nan) * 1e3,
        "samples": len(lat),
        "fairness": min(sent.values()) / max(1, max(sent.values())) if sent else math.nan,
        "sent_per_sender": [sent[g] for g in sorted(sent)],
        "pacing_lag_ms": max(a["lag"] for a in said) * 1e3,
        "seconds": span,
        "server_cpu_pct": 100 * (server.cpu_seconds() - cpu0) / (t_end - t0),
        "loadgen_cpu_pct": 100 * (sum(fleet.cpu) - l0) / (t_end - t0),
    }


def group_fanout(
    kind: str, scale: Scale, fleet: Fleet, core: int | None, want: set[str]
) -> dict[str, dict[str, Any]]:
    server = _start(kind, _timeouts(), core)
    out: dict[str, dict[str, Any]] = {}
    try:
        login = _login(fleet, server, scale, scale.fan_members, "join", room="fan")
        if login["failed"]:
            raise RuntimeError(f"fan-out room: {login['failed']} logins failed: {login['why']}")
        if "paced" in want:
            sweep = [
                _fan_level(fleet, server, scale, rate, scale.fan_seconds)
                for rate in scale.fan_rates
            ]
            out["paced"] = dict(
                next(s for s in sweep if s["rate"] == scale.paced_rate), sweep=sweep
            )
        if "saturated" in want:
            out["saturated"] = _fan_level(fleet, server, scale, None, scale.sat_seconds)
        _close_all(fleet)
    finally:
        server.close()
    return out


# --- hello storm --------------------------------------------------------------------------


def group_storm(
    kind: str, scale: Scale, fleet: Fleet, core: int | None, want: set[str]
) -> dict[str, dict[str, Any]]:
    t = scale.storm_timeout
    server = _start(kind, _timeouts(hello=t), core)
    try:
        _phase(server, "storm", "begin")
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        opened = _login(fleet, server, scale, scale.storm_sockets, "upgrade", prefix="s")
        ends = fleet.all({"cmd": "await_close", "after": t, "timeout": t + 15})
        # The server's CPU over the whole storm: the upgrades, the idle wait and the 4001 closes.
        storm_cpu = 100 * (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        _phase(server, "storm", "end")
        late = array("d")
        for e in ends:
            late.extend(e["late"])
        codes = _merge(e["codes"] for e in ends)
        _close_all(fleet)
    finally:
        server.close()
    return {
        "storm": {
            "sockets": scale.storm_sockets,
            "opened": opened["ok"],
            "open_failed": opened["failed"],
            "opens_per_s": opened["per_s"],
            "closed_4001": codes.get(4001, 0),
            "codes": {str(k): v for k, v in codes.items()},
            "still_open": sum(e["still_open"] for e in ends),
            "late_p50_ms": pct(late, 50) * 1e3,
            "late_p99_ms": pct(late, 99) * 1e3,
            "late_max_ms": max(late, default=math.nan) * 1e3,
            "server_cpu_pct": storm_cpu,
        }
    }


# --- max connections ------------------------------------------------------------------------


def group_maxconn(
    kind: str, scale: Scale, fleet: Fleet, core: int | None, want: set[str]
) -> dict[str, dict[str, Any]]:
    p = scale.ping_interval
    hold = scale.max_hold_pings * p
    # Every rule armed: hello and profile while logging in, session, ping, and a pong
    # timeout shorter than the hold, so a user whose pongs were not read is closed 4002
    # before the hold ends.
    server = _start(kind, _timeouts(ping=p, pong=2 * p), core, nofile=scale.max_nofile)
    try:
        limit, used = server.nofile(), server.open_files()
        # One descriptor per connection; keep a few for what the server opens itself.
        target = limit - used - 24
        rss0 = server.rss_kb()
        _phase(server, "maxconn", "begin")
        login = _login(fleet, server, scale, target, "join", prefix="m")
        rss1 = server.rss_kb()
        held = fleet.all({"cmd": "hold", "seconds": hold, "timeout": hold + 10, "min_pings": 2})
        _phase(server, "maxconn", "end")
        alive = server.alive()
        _close_all(fleet)
    finally:
        server.close()
    return {
        "maxconn": {
            "nofile": limit,
            "attempted": target,
            "logged_in": login["ok"],
            "failed": login["failed"],
            "why": login["why"],
            "logins_per_s": login["per_s"],
            "held": sum(h["live"] for h in held),
            "answering": sum(h["answering"] for h in held),
            "lost": sum(h["lost"] for h in held),
            "codes": _merge(h["codes"] for h in held),
            "pings_min": min(h["pings_min"] for h in held),
            "hold_seconds": hold,
            "kb_per_user": (rss1 - rss0) / max(1, login["ok"]),
            "rss_mb": rss1 / 1024,
            "server_alive": alive,
        }
    }


GROUPS: dict[str, tuple[tuple[str, ...], Callable[..., dict[str, dict[str, Any]]]]] = {
    "connect": (("connect", "idle"), group_connect),
    "fanout": (("paced", "saturated"), group_fanout),
    "storm": (("storm",), group_storm),
    "maxconn": (("maxconn",), group_maxconn),
}
SCENARIOS = tuple(name for names, _ in GROUPS.values() for name in names)


#: A group whose measured phases saw other processes use more than this much CPU (% of
#: one core, both cores together) is run again, up to RETRIES times; the attempt with
#: the least interference is kept. The machine is shared: a test suite starting on it
#: halfway through a measurement is not the server's fault.
NOISY_PCT = 10.0
RETRIES = 2


class RetryBudget:
    """Seconds that re-measuring may take in all (the comparison must end in ~15 min)."""

    def __init__(self, seconds: float) -> None:
        self.left = seconds


def run(
    kind: str,
    scale: Scale,
    scenarios: tuple[str, ...] = SCENARIOS,
    fleet: Fleet | None = None,
    cores: tuple[int | None, int | None] = (None, None),
    log: Callable[[str], None] = lambda s: None,
    budget: RetryBudget | None = None,
) -> dict[str, Any]:
    """Every requested scenario once against ``kind``; returns {scenario: figures}.

    Each scenario's figures carry ``other_cpu_pct``: CPU used meanwhile by processes
    other than the server and the load generator (% of one core)."""
    server_core, load_core = cores
    own = fleet is None
    fleet = fleet or Fleet(scale.workers, load_core)
    _OURS[:] = [p.pid for p in fleet.procs]
    budget = budget or RetryBudget(0.0)  # by default: measure once, whatever the noise
    results: dict[str, Any] = {"server": kind, "scale": asdict(scale)}
    try:
        for group, (names, fn) in GROUPS.items():
            want = set(names) & set(scenarios)
            if not want:
                continue
            best: dict[str, dict[str, Any]] | None = None
            for attempt in range(1 + RETRIES):
                t0 = time.monotonic()
                log(f"{kind}: {group} ...")
                OTHER.clear()
                out = {
                    k: v for k, v in fn(kind, scale, fleet, server_core, want).items() if k in want
                }
                for name, figures in out.items():
                    figures["other_cpu_pct"] = OTHER.get(name, math.nan)
                noise = max((f["other_cpu_pct"] for f in out.values()), default=0.0)
                log(
                    f"{kind}: {group} done in {time.monotonic() - t0:.1f} s "
                    f"(other processes: {noise:.0f}% of a core)"
                )
                if best is None or noise < max(f["other_cpu_pct"] for f in best.values()):
                    best = out
                took = time.monotonic() - t0
                if attempt:
                    budget.left -= took
                if not noise > NOISY_PCT or attempt == RETRIES or budget.left < took:
                    break
                log(f"{kind}: {group}: the machine was busy, measuring again")
            assert best is not None
            results.update(best)
    finally:
        if own:
            fleet.close()
    return results
