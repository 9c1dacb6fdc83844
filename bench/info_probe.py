"""Issue 15's `profile.info` probe: N connections each send one 63 KB frame, then stay open.

    python bench/info_probe.py 1000            # the issue's frame: 21,000 empty objects in info
    python bench/info_probe.py 1000 plain      # a 62 KB string in info (the transport's share)
    python bench/info_probe.py 1000 tiny       # a 41-byte refused profile (a connection's own cost)

Prints the server's RSS growth per connection while they are open and after they closed.
Loopback only, bounded (one frame per connection; the server is stopped at the end).
Before the budgets: 1.58 MB per connection with the first frame, 971 MB held after 1,000 closed.
"""

from gevent import monkey

monkey.patch_all()  # noqa: E702, I001
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.support.e2e import Client, Server  # noqa: E402

FRAMES = {
    "nested": '{"type":"profile","nick":"NICK","info":{"x":[' + ",".join(["{}"] * 21000) + "]}}",
    "plain": '{"type":"profile","nick":"NICK","info":{"x":"' + "a" * 62000 + '"}}',
    "tiny": '{"type":"profile","nick":"NICK","info":5}',
}


def rss_kib(srv: Server) -> int:
    with open(f"/proc/{srv.proc.pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    frame = FRAMES[sys.argv[2] if len(sys.argv) > 2 else "nested"]
    with Server() as srv:
        c = Client(srv)
        c.hello()
        c.send(frame.replace("NICK", "warm"))
        print("answer:", c.recv())
        c.close()
        base, clients, t = rss_kib(srv), [], time.monotonic()
        for i in range(n):
            c = Client(srv)
            c.hello()
            c.send(frame.replace("NICK", f"p{i}"))
            c.recv()
            clients.append(c)
        held = rss_kib(srv)
        for c in clients:
            c.close()
        time.sleep(1)
        print(
            f"{n} connections, frame {len(frame)} B: RSS +{(held - base) / 1024:.1f} MiB "
            f"({(held - base) / n:.1f} KiB each); after they closed +{(rss_kib(srv) - base) / 1024:.1f} MiB; "
            f"{time.monotonic() - t:.1f} s"
        )


if __name__ == "__main__":
    main()
