"""Quick fan-out probe: one room of M members (raw sockets), S senders pipelining K says each.

    python bench/fanout_probe.py 200 5 200

Prints deliveries/s as seen by the members. Loopback only, bounded (60 s).
Used to measure the direct fan-out change (docs/architecture.md, "Fan-out").
"""

from gevent import monkey

monkey.patch_all()
import json
import sys
import time

import gevent

sys.path.insert(
    0,
    __import__("os").path.dirname(
        __import__("os").path.dirname(__import__("os").path.abspath(__file__))
    ),
)
from tests.support.e2e import Server, frame, raw_upgrade

M, S, K = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
srv = Server(
    "--max-connections", "0", "--rate", "1000000", "--burst", "1000000", "--frame-budget", "0"
)
socks = []
for i in range(M):
    s, r = raw_upgrade(srv)
    socks.append(s)
    s.sendall(
        frame(1, b'{"type":"hello"}')
        + frame(1, json.dumps({"type": "profile", "nick": f"m{i}"}).encode())
    )
srv.wait_for(lambda: srv.json("/debug/stats")["users_by_state"]["InChat"] == M, timeout=60)
for s in socks:
    s.sendall(frame(1, b'{"type":"join","room":"big"}'))
srv.wait_for(
    lambda: any(
        n.get("members") == M
        for n in __import__("tests.support.e2e", fromlist=["walk"]).walk(srv.actors())
    ),
    timeout=60,
)
counts = [0] * M


def reader(i):
    s = socks[i]
    s.settimeout(30)
    while True:
        try:
            d = s.recv(262144)
        except Exception:
            return
        if not d:
            return
        counts[i] += d.count(b'"message"')


rs = [gevent.spawn(reader, i) for i in range(M)]
gevent.sleep(0.5)
base = sum(counts)
t = time.monotonic()
payload = b"".join(
    frame(1, json.dumps({"type": "say", "room": "big", "text": "hello fan-out"}).encode())
    for _ in range(K)
)
for s in socks[:S]:
    s.sendall(payload)
target = base + S * K * M
while sum(counts) < target and time.monotonic() - t < 60:
    gevent.sleep(0.05)
el = time.monotonic() - t
print(
    f"{M} members, {S}x{K} says: {sum(counts) - base} deliveries in {el:.2f}s = {(sum(counts) - base) / el:,.0f}/s"
)
srv.stop()
