"""``python -m bench``: compare, run or profile.

python -m bench compare                   # the issue-4 comparison: 3 runs × both servers,
                                          # table of ratios, docs/benchmarks.md + chart
python -m bench run --server hubbub --scale smoke --json     # once, one server
python -m bench profile saturated         # hubbub under py-spy during one scenario
python -m bench memprofile                # hubbub under tracemalloc while users log in
python -m bench faults --seconds 60       # the cluster under a nemesis, history checked
                                          # (bench/faults.py; docs/reliability.md)
python -m bench slowhttp --doc docs/reliability.md   # slowhttptest -H/-B/-X vs one node
python -m bench debug --users 19000       # chat latency with and without /debug open
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

from .harness import cores
from .scenarios import SCALES, SCENARIOS, run


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _scenarios(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [n for n in names if n not in SCENARIOS]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {bad[0]!r} (known: {', '.join(SCENARIOS)})"
        )
    return names


def _clean(obj: Any) -> Any:
    """JSON without NaN (not valid JSON): None instead."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["faults"]:  # its own options (bench/faults.py)
        from . import faults

        return faults.main(argv[1:])
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compare", help="hubbub vs the peer, medians of N runs; writes the docs")
    c.add_argument("--runs", type=int, default=3)
    c.add_argument("--scale", choices=sorted(SCALES), default="full")
    c.add_argument("--scenarios", type=_scenarios, default=SCENARIOS)
    c.add_argument("--doc", default="docs/benchmarks.md", help="markdown to write ('' for none)")
    c.add_argument("--chart", default="docs/img/bench-latency.png")
    c.add_argument(
        "--raw",
        default="bench/last-run.json",
        help="where every run's figures go, as JSON ('' for nowhere)",
    )
    c.add_argument(
        "--from-raw",
        default="",
        metavar="FILE",
        help="measure nothing: render the table, docs and chart from a --raw file",
    )

    r = sub.add_parser("run", help="every scenario once against one server")
    r.add_argument("--server", choices=("hubbub", "peer"), default="hubbub")
    r.add_argument("--scale", choices=sorted(SCALES), default="smoke")
    r.add_argument("--scenarios", type=_scenarios, default=SCENARIOS)
    r.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    r.add_argument(
        "--retry-budget",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="re-measure groups disturbed by other processes, for at most this long",
    )

    f = sub.add_parser("profile", help="hubbub under py-spy during one scenario")
    f.add_argument("scenario", type=_scenarios)
    f.add_argument("--scale", choices=sorted(SCALES), default="full")
    f.add_argument("--out", default="", help="collapsed stacks file (default: a temp file)")
    f.add_argument("--top", type=int, default=25)
    f.add_argument("--rate", type=int, default=250, help="py-spy samples per second")

    m = sub.add_parser("memprofile", help="hubbub under tracemalloc while users log in")
    m.add_argument("--users", type=int, default=5000)
    m.add_argument("--scale", choices=sorted(SCALES), default="full")
    m.add_argument("--top", type=int, default=25)

    h = sub.add_parser(
        "slowhttp", help="slowhttptest (slowloris, slow body, slow read) against a node"
    )
    h.add_argument("--modes", default="HBX", help="any of H (headers), B (body), X (slow read)")
    h.add_argument("--connections", type=int, default=4000, help="slowhttptest -c")
    h.add_argument(
        "--rate", type=int, default=1000, help="slowhttptest -r (connections per second)"
    )
    h.add_argument("--length", type=int, default=20, help="slowhttptest -l (seconds per mode)")
    h.add_argument("--nofile", type=int, default=2000, help="the node's open-file limit")
    h.add_argument(
        "--doc", default="", help="markdown with slowhttp markers to write the table into"
    )

    d = sub.add_parser("debug", help="say→ack latency of a chat user with and without /debug open")
    d.add_argument("--users", type=int, default=19000)
    d.add_argument("--seconds", type=float, default=10.0, help="per phase")
    d.add_argument("--rounds", type=int, default=3, help="rounds of (quiet, page, tree)")
    d.add_argument("--interval", type=float, default=0.05, help="seconds between the probe's says")
    d.add_argument(
        "--every", type=float, default=1.0, help="the debug poll interval (the page's default)"
    )
    d.add_argument("--warmup", type=float, default=10.0, help="seconds of polling before measuring")
    d.add_argument("--json", default="", help="also write the figures here")

    args = p.parse_args(argv)
    if args.command == "slowhttp":
        from .slowhttp import main as slowhttp

        return slowhttp(
            args.modes, args.connections, args.rate, args.length, args.nofile, args.doc, log=_log
        )
    if args.command == "debug":
        from .debug_load import describe, measure

        result = measure(
            args.users,
            args.seconds,
            args.interval,
            args.every,
            args.rounds,
            log=_log,
            warmup=args.warmup,
        )
        if args.json:
            with open(args.json, "w") as f:
                json.dump(_clean(result), f, indent=1)
        print(describe(result))
        return 0
    if args.command == "run":
        from .scenarios import RetryBudget

        results = run(
            args.server,
            SCALES[args.scale],
            args.scenarios,
            cores=cores(),
            log=_log,
            budget=RetryBudget(args.retry_budget),
        )
        if args.json:
            print(json.dumps(_clean(results)))
        else:
            from .report import describe_run

            print(describe_run(results))
        return 0
    if args.command == "compare":
        from .report import compare

        return compare(
            args.runs,
            SCALES[args.scale],
            args.scenarios,
            args.doc,
            args.chart,
            args.raw,
            log=_log,
            from_raw=args.from_raw,
        )
    if args.command == "memprofile":
        from .profile import memprofile

        return memprofile(args.users, SCALES[args.scale], args.top, log=_log)
    from .profile import profile

    return profile(args.scenario, SCALES[args.scale], args.out, args.top, log=_log, rate=args.rate)


if __name__ == "__main__":
    sys.exit(main())
