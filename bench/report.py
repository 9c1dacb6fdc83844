"""The comparison: runs, medians, the hubbub ÷ peer table, docs/benchmarks.md and its chart."""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import ROOT, Fleet, cores
from .scenarios import GROUPS, RetryBudget, Scale, run

__all__ = ["compare", "describe_run", "FIGURES", "machine"]

COMMAND = "python -m bench compare"


@dataclass(frozen=True)
class Figure:
    scenario: str
    key: str
    label: str
    unit: str
    fmt: str = "{:,.0f}"
    #: ratio target: (">=", 1.0) or ("<=", 1.0); None: no ratio target
    ratio: tuple[str, float] | None = None
    #: absolute target on hubbub's figure: (">=", 19000), ("==", 0), ("<=", 20)
    absolute: tuple[str, float] | None = None
    #: how the runs combine: median, or worst (for counts that must be 0)
    worst: bool = False


def _lost(r: dict[str, Any]) -> float:
    return r["lost"] + r["lost_conns"] + r["seq_gaps"]


FIGURES = [
    # Targets of issue 11 ("lightweight users"): a connected user costs less than in the peer.
    Figure("connect", "logins_per_s", "connect: logins/s", "", ratio=(">=", 1.2)),
    Figure("connect", "login_p50_ms", "connect: login p50", "ms", "{:,.1f}", ratio=("<=", 1.0)),
    Figure(
        "connect",
        "kb_per_user",
        "connect: RSS per logged-in user",
        "KB",
        "{:,.1f}",
        ratio=("<=", 0.75),
    ),
    Figure("idle", "cpu_pct", "idle: CPU of one core", "%", "{:,.1f}", ratio=("<=", 0.8)),
    Figure(
        "saturated", "deliveries_per_s", "fan-out saturated: deliveries/s", "", ratio=(">=", 2.5)
    ),
    Figure("saturated", "p99_ms", "fan-out saturated: latency p99", "ms", "{:,.1f}"),
    Figure("saturated", "lost", "fan-out saturated: lost", "", absolute=("==", 0), worst=True),
    Figure(
        "saturated",
        "fairness",
        "fan-out saturated: fairness min/max sent",
        "",
        "{:.2f}",
        absolute=(">=", 0.8),
    ),
    Figure("paced", "p99_ms", "fan-out paced: latency p99", "ms", "{:,.1f}", ratio=("<=", 1.0)),
    Figure("paced", "lost", "fan-out paced: lost", "", absolute=("==", 0), worst=True),
    Figure(
        "storm",
        "server_cpu_pct",
        "hello storm: server CPU of one core",
        "%",
        "{:,.1f}",
        ratio=("<=", 1.0),
    ),
    Figure(
        "storm", "late_p99_ms", "hello storm: lateness p99", "ms", "{:,.1f}", absolute=("<=", 20.0)
    ),
    Figure("storm", "not_4001", "hello storm: not closed 4001", "", absolute=("==", 0), worst=True),
    Figure(
        "maxconn", "answering", "max connections: held, answering pings", "", absolute=(">=", 19000)
    ),
]


def value(results: dict[str, Any], fig: Figure) -> float:
    r = results.get(fig.scenario)
    if r is None:
        return math.nan
    if fig.key == "lost":
        return _lost(r)
    if fig.key == "not_4001":
        return r["sockets"] - r["closed_4001"]
    v = r.get(fig.key)
    return math.nan if v is None else float(v)


def combine(values: list[float], fig: Figure) -> float:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan
    if fig.worst:
        return max(values)
    return statistics.median(values)


def _ok(op: str, x: float, target: float) -> bool:
    if math.isnan(x):
        return False
    return {">=": x >= target, "<=": x <= target, "==": x == target}[op]


def _fmt(fig: Figure, x: float) -> str:
    return "–" if math.isnan(x) else fig.fmt.format(x)


def table(runs: dict[str, list[dict[str, Any]]]) -> tuple[list[list[str]], list[str]]:
    """Rows of the ratio table (header first) and the labels of targets missed."""
    rows = [["figure", "peer", "hubbub", "hubbub ÷ peer", "target", "met"]]
    missed = []
    for fig in FIGURES:
        peer = combine([value(r, fig) for r in runs.get("peer", [])], fig)
        hub = combine([value(r, fig) for r in runs.get("hubbub", [])], fig)
        ratio = hub / peer if peer and not math.isnan(peer) and not math.isnan(hub) else math.nan
        if fig.ratio:
            op, t = fig.ratio
            target, met = f"{op} {t:g}×", _ok(op, ratio, t)
        elif fig.absolute:
            op, t = fig.absolute
            target, met = f"{op} {t:,g}{(' ' + fig.unit) if fig.unit else ''}", _ok(op, hub, t)
        else:
            target, met = "", None
        if met is False:
            missed.append(fig.label)
        rows.append(
            [
                fig.label + (f" ({fig.unit})" if fig.unit else ""),
                _fmt(fig, peer),
                _fmt(fig, hub),
                "–" if math.isnan(ratio) else f"{ratio:.2f}×",
                target,
                "" if met is None else ("yes" if met else "**no**"),
            ]
        )
    return rows, missed


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def md_table(rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(rows[0]) - 1)
    sep = ["---" if a == "l" else "---:" for a in align]
    out = ["| " + " | ".join(rows[0]) + " |", "| " + " | ".join(sep) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


# --- the machine -----------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        nproc = str(os.cpu_count())
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": nproc,
        "cpu": model,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
    }


def code_version() -> dict[str, Any]:
    """Which hubbub was measured: the commit, files changed since it, and a digest of the
    server's sources (compared before and after a run: the code must not change under it)."""
    import hashlib

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.rstrip("\n")
        except (OSError, subprocess.SubprocessError):
            return ""

    digest = hashlib.sha256()
    for path in sorted(
        [ROOT / "server.py", *ROOT.glob("actors/**/*.py"), *ROOT.glob("hubbub/**/*.py")]
    ):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    changed = [
        line[3:]
        for line in git("status", "--porcelain", "--", "server.py", "actors", "hubbub").splitlines()
    ]
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip() or "?",
        "changed": changed,
        "digest": digest.hexdigest()[:12],
    }


def loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError):
        return math.nan


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("gevent", "pykka", "websockets"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "?"
    return out


# --- the chart ------------------------------------------------------------------------------


def chart(runs: dict[str, list[dict[str, Any]]], path: Path, scale: Scale) -> bool:
    """Latency (p50 and p99) against deliveries/s: the paced sweep and the saturated point."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (pip install matplotlib)", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    colours = {"hubbub": "tab:blue", "peer": "tab:orange"}
    for kind, results in runs.items():
        sweeps = [r["paced"]["sweep"] for r in results if "paced" in r]
        if sweeps:
            levels = []
            for i in range(len(sweeps[0])):
                points = [s[i] for s in sweeps if i < len(s)]
                levels.append(
                    (
                        statistics.median(p["deliveries_per_s"] for p in points),
                        statistics.median(p["p50_ms"] for p in points),
                        statistics.median(p["p99_ms"] for p in points),
                    )
                )
            xs, p50, p99 = zip(*levels, strict=True)
            ax.plot(xs, p99, "o-", color=colours[kind], label=f"{kind} p99 (paced)")
            ax.plot(xs, p50, "o--", color=colours[kind], alpha=0.6, label=f"{kind} p50 (paced)")
        sat = [r["saturated"] for r in results if "saturated" in r]
        if sat:
            x = statistics.median(s["deliveries_per_s"] for s in sat)
            ax.plot(
                [x],
                [statistics.median(s["p99_ms"] for s in sat)],
                "s",
                color=colours[kind],
                markersize=9,
                label=f"{kind} p99 (saturated)",
            )
            ax.plot(
                [x],
                [statistics.median(s["p50_ms"] for s in sat)],
                "s",
                color=colours[kind],
                markersize=7,
                alpha=0.5,
                fillstyle="none",
                label=f"{kind} p50 (saturated)",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    ax.set_xlabel(
        f"deliveries per second (1 room of {scale.fan_members}, {scale.fan_senders} senders; "
        "measured at the receivers)"
    )
    ax.set_ylabel("latency say → message received (ms)")
    ax.set_title("Fan-out latency vs load, server on one core (medians of runs)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


# --- the document -----------------------------------------------------------------------------


def _per_run(runs: dict[str, list[dict[str, Any]]]) -> str:
    rows = [
        [
            "figure",
            *[f"peer #{i + 1}" for i in range(len(runs.get("peer", [])))],
            *[f"hubbub #{i + 1}" for i in range(len(runs.get("hubbub", [])))],
        ]
    ]
    for fig in FIGURES:
        rows.append(
            [
                fig.label,
                *[_fmt(fig, value(r, fig)) for r in runs.get("peer", [])],
                *[_fmt(fig, value(r, fig)) for r in runs.get("hubbub", [])],
            ]
        )
    return md_table(rows)


DETAILS: list[tuple[str, str, str]] = [
    # (scenario, key, label)
    ("connect", "users", "users logged in"),
    ("connect", "failed", "logins failed"),
    ("connect", "login_p50_ms", "login time p50 (ms)"),
    ("connect", "login_p99_ms", "login time p99 (ms)"),
    ("connect", "rss_mb", "server RSS with all users (MB)"),
    ("connect", "loadgen_cpu_pct", "load generator CPU (% of its core)"),
    ("idle", "users", "users held"),
    ("idle", "pings_min", "fewest pings one user got"),
    ("idle", "lost", "users lost"),
    ("paced", "deliveries_per_s", "deliveries/s"),
    ("paced", "p50_ms", "latency p50 (ms)"),
    ("paced", "max_ms", "latency max (ms)"),
    ("paced", "pacing_lag_ms", "worst send lateness of the load generator (ms)"),
    ("paced", "server_cpu_pct", "server CPU (%)"),
    ("paced", "loadgen_cpu_pct", "load generator CPU (% of its core)"),
    ("saturated", "messages", "messages acked"),
    ("saturated", "p50_ms", "latency p50 (ms)"),
    ("saturated", "max_ms", "latency max (ms)"),
    ("saturated", "server_cpu_pct", "server CPU (%)"),
    ("saturated", "loadgen_cpu_pct", "load generator CPU (% of its core)"),
    ("storm", "opened", "sockets opened"),
    ("storm", "closed_4001", "closed 4001"),
    ("storm", "late_p50_ms", "lateness p50 (ms)"),
    ("storm", "late_max_ms", "lateness max (ms)"),
    ("maxconn", "nofile", "server open-file limit"),
    ("maxconn", "attempted", "logins attempted"),
    ("maxconn", "logged_in", "logged in"),
    ("maxconn", "held", "still connected after the hold"),
    ("maxconn", "logins_per_s", "logins/s"),
    ("maxconn", "kb_per_user", "RSS per user (KB)"),
    ("maxconn", "rss_mb", "server RSS (MB)"),
    *[
        (name, "other_cpu_pct", "other processes' CPU meanwhile (% of a core)")
        for name in ("connect", "idle", "paced", "saturated", "storm", "maxconn")
    ],
]


def _details(runs: dict[str, list[dict[str, Any]]]) -> str:
    rows = [["scenario", "figure", "peer (median)", "hubbub (median)"]]
    for scenario, key, label in DETAILS:
        cells = []
        for kind in ("peer", "hubbub"):
            vals = [
                r[scenario][key]
                for r in runs.get(kind, [])
                if scenario in r and r[scenario].get(key) is not None
            ]
            vals = [v for v in vals if not (isinstance(v, float) and math.isnan(v))]
            cells.append("–" if not vals else f"{statistics.median(vals):,.1f}".removesuffix(".0"))
        rows.append([scenario, label, *cells])
    return md_table(rows, "llrr")


def _sweep(runs: dict[str, list[dict[str, Any]]]) -> str:
    rows = [
        [
            "says/s per sender",
            "offered deliveries/s",
            "peer deliveries/s",
            "peer p50 / p99 (ms)",
            "hubbub deliveries/s",
            "hubbub p50 / p99 (ms)",
        ]
    ]
    sweeps = {k: [r["paced"]["sweep"] for r in v if "paced" in r] for k, v in runs.items()}
    if not all(sweeps.values()) or not sweeps:
        return ""
    n = min(len(s) for ss in sweeps.values() for s in ss)
    for i in range(n):
        row: list[str] = []
        for kind in ("peer", "hubbub"):
            pts = [s[i] for s in sweeps.get(kind, [])]
            if not row:
                row = [f"{pts[0]['rate']:g}", f"{pts[0]['offered_per_s']:,.0f}"]
            row += [
                f"{statistics.median(p['deliveries_per_s'] for p in pts):,.0f}",
                f"{statistics.median(p['p50_ms'] for p in pts):,.1f} / "
                f"{statistics.median(p['p99_ms'] for p in pts):,.1f}",
            ]
        rows.append(row)
    return md_table(rows)


def _interference(runs: dict[str, list[dict[str, Any]]]) -> str:
    from .scenarios import NOISY_PCT

    seen = [
        (f["other_cpu_pct"], kind, name)
        for kind, rs in runs.items()
        for r in rs
        for name, f in r.items()
        if isinstance(f, dict)
        and f.get("other_cpu_pct") is not None
        and not math.isnan(f["other_cpu_pct"])
    ]
    if not seen:
        return "* interference from other processes: not measured"
    noisy = sorted({f"{kind} {name}" for pct, kind, name in seen if pct > NOISY_PCT})
    line = (
        f"* CPU used by other processes during the measured phases (both cores, `/proc/stat` "
        f"minus ours): median {statistics.median(p for p, _, _ in seen):.0f}%, at most "
        f"{max(p for p, _, _ in seen):.0f}% of a core. A scenario group that saw more than "
        f"{NOISY_PCT:g}% is measured again (up to twice, within a time budget) and the least "
        "disturbed attempt kept"
    )
    if noisy:
        line += "; still disturbed: " + ", ".join(noisy) + " (see the per-run table)"
    return line


def _code_lines(info: dict[str, Any]) -> list[str]:
    code = info.get("code")
    if not code:
        return []
    line = f"* hubbub at commit `{code['commit']}`"
    if code["changed"]:
        line += " plus uncommitted changes to " + ", ".join(f"`{c}`" for c in code["changed"])
    line += f" (sources digest `{code['digest']}`)"
    after = info.get("code_after")
    if after and after["digest"] != code["digest"]:
        line += (
            f" — **the server code changed during the run** (digest `{after['digest']}` "
            "at the end): the figures mix versions"
        )
    return [line]


def document(
    runs: dict[str, list[dict[str, Any]]], scale: Scale, info: dict[str, Any], chart_rel: str | None
) -> str:
    rows, missed = table(runs)
    from .scenarios import HUBBUB_LIFTED

    m = info["machine"]
    quiet = info["load_before"] < 1.0
    v = info["versions"]
    findings = ROOT / "bench" / "FINDINGS.md"
    parts = [
        "# Benchmarks: hubbub against a hand-written `websockets` peer",
        "",
        "*Generated by `" + COMMAND + "`; do not edit by hand: the analysis at the end comes "
        "from `bench/FINDINGS.md` (`" + COMMAND + " --from-raw FILE` renders a saved run again).*",
        "",
        "The question: does a user choosing hubbub over ~300 lines of asyncio + `websockets` pay "
        "for the actor model, and does a connected user cost less in hubbub than in the peer? `bench/peer.py` is that peer (per-user `call_later` timers, "
        "`websockets.broadcast`, the same frames and close codes); `bench/` measures both, side by "
        "side in one run, and this page is its output.",
        "",
        "## How it was run",
        "",
        "```",
        COMMAND,
        "```",
        "",
        *([f"(this page: `{info['command']}`)", ""] if info["command"] != COMMAND else []),
        f"* date: {m['date']}; the whole comparison took {info['minutes']:.1f} minutes",
        f"* machine: `nproc` = {m['nproc']}, {m['cpu']}, {m['memory']} RAM, Linux {m['kernel']}",
        *_code_lines(info),
        f"* Python {m['python']} ({m['implementation']}); gevent {v['gevent']}, "
        f"pykka {v['pykka']}, websockets {v['websockets']}",
        f"* load average (1 min) at the start {info['load_before']:.2f}, at the end "
        f"{info['load_after']:.2f}"
        + (
            ""
            if quiet
            else " — **the machine was not quiet** (other work ran meanwhile): "
            "figures are noisy, ratios from the same run are still comparable"
        ),
        _interference(runs),
        f"* {info['runs']} runs; each figure is the median of the runs (counts that must be 0: the "
        "worst run). In each run the two servers measure each group (connect, fan-out, storm, "
        "max connections) back to back, which one first alternating: the machine's speed "
        "drifts over minutes, so the two figures of a ratio are taken close together.",
        f"* scale `{scale.name}`: {scale.workers} load generator processes",
        "",
        "Server pinned to core "
        + str(info["cores"][0])
        + " (`taskset -c`), load generator processes "
        "pinned to core " + str(info["cores"][1]) + ". Each scenario group starts a fresh server "
        "(`--port 0`), the open-file limit raised soft → hard (20,000) for both. Flags:",
        "",
        "* hubbub: `python server.py --port 0 " + " ".join(HUBBUB_LIFTED) + "` plus the timeouts "
        "below. `--rate`/`--burst` lift the per-user flood control, `--max-connections 0` the "
        "per-IP cap and per-IP connection rate: the peer has neither. hubbub keeps logging one line "
        "per connect and disconnect (to a file), as it does by default.",
        "* peer: `python -m bench.peer --port 0` plus the same timeouts; listen backlog 128 like "
        "gevent's.",
        f"* connect, idle: `--ping-interval {scale.ping_interval:g} --pong-timeout "
        f"{3 * scale.ping_interval:g}`; fan-out: defaults (`--ping-interval 30`); hello storm: "
        f"`--hello-timeout {scale.storm_timeout:g}`; max connections: `--ping-interval "
        f"{scale.ping_interval:g} --pong-timeout {2 * scale.ping_interval:g}`; always "
        "`--profile-timeout 300 --max-session 3600` (so every rule is armed).",
        "",
        "## hubbub ÷ peer",
        "",
        md_table(rows, "lrrrrr"),
        "",
        (
            "Every target met."
            if not missed
            else "Targets missed: " + "; ".join(missed) + ". See *Where the time goes* below."
        ),
        "",
        "## Latency vs load",
        "",
    ]
    if chart_rel:
        parts += [f"![fan-out latency vs load]({chart_rel})", ""]
    sweep = _sweep(runs)
    if sweep:
        parts += [
            "The paced sweep (open loop: each sender says on a fixed schedule, whatever the "
            "acks), medians of the runs:",
            "",
            sweep,
            "",
        ]
    parts += [
        "## Every figure",
        "",
        _details(runs),
        "",
        "Per run:",
        "",
        _per_run(runs),
        "",
        "## The scenarios",
        "",
        f"* **connect**: {scale.connect_users:,} users, {scale.window} logins in flight per "
        "load generator process; each opens a TCP connection, upgrades, says `hello` and waits for "
        f"`welcome`, sends `profile` and waits for `profile_ok`, joins room `r<n // {scale.room_size}>` "
        f"(rooms of {scale.room_size}) and waits for `joined`. logins/s = users ÷ (first connect → "
        "last `joined`); KB per user = server RSS growth ÷ users.",
        f"* **idle**: the same users, held {scale.idle_seconds:g} s; the server pings each every "
        f"{scale.ping_interval:g} s, the clients pong; CPU = server user+system time ÷ wall time.",
        f"* **fan-out, paced**: one room of {scale.fan_members}, {scale.fan_senders} senders, "
        f"{scale.paced_rate:g} says/s each ({scale.paced_rate * scale.fan_senders * scale.fan_members:,.0f} "
        f"deliveries/s), {scale.fan_seconds:g} s. Latency: a say carries its send time "
        "(`CLOCK_MONOTONIC`, one clock for every process), every "
        f"{scale.sample_every}th member reads it on receipt. Lost: every member must receive every "
        "acked message (its own included), sampled members check `seq` has no gap.",
        f"* **fan-out, saturated**: the same room, each sender keeps {scale.sat_window} says un-acked "
        f"for {scale.sat_seconds:g} s. deliveries/s = messages received by all members ÷ (first say "
        "→ last delivery), so a server that acks fast and delivers late gains nothing. Fairness = "
        "fewest ÷ most says sent by one sender.",
        f"* **hello storm**: {scale.storm_sockets:,} sockets upgrade and never say `hello`, "
        f"`--hello-timeout {scale.storm_timeout:g}`; each must be closed 4001; lateness = close "
        "frame received − 101 received − the timeout.",
        "* **max connections**: as many users as the server's open-file limit allows (limit − open "
        "descriptors − 24) log in like *connect* and are held "
        f"{scale.max_hold_pings:g} ping intervals with a pong timeout of 2 intervals: a user whose "
        "pongs the server does not read in time is closed 4002 before the hold ends. *Answering* = "
        "still connected and pinged at least twice during the hold.",
        "",
        "The load generator (`bench/loadgen.py`): several processes, each one `epoll` loop over raw "
        "non-blocking sockets, frames masked once, server frames recognised by their first bytes, "
        "only sampled members parse a message. Source addresses 127.0.0.2, .3, ... with "
        f"{scale.per_ip:,} connections each. Every command has a deadline. Its CPU use is in the "
        "table above (*load generator CPU*): well under its core means the server, not the load "
        "generator, set the pace.",
        "",
    ]
    if findings.exists():
        parts += [findings.read_text().strip(), ""]
    else:
        parts += [
            "## Where the time goes",
            "",
            "(no analysis yet: `python -m bench profile SCENARIO` records a py-spy profile of "
            "hubbub during one scenario)",
            "",
        ]
    return "\n".join(parts)


def describe_run(results: dict[str, Any]) -> str:
    lines = [f"server: {results['server']}"]
    for name, figs in results.items():
        if isinstance(figs, dict) and name != "scale":
            shown = {
                k: (round(v, 2) if isinstance(v, float) else v)
                for k, v in figs.items()
                if k != "sweep"
            }
            lines.append(f"{name}: {shown}")
    return "\n".join(lines)


def _measuring_args(argv: list[str]) -> list[str]:
    """The command line minus what does not change what is measured (--raw FILE)."""
    out, skip = [], False
    for arg in argv or ["compare"]:
        if skip:
            skip = False
        elif arg == "--raw":
            skip = True
        elif not arg.startswith("--raw="):
            out.append(arg)
    return out


def compare(
    n_runs: int,
    scale: Scale,
    scenarios: tuple[str, ...],
    doc: str,
    chart_path: str,
    raw: str,
    log: Callable[[str], None],
    from_raw: str = "",
) -> int:
    import json

    if from_raw:  # render again what an earlier run measured (e.g. after editing FINDINGS.md)
        saved = json.loads((ROOT / from_raw).read_text())
        info, runs = saved["info"], saved["runs"]
        scale = Scale(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in saved["scale"].items()}
        )
    else:
        t0 = time.monotonic()
        info = {
            "machine": machine(),
            "load_before": loadavg(),
            "runs": n_runs,
            "versions": _versions(),
            "cores": cores(),
            "code": code_version(),
            "command": "python -m bench " + " ".join(_measuring_args(sys.argv[1:])),
        }
        log(
            f"load average {info['load_before']:.2f}; {n_runs} runs × (hubbub, peer), scale {scale.name}"
        )
        runs = {"hubbub": [], "peer": []}
        # Re-measuring groups that other processes disturbed may add this much in all.
        budget = RetryBudget(240.0)
        with Fleet(scale.workers, info["cores"][1]) as fleet:
            for i in range(n_runs):
                # Group by group, the two servers back to back (which one first
                # alternates): a shared machine's speed drifts over minutes, and a
                # ratio is only fair between measurements taken close together.
                merged: dict[str, dict[str, Any]] = {}
                for g, (names, _fn) in enumerate(GROUPS.values()):
                    want = tuple(n for n in names if n in scenarios)
                    if not want:
                        continue
                    order = ("hubbub", "peer") if (i + g) % 2 == 0 else ("peer", "hubbub")
                    for kind in order:
                        log(f"run {i + 1}/{n_runs}: {kind}")
                        out = run(
                            kind,
                            scale,
                            want,
                            fleet=fleet,
                            cores=info["cores"],
                            log=log,
                            budget=budget,
                        )
                        merged.setdefault(kind, {}).update(out)
                for kind, out in merged.items():
                    runs[kind].append(out)
        info["load_after"] = loadavg()
        info["minutes"] = (time.monotonic() - t0) / 60
        info["code_after"] = code_version()
        if info["code_after"]["digest"] != info["code"]["digest"]:
            log("WARNING: the server code changed during the run: the figures mix versions")
    rows, missed = table(runs)
    print(text_table(rows))
    print("targets missed: " + ("; ".join(missed) if missed else "none"))
    if raw and not from_raw:
        from dataclasses import asdict

        (ROOT / raw).write_text(
            json.dumps({"info": info, "scale": asdict(scale), "runs": runs}, default=str, indent=1)
        )
    if doc:
        doc_path = ROOT / doc
        chart_rel = None
        if chart_path and chart(runs, ROOT / chart_path, scale):
            chart_rel = os.path.relpath(ROOT / chart_path, doc_path.parent)
        doc_path.parent.mkdir(parents=True, exist_ok=True)
        doc_path.write_text(document(runs, scale, info, chart_rel))
        log(f"wrote {doc}" + (f" and {chart_path}" if chart_rel else ""))
    if not from_raw:
        log(f"took {info['minutes']:.1f} minutes")
    return 0
