"""hubbub under ``tracemalloc``: where a logged-in user's memory goes.

    python -m bench.memtrace --port 0 [hubbub flags]

Runs ``server.main`` unchanged with tracemalloc started first. Each SIGUSR1 writes a
snapshot to ``$BENCH_SNAPSHOT.<n>`` (n = 1, 2, ...) and then creates
``$BENCH_SNAPSHOT.<n>.done``; ``python -m bench memprofile`` compares two of them.
"""

import server  # noqa: I001 - first: server.py monkey-patches gevent on its line 1

import os
import signal
import sys
import tracemalloc

import gevent


def main() -> int:
    tracemalloc.start(4)
    base = os.environ.get("BENCH_SNAPSHOT", "/tmp/hubbub-snapshot")
    count = [0]

    def dump() -> None:
        count[0] += 1
        path = f"{base}.{count[0]}"
        tracemalloc.take_snapshot().dump(path)
        open(path + ".done", "w").close()

    gevent.signal_handler(signal.SIGUSR1, dump)
    return server.main()


if __name__ == "__main__":
    sys.exit(main())
