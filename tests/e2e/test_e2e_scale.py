"""Actors run on greenlets, never an OS thread per user (STYLE.md, known facts)."""

from __future__ import annotations

import json
import socket

import pytest

from ..support.e2e import Server, frame, raw_upgrade

pytestmark = pytest.mark.e2e


def raw_login(server: Server, nick: str, socks: list[socket.socket]) -> None:
    sock, response = raw_upgrade(server)
    socks.append(sock)
    assert response.startswith(b"HTTP/1.1 101"), response
    sock.sendall(
        frame(0x1, b'{"type":"hello"}')
        + frame(0x1, json.dumps({"type": "profile", "nick": nick}).encode())
    )


def test_os_threads_stay_flat_from_10_to_1000_users():
    """10 users and 1,000 users in chat run on the same number of OS threads."""
    socks: list[socket.socket] = []
    try:
        with Server() as server:
            for i in range(10):
                raw_login(server, f"t{i}", socks)
            server.wait_for(
                lambda: sum(u["state"] == "InChat" for u in server.users()) == 10, what="10 in chat"
            )
            at_10 = server.os_threads()
            for i in range(10, 1000):
                raw_login(server, f"t{i}", socks)
            server.wait_for(
                lambda: sum(u["state"] == "InChat" for u in server.users()) == 1000,
                timeout=30,
                what="1000 in chat",
            )
            at_1000 = server.os_threads()
            assert at_1000 == at_10, (at_10, at_1000)
            assert at_10 <= 4  # main thread, plus at most gevent's resolver/threadpool helpers
    finally:
        for s in socks:
            s.close()


def test_idle_users_add_no_actor_greenlet():
    """1,000 idle users in chat hold no greenlet each: neither an actor greenlet (actors
    run only when mail arrives) nor a reader (the transport reads from a watcher)."""
    socks: list[socket.socket] = []
    try:
        with Server() as server:
            for i in range(10):
                raw_login(server, f"g{i}", socks)
            server.wait_for(
                lambda: sum(u["state"] == "InChat" for u in server.users()) == 10, what="10 in chat"
            )
            at_10 = server.json("/debug/stats")["greenlets"]
            for i in range(10, 1000):
                raw_login(server, f"g{i}", socks)
            server.wait_for(
                lambda: sum(u["state"] == "InChat" for u in server.users()) == 1000,
                timeout=30,
                what="1000 in chat",
            )
            server.wait_for(
                lambda: server.json("/debug/stats")["mailbox_total"] == 0, what="mailboxes empty"
            )
            grown = server.json("/debug/stats")["greenlets"] - at_10
            # Before the mailbox runtime and the watcher transport each user held two: its
            # reader and its actor.  Now the growth is a constant (runners, the hub's own),
            # whatever the number of users.
            assert grown <= 50, grown
    finally:
        for s in socks:
            s.close()
