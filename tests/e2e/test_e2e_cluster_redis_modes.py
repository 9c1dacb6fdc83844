"""The cluster behind Redis Sentinel and in front of a Redis Cluster (issue 12.3): real
redis-server processes started by tests/support/redis_fixture.py, bounded in time."""

from __future__ import annotations

import time

import pytest

from ..support.e2e import Client, Server
from ..support.redis_fixture import RedisClusterServers, RedisServer, SentinelServer  # noqa: F401

pytestmark = pytest.mark.e2e


class TestSentinel:
    """docs/cluster.md "Settings": redis+sentinel:// URLs through redis-py's Sentinel support."""

    def test_nodes_find_the_primary_through_sentinel_and_chat(self):
        with RedisServer() as primary, SentinelServer(primary) as sentinel:
            url = f"{sentinel.url}?node_ttl=1.5"
            with Server("--redis", url) as a, Server("--redis", url) as b:
                alice = Client(a).login("alice", "hall")
                bob = Client(b).login("bob", "hall")
                alice.expect("presence", event="join", nick="bob")
                assert bob.say("hall", "via sentinel")["seq"] == 1
                alice.expect("message", text="via sentinel")
                a.wait_for(
                    lambda: a.json("/healthz")["cluster"]["nodes"] == 2,
                    timeout=1,
                    what="2 live nodes",
                )

    def test_a_failover_is_followed(self):
        """The primary dies; Sentinel promotes the replica; the nodes find it and chat on."""

        with RedisServer() as primary, RedisServer() as replica:
            replica.command("REPLICAOF", "127.0.0.1", str(primary.port))
            deadline = time.monotonic() + 15  # a loaded machine: the first sync forks
            while b"master_link_status:up" not in replica.command("INFO", "replication"):
                assert time.monotonic() < deadline, "the replica never synchronised"
                time.sleep(0.05)
            with SentinelServer(primary) as sentinel:
                self._failover(primary, replica, sentinel)

    def _failover(
        self, primary: RedisServer, replica: RedisServer, sentinel: SentinelServer
    ) -> None:
        if True:
            url = f"{sentinel.url}?node_ttl=15"  # longer than the failover: nobody is buried
            with Server("--redis", url) as a, Server("--redis", url) as b:
                alice = Client(a).login("alice", "hall")
                bob = Client(b).login("bob", "hall")
                alice.expect("presence", event="join", nick="bob")
                assert bob.say("hall", "before")["seq"] == 1
                alice.expect("message", text="before")
                time.sleep(0.2)  # replicated
                primary.stop()
                deadline = time.monotonic() + 15
                while (
                    True
                ):  # says are refused (unavailable) until Sentinel has promoted the replica
                    bob.send({"type": "say", "room": "hall", "text": "after", "id": "x"})
                    # A say in flight when the primary died waits for the new one (it may have run).
                    answer = bob.recv(timeout=15)
                    while answer["type"] not in ("ack", "error"):
                        answer = bob.recv(timeout=15)
                    if answer["type"] == "ack":
                        break
                    assert answer["code"] == "unavailable", answer
                    assert time.monotonic() < deadline, "no failover"
                    time.sleep(0.3)
                after = alice.expect("message", text="after", timeout=5)
                assert after["seq"] == 2, "the replica had the history: same epoch, seq goes on"
                assert b"role:master" in replica.command("INFO", "replication")


class TestRedisCluster:
    """docs/cluster.md "Redis Cluster": every room's and nick's keys in one slot, sharded pub/sub."""

    def test_rooms_on_every_shard_nicks_and_dms(self):
        with RedisClusterServers() as rc:
            url = f"{rc.url}?node_ttl=1.5"
            with Server("--redis", url) as a, Server("--redis", url) as b:
                rooms = [
                    f"room{i}" for i in range(6)
                ]  # their hash tags land on different primaries
                alice = Client(a).login("alice", *rooms)
                bob = Client(b).login("bob", *rooms)
                for room in rooms:
                    alice.expect("presence", room=room, event="join", nick="bob")
                for i, room in enumerate(rooms):
                    sender = (alice, bob)[i % 2]
                    assert sender.say(room, f"in {room}")["seq"] == 1
                    for c in (alice, bob):
                        c.expect("message", room=room, text=f"in {room}")
                other = Client(b)
                other.hello()
                other.send({"type": "profile", "nick": "alice"})
                other.expect_error("nick_taken")
                bob.send({"type": "dm", "to": "alice", "text": "psst", "id": "d"})
                bob.expect("ack", id="d")
                alice.expect("dm", text="psst")
                assert a.json("/healthz")["status"] == "ok"
                assert "a Redis Cluster of 3 primaries" in a.log()
