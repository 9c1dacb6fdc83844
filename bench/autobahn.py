"""Autobahn|Testsuite fuzzing client against hubbub's WebSocket transport (echo app).

    python -m bench.autobahn [--cases 1.*,2.*,...] [--wstest PATH] [--out DIR]

Starts an echo server on ``hubbub.transport`` (the same ``Handler`` and ``Connection``
the chat server uses, default limits except a 16 MiB message size for the big-message
cases) on a free loopback port, runs ``wstest -m fuzzingclient`` against it and prints
the tally of behaviours (OK, NON-STRICT, INFORMATIONAL, UNIMPLEMENTED, FAILED). Exit
status 1 if any case FAILED.

wstest is ``autobahntestsuite==0.8.2``, which runs only on Python 2.7: install it with
``~/.pyenv/versions/2.7.18/bin/pip install autobahntestsuite==0.8.2`` (the default
``--wstest`` path). Bounded: the run is killed after ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_CASES = "1.*,2.*,3.*,4.*,5.*,6.*,7.*,10.*"
DEFAULT_WSTEST = os.path.expanduser("~/.pyenv/versions/2.7.18/bin/wstest")

ECHO_SERVER = """
from gevent import monkey; monkey.patch_all()
import sys
from gevent.pywsgi import WSGIServer
from hubbub.transport import Handler

class EchoHandler(Handler):
    max_message = 16 << 20
    ws_paths = None

def app(environ, start_response):
    conn = environ.get("hubbub.connection")
    if conn is None:
        start_response("404 Not Found", [("Content-Length", "0")])
        return []
    conn.on_message = lambda m: conn.send(m, binary=isinstance(m, bytes))
    return []

server = WSGIServer(("127.0.0.1", 0), app, handler_class=EchoHandler, log=None)
server.start()
print(server.server_port, flush=True)
server.serve_forever()
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=DEFAULT_CASES)
    ap.add_argument("--wstest", default=DEFAULT_WSTEST)
    ap.add_argument("--out", default="", help="report directory (default: a temp dir)")
    ap.add_argument("--timeout", type=float, default=170.0)
    args = ap.parse_args()
    if not Path(args.wstest).exists():
        print(f"no wstest at {args.wstest}: see this module's docstring", file=sys.stderr)
        return 2
    root = Path(__file__).resolve().parent.parent
    out = Path(args.out or tempfile.mkdtemp(prefix="autobahn-"))
    env = dict(os.environ, PYTHONPATH=str(root))
    server = subprocess.Popen(
        [sys.executable, "-c", ECHO_SERVER], cwd=root, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(server.stdout.readline())  # type: ignore[union-attr]
        spec = {
            "outdir": str(out),
            "servers": [{"agent": "hubbub", "url": f"ws://127.0.0.1:{port}/ws"}],
            "cases": args.cases.split(","),
            "exclude-cases": [],
            "exclude-agent-cases": {},
        }
        spec_file = out / "fuzzingclient.json"
        out.mkdir(parents=True, exist_ok=True)
        spec_file.write_text(json.dumps(spec))
        subprocess.run(
            [args.wstest, "-m", "fuzzingclient", "-s", str(spec_file)],
            cwd=out,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=args.timeout,
            check=False,
        )
    finally:
        server.kill()
        server.wait()
    results = json.loads((out / "index.json").read_text())["hubbub"]
    tally = collections.Counter(r["behavior"] for r in results.values())
    close = collections.Counter(r["behaviorClose"] for r in results.values())
    not_ok = {case: r["behavior"] for case, r in sorted(results.items()) if r["behavior"] != "OK"}
    print(
        json.dumps(
            {
                "cases": len(results),
                "behavior": tally,
                "behaviorClose": close,
                "not_ok": not_ok,
                "report": str(out / "index.html"),
            },
            indent=1,
        )
    )
    return 1 if tally.get("FAILED") else 0


if __name__ == "__main__":
    sys.exit(main())
