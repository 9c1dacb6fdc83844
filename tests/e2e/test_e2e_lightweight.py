"""Issue 11: 1,000 idle logged-in users hold no greenlet each in the transport.

The real server; users logged in over raw sockets (the upgrade, ``hello`` and ``profile``
in one write each, cheap enough for 1,000 in a few seconds); ``/debug/stats`` counts the
live greenlets before and after.

What the transport and the runtime guarantee together: no reader greenlet and no pywsgi
handler greenlet per upgraded connection, and no greenlet per idle actor (actors run
only when mail arrives). Before, each user held two or three.
"""

from __future__ import annotations

import json
import socket

import pytest

from tests.support.e2e import Server, frame

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

USERS = 1000
BATCH = 100
#: greenlets a logged-in idle user's actor holds: none (actors/base.py)
ACTOR_GREENLETS_PER_USER = 0
TEXT = 0x1


def login_batch(server: Server, first: int, n: int) -> list[socket.socket]:
    """Log in users ``first``..``first+n-1``; returns their sockets once all saw profile_ok."""
    socks = []
    for i in range(first, first + n):
        sock = socket.create_connection((server.host, server.port), timeout=10)
        request = (
            f"GET /ws HTTP/1.1\r\nHost: {server.host}:{server.port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        hello = frame(TEXT, json.dumps({"type": "hello"}).encode())
        profile = frame(TEXT, json.dumps({"type": "profile", "nick": f"idle{i}"}).encode())
        sock.sendall(request + hello + profile)
        socks.append(sock)
    for sock in socks:
        data = b""
        while b"profile_ok" not in data:
            chunk = sock.recv(4096)
            assert chunk, f"EOF before profile_ok: {data[:200]!r}"
            data += chunk
    return socks


def greenlets(server: Server) -> int:
    return server.json("/debug/stats")["greenlets"]


def test_idle_users_hold_no_transport_greenlet():
    """Greenlets grow by at most the actors' share per user: no reader, no handler."""
    with Server("--max-connections", "0") as server:
        warm = login_batch(server, 0, 10)  # lazily created parts exist before counting
        before = greenlets(server)
        socks = []
        for first in range(10, 10 + USERS, BATCH):
            socks += login_batch(server, first, BATCH)
        stats = server.json("/debug/stats")
        after = stats["greenlets"]
        per_user = (after - before) / USERS
        print(
            f"\n{USERS} idle users: greenlets {before} → {after} ({per_user:.3f} per user), "
            f"RSS {stats['rss_kb']} KiB"
        )
        assert stats["users"] == USERS + 10
        assert after - before <= ACTOR_GREENLETS_PER_USER * USERS + 20
        for sock in socks + warm:
            sock.close()
