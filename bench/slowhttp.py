"""``python -m bench slowhttp``: slowhttptest against a real node (issue 15 item 7).

For each mode - slowloris (``-H``: headers that never end), slow body (``-B``: a POST
body a few bytes at a time), slow read (``-X``: a client that reads the response through
a tiny TCP window) - start a node whose open-file limit is *lower* than the attack's
connection count, run slowhttptest against it on 127.0.0.1, and meanwhile, once a second:

- log in a polite user (WebSocket upgrade, ``hello``, ``profile``) and time it;
- ask ``/healthz`` from loopback (the operator) and time it;
- count the node's open file descriptors.

slowhttptest's own probe gives "service available" per second.  The figures go to
stdout as a markdown table, and with ``--doc`` into docs/reliability.md between the
``slowhttp`` markers.  Everything is bounded: connections, rate and seconds per mode.
"""

from __future__ import annotations

import csv
import json
import logging
import platform
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

from .harness import ROOT, ServerProcess

MODES = {
    # -i: seconds between the follow-up bytes of each connection (headers, body, reads).
    "H": ("slowloris: headers that never end", ["-H", "-i", "5"]),
    "B": ("slow body: POST body a few bytes at a time", ["-B", "-i", "5", "-s", "100000"]),
    "X": (
        "slow read: 1-64 byte TCP window, 32 bytes read per second",
        ["-X", "-k", "3", "-w", "1", "-y", "64", "-n", "1", "-z", "32"],
    ),
}
BEGIN, END = "<!-- slowhttp:begin -->", "<!-- slowhttp:end -->"


def polite_login(port: int, nick: str, timeout: float = 5.0) -> float | None:
    """Seconds to log in (upgrade, hello → welcome, profile → profile_ok), None if it failed."""
    start = time.monotonic()
    try:
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=timeout, close_timeout=1) as ws:
            ws.send(json.dumps({"type": "hello"}))
            if json.loads(ws.recv(timeout=timeout))["type"] != "welcome":
                return None
            ws.send(json.dumps({"type": "profile", "nick": nick}))
            while (frame := json.loads(ws.recv(timeout=timeout)))["type"] == "ping":
                pass
            return time.monotonic() - start if frame["type"] == "profile_ok" else None
    except Exception:
        return None


def healthz(port: int, timeout: float = 3.0) -> float | None:
    start = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as r:
            return time.monotonic() - start if r.status == 200 else None
    except Exception:
        return None


def run_mode(
    mode: str, *, connections: int, rate: int, length: int, nofile: int, flags: list[str], log: Any
) -> dict[str, Any]:
    title, args = MODES[mode]
    with (
        tempfile.TemporaryDirectory(prefix="slowhttp-") as tmp,
        ServerProcess("hubbub", flags, nofile=nofile) as node,
    ):
        prefix = str(Path(tmp) / "run")
        argv = [
            "slowhttptest",
            *args,
            "-c",
            str(connections),
            "-r",
            str(rate),
            "-l",
            str(length),
            "-p",
            "3",
            "-g",
            "-o",
            prefix,
            "-u",
            f"http://127.0.0.1:{node.port}/",
        ]
        log(f"{mode}: {' '.join(argv)}")
        samples: list[dict[str, Any]] = []
        stop = threading.Event()

        def sample() -> None:
            t0, n = time.monotonic(), 0
            while not stop.is_set():
                n += 1
                login = polite_login(node.port, f"polite{n}")
                health = healthz(node.port)
                fds = node.open_files() if node.alive() else None
                samples.append(
                    {
                        "t": round(time.monotonic() - t0, 1),
                        "login": login,
                        "healthz": health,
                        "fds": fds,
                    }
                )
                stop.wait(max(0.0, n - (time.monotonic() - t0)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        attack = subprocess.run(argv, capture_output=True, text=True, timeout=length + 60)
        stop.set()
        sampler.join(10)
        rss_kb = node.rss_kb() if node.alive() else None
        alive = node.alive()
        text = node.log_text()
        traceback = "Traceback" in text
        if traceback:
            log(f"{mode}: the node printed a traceback:\n{text[text.index('Traceback') :][:3000]}")
        rows = list(csv.DictReader(open(prefix + ".csv"))) if Path(prefix + ".csv").exists() else []
    if not rows:
        raise RuntimeError(
            f"slowhttptest wrote no CSV: {attack.stdout[-2000:]} {attack.stderr[-2000:]}"
        )
    available = [int(r["Service Available"]) > 0 for r in rows]
    logins = [s["login"] for s in samples]
    ok = [x for x in logins if x is not None]
    health = [s["healthz"] for s in samples if s["healthz"] is not None]
    return {
        "mode": mode,
        "title": title,
        "flags": " ".join(flags) or "(defaults)",
        "command": " ".join(argv[:-3] + ["run", "-u", "http://127.0.0.1:PORT/"]),
        "seconds": len(rows),
        "available": sum(available),
        "first_unavailable": next(
            (int(r["Seconds"]) for r, a in zip(rows, available, strict=True) if not a), None
        ),
        "max_connected": max(int(r["Connected"]) for r in rows),
        "closed": int(rows[-1]["Closed"]),
        "logins": len(logins),
        "logins_ok": len(ok),
        "login_max": max(ok, default=None),
        "healthz_ok": len(health),
        "healthz_max": max(health, default=None),
        "fds_max": max((s["fds"] for s in samples if s["fds"]), default=None),
        "rss_mb": round(rss_kb / 1024) if rss_kb else None,
        "alive": alive,
        "traceback": traceback,
    }


def table(results: list[dict[str, Any]], nofile: int, connections: int) -> str:
    from hubbub.admission import SHED_SLACK
    from hubbub.config import Config
    from hubbub.gate import LATER_FDS

    spare = LATER_FDS + SHED_SLACK + 1  # besides the files open at start (auto_max_sockets)
    reserve = Config().admin_reserve
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.node()} ({platform.machine()}, "
        f"{platform.python_implementation()} {platform.python_version()}, shared 2-core machine), "
        f"all traffic on 127.0.0.1: `python -m bench slowhttp` (bench/slowhttp.py). The node runs "
        f"as `python server.py --port 0 FLAGS` with an open-file limit of {nofile}, so the "
        f"{connections} attack connections are more than it can hold; once a second a polite "
        "user logs in (upgrade, hello, profile) and the operator asks /healthz from loopback. "
        "With the defaults one attacking IP is held to 1,000 waiting sockets "
        "(`--max-pending-per-ip`); `--max-pending-per-ip 0` stands for an attack from many "
        f"addresses, where the total cap (`--max-sockets`, automatic: {nofile} − the files open "
        f"at start − {spare} − {reserve}, + {reserve} for loopback) and shedding the socket "
        "longest before the chat "
        "do the work.",
        "",
        '| attack | node FLAGS | slowhttptest "service available" | polite logins | slowest login | /healthz answered | node\'s fds (max) | RSS after | traceback |',
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:

        def secs(x: float | None) -> str:
            return "—" if x is None else f"{x:.2f} s"

        lines.append(
            f"| `{r['mode']}` {r['title']} (max {r['max_connected']} connected at once) "
            f"| `{r['flags']}` | {r['available']}/{r['seconds']} s | {r['logins_ok']}/{r['logins']} "
            f"| {secs(r['login_max'])} | {r['healthz_ok']}/{r['logins']} | {r['fds_max']} "
            f"| {r['rss_mb']} MB | {'yes' if r['traceback'] else 'none'} |"
        )
    lines += ["", "Commands (the URL's port is the node's):", ""]
    lines += [f"- `{c}`" for c in dict.fromkeys(r["command"] for r in results)]
    return "\n".join(lines)


def write_doc(path: Path, text: str) -> None:
    doc = path.read_text()
    if BEGIN not in doc:
        raise RuntimeError(f"{path} has no {BEGIN} marker")
    head, rest = doc.split(BEGIN, 1)
    _old, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(
    modes: str, connections: int, rate: int, length: int, nofile: int, doc: str, log: Any
) -> int:
    # The polite client's library logs its own connections cut under load: noise here.
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    if shutil.which("slowhttptest") is None:
        log("slowhttptest is not installed (Debian: apt install slowhttptest)")
        return 2
    # The node's defaults.  A mode runs for less than the 60 s pre-chat deadlines, so what
    # keeps the node available here is the accept-level cap (under the fd limit) and the
    # shedding of the sockets longest before the chat; the deadlines have their own tests.
    results = [
        run_mode(
            m,
            connections=connections,
            rate=rate,
            length=length,
            nofile=nofile,
            flags=flags,
            log=log,
        )
        for m in re.findall(r"[HBX]", modes)
        for flags in ([], ["--max-pending-per-ip", "0"])
    ]
    text = table(results, nofile, connections)
    print(text)
    if doc:
        write_doc(ROOT / doc, text)
        log(f"wrote {doc}")
    return 0 if all(r["alive"] and not r["traceback"] for r in results) else 1
