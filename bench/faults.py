"""``python -m bench faults``: a Jepsen-style fault test of the cluster (issue 12.5).

Several real node processes share one real redis-server; chatters (one thread each,
the `websockets` client) talk in a few rooms across the nodes and record every frame
they receive and every say they send; a nemesis kills Redis and restarts it empty,
pauses it (SIGSTOP/SIGCONT), slows it (``DEBUG SLEEP``, ``CLIENT PAUSE``) and kills
nodes (starting a new one in their place); then :func:`check` goes over the whole
history against the promise of docs/cluster.md:

* per room and epoch one total order: no seq given to two messages, no message under
  two seqs;
* each client sees each message once, and within an epoch its seqs follow each other
  with no gap and no repeat, except where a `joined` said ``complete: false``;
* a `joined` with ``complete: true`` for a ``since`` misses nothing after it;
* no acked message is lost for a member still connected in that epoch at the end;
* every say is answered (ack or error) unless its connection closed (the close is the
  answer: the client saw why).

The last room's chatters all use the first node, so that room is held by one node (its
lease: docs/cluster.md "Rooms on one node") until the nemesis kills that node.

The small run is tests/e2e/test_e2e_cluster_faults.py (under a minute); the figures
in docs/reliability.md come from ``python -m bench faults --seconds 60``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

__all__ = ["Chatter", "Cluster", "check", "run"]


# --- the cluster under test ----------------------------------------------------------


class Cluster:
    """A redis-server and ``nodes`` hubbub processes (tests/support's Server and RedisServer)."""

    def __init__(self, nodes: int, ttl: float = 1.5) -> None:
        from tests.support.e2e import Server
        from tests.support.redis_fixture import RedisServer

        self._server = Server
        self.redis = RedisServer().start()
        self.ttl = ttl
        self.nodes = [self._start() for _ in range(nodes)]
        self.lock = threading.Lock()

    def _start(self) -> Any:
        return self._server(
            "--redis", f"{self.redis.url}?node_ttl={self.ttl}", "--rate", "1000", "--burst", "1000"
        )

    def urls(self) -> list[str]:
        with self.lock:
            return [n.ws_url for n in self.nodes]

    def kill_node(self) -> None:
        with self.lock:  # the first node half of the time: it holds the pinned room's lease
            victim = self.nodes.pop(
                0 if random.random() < 0.5 else random.randrange(len(self.nodes))
            )
        victim.proc.kill()
        victim.stop()
        fresh = self._start()
        with self.lock:
            self.nodes.append(fresh)

    def close(self) -> None:
        for n in self.nodes:
            n.proc.kill()
            n.stop()
        self.redis.close()


def _redis_raw(port: int, *args: str) -> None:
    """Send one command and do not wait for the answer (DEBUG SLEEP holds it)."""

    def go() -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall((" ".join(args) + "\r\n").encode())
                s.recv(64)
        except OSError:
            pass

    threading.Thread(target=go, daemon=True).start()


FAULTS = (
    "redis-restart-empty",
    "redis-sigstop",
    "redis-debug-sleep",
    "redis-client-pause",
    "node-kill",
)


def nemesis(
    cluster: Cluster, faults: list[str], stop: threading.Event, quiet: float = 2.0
) -> list[str]:
    """Inject faults one after the other, with ``quiet`` seconds between them."""
    done: list[str] = []
    r = cluster.redis
    for fault in faults:
        if stop.wait(quiet):
            break
        if fault == "redis-restart-empty":
            r.stop()
            time.sleep(1.0)
            r.start()
        elif fault == "redis-sigstop":
            assert r.proc is not None
            os.kill(r.proc.pid, signal.SIGSTOP)
            time.sleep(3.0)
            os.kill(r.proc.pid, signal.SIGCONT)
        elif fault == "redis-debug-sleep":
            _redis_raw(r.port, "DEBUG", "SLEEP", "2.5")
            time.sleep(2.5)
        elif fault == "redis-client-pause":
            _redis_raw(r.port, "CLIENT", "PAUSE", "2000")
            time.sleep(2.0)
        elif fault == "node-kill":
            cluster.kill_node()
        done.append(fault)
    return done


# --- the clients -----------------------------------------------------------------------


class Chatter(threading.Thread):
    """One chat client that reconnects whenever it is cut off, and records everything.

    ``events``: ("conn", n) | ("sent", n, id) | ("join", n, since, epoch) |
    ("frame", n, frame) | ("closed", n, code) | ("end", n), in the order they happened.
    """

    def __init__(
        self,
        nick: str,
        room: str,
        urls: Any,
        stop: threading.Event,
        rate: float = 10.0,
        pinned: bool = False,
    ) -> None:
        super().__init__(name=f"chatter-{nick}", daemon=True)
        self.nick, self.room, self.urls, self.stop, self.rate = nick, room, urls, stop, rate
        self.pinned = pinned
        """Always the first node: its room is held by one node (the lease) until that node dies."""
        self.events: list[tuple[Any, ...]] = []
        self.conn_no = 0
        self.said = 0
        self.last_seq: int | None = None
        self.epoch: str | None = None

    def run(self) -> None:
        while not self.stop.is_set():
            self.conn_no += 1
            n = self.conn_no
            try:
                urls = self.urls()
                ws = connect(
                    urls[0] if self.pinned else random.choice(urls), open_timeout=3, close_timeout=1
                )
            except (OSError, TimeoutError, Exception):  # noqa: BLE001 - a node being killed: try another
                time.sleep(0.2)
                continue
            self.events.append(("conn", n))
            try:
                with ws:
                    self._session(ws, n)
            except ConnectionClosed as exc:
                self.events.append(("closed", n, exc.rcvd.code if exc.rcvd else 1006))
            except (OSError, TimeoutError) as exc:
                self.events.append(("closed", n, f"{type(exc).__name__}"))
            time.sleep(0.1)

    def _recv(self, ws: Any, n: int, timeout: float) -> dict[str, Any] | None:
        try:
            frame = json.loads(ws.recv(timeout=timeout))
        except TimeoutError:
            return None
        self.events.append(("frame", n, frame))
        kind = frame["type"]
        if kind == "message" and frame["room"] == self.room:
            self.last_seq = frame["seq"]
        elif kind == "joined":
            self.epoch = frame.get("epoch")
            if frame["history"]:
                self.last_seq = frame["history"][-1]["seq"]
            elif not frame["complete"]:
                self.last_seq = None
        elif kind == "ping":
            ws.send(json.dumps({"type": "pong"}))
        return frame

    def _until(self, ws: Any, n: int, kinds: set[str], timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = self._recv(ws, n, max(0.01, deadline - time.monotonic()))
            if frame is not None and (
                frame["type"] in kinds or (frame["type"] == "error" and "error" in kinds)
            ):
                return frame
        raise TimeoutError(f"no {kinds}")

    def _session(self, ws: Any, n: int) -> None:
        ws.send(json.dumps({"type": "hello"}))
        self._until(ws, n, {"welcome"})
        while True:  # a nick held by a dead node is free within the TTL; unavailable: try again
            ws.send(json.dumps({"type": "profile", "nick": self.nick}))
            if self._until(ws, n, {"profile_ok", "error"})["type"] == "profile_ok":
                break
            if self.stop.wait(0.3):
                return
        join: dict[str, Any] = {"type": "join", "room": self.room}
        if self.last_seq is not None:
            join.update(since=self.last_seq, epoch=self.epoch)
        self.events.append(("join", n, join.get("since"), join.get("epoch")))
        ws.send(json.dumps(join))
        self._until(ws, n, {"joined"})
        next_say = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_say:
                self.said += 1
                say_id = f"{self.nick}-{self.said}"
                self.events.append(("sent", n, say_id))
                ws.send(
                    json.dumps({"type": "say", "room": self.room, "text": say_id, "id": say_id})
                )
                next_say = now + random.expovariate(self.rate)
            self._recv(ws, n, max(0.001, next_say - time.monotonic()))
        # Drain: the answers to the last says.
        end = time.monotonic() + 3
        while time.monotonic() < end:
            self._recv(ws, n, 0.2)
        self.events.append(("end", n))


# --- the checker -------------------------------------------------------------------------


@dataclass
class Report:
    faults: list[str] = field(default_factory=list)
    clients: int = 0
    connections: int = 0
    says: int = 0
    acked: int = 0
    refused: int = 0
    messages_checked: int = 0
    """Message frames received (live and in histories) that the checker went over."""
    epochs: int = 0
    anomalies: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "faults": self.faults,
            "clients": self.clients,
            "connections": self.connections,
            "says": self.says,
            "acked": self.acked,
            "refused": self.refused,
            "messages_checked": self.messages_checked,
            "epochs": self.epochs,
            "anomalies": len(self.anomalies),
            "examples": self.anomalies[:10],
        }


def check(chatters: list[Chatter]) -> Report:
    rep = Report(clients=len(chatters))
    order: dict[tuple[str, str | None], dict[int, str]] = defaultdict(
        dict
    )  # (room, epoch) → seq → id
    placed: dict[tuple[str, str | None], dict[str, int]] = defaultdict(
        dict
    )  # (room, epoch) → id → seq
    acked: dict[str, tuple[str, str | None, int]] = {}  # id → (room, epoch, seq)
    final: dict[
        str, tuple[str | None, int | None, bool]
    ] = {}  # client → (epoch, last seq, open at end)

    def place(c: Chatter, epoch: str | None, m: dict[str, Any]) -> None:
        key = (m["room"], epoch)
        rep.messages_checked += 1
        seen = order[key].setdefault(m["seq"], m["text"])
        if seen != m["text"]:
            rep.anomalies.append(
                f"{key}: seq {m['seq']} is both {seen!r} and {m['text']!r} ({c.nick})"
            )
        first = placed[key].setdefault(m["text"], m["seq"])
        if first != m["seq"]:
            rep.anomalies.append(
                f"{key}: {m['text']!r} under seq {first} and {m['seq']} ({c.nick})"
            )

    for c in chatters:
        epoch: str | None = None
        expect: int | None = None  # the next seq this client must see, when known
        got: set[tuple[str | None, str]] = set()
        pending: dict[int, int] = defaultdict(int)  # connection → says not answered yet
        join_since: dict[int, tuple[int | None, str | None]] = {}
        open_conn: int | None = None
        last: int | None = None
        chatting: int | None = None  # the connection that has joined: its errors answer says
        for ev in c.events:
            kind, n = ev[0], ev[1]
            if kind == "conn":
                rep.connections += 1
                expect, open_conn = None, n
            elif kind == "join":
                join_since[n] = (ev[2], ev[3])
                chatting = n
            elif kind == "sent":
                rep.says += 1
                pending[n] += 1
            elif kind in ("closed", "end"):
                if kind == "end" and pending[n] > 0:
                    rep.anomalies.append(
                        f"{c.nick}: {pending[n]} says never answered on a live connection"
                    )
                pending[n] = 0
                open_conn = n if kind == "end" else None
            elif kind == "frame":
                f = ev[2]
                t = f["type"]
                if t == "ack":
                    pending[n] -= 1
                    rep.acked += 1
                    acked[f["id"]] = (c.room, epoch, f["seq"])
                elif t == "error" and chatting == n:
                    pending[n] -= 1
                    rep.refused += 1
                elif t == "joined":
                    epoch = f.get("epoch")
                    hist = [m["seq"] for m in f["history"]]
                    if hist != list(range(hist[0], hist[0] + len(hist))) if hist else False:
                        rep.anomalies.append(f"{c.nick}: history not contiguous: {hist}")
                    since, since_epoch = join_since.pop(n, (None, None))
                    if (
                        f["complete"]
                        and since is not None
                        and since_epoch == epoch
                        and hist
                        and hist[0] != since + 1
                    ):
                        rep.anomalies.append(
                            f"{c.nick}: complete true after since {since} but history {hist[:3]}..."
                        )
                    for m in f["history"]:
                        place(c, epoch, m)
                        if (epoch, m["text"]) in got:
                            rep.anomalies.append(
                                f"{c.nick}: {m['text']!r} twice in epoch {epoch} (history)"
                            )
                        got.add((epoch, m["text"]))
                    if hist:
                        expect = hist[-1] + 1
                    elif f["complete"] and since is not None and since_epoch == epoch:
                        expect = since + 1
                    else:
                        expect = None
                    last = hist[-1] if hist else (since if f["complete"] else None)
                elif t == "message":
                    place(c, epoch, f)
                    if (epoch, f["text"]) in got:
                        rep.anomalies.append(f"{c.nick}: {f['text']!r} twice in epoch {epoch}")
                    got.add((epoch, f["text"]))
                    if expect is not None and f["seq"] != expect:
                        what = "a gap" if f["seq"] > expect else "a repeat"
                        rep.anomalies.append(
                            f"{c.nick}: {what}: seq {f['seq']} where {expect} was next ({epoch})"
                        )
                    expect, last = f["seq"] + 1, f["seq"]
        final[c.nick] = (epoch, last, open_conn is not None)
    # No acked message lost for a member connected, in its epoch, at the end.
    for c in chatters:
        epoch, last, still = final[c.nick]
        if not still or last is None:
            continue
        for msg_id, (room, e, seq) in acked.items():
            if room == c.room and e == epoch and seq <= last and msg_id not in placed[(room, e)]:
                rep.anomalies.append(f"{c.nick}: acked {msg_id!r} (seq {seq}, {e}) never delivered")
    rep.epochs = len({e for (_r, e) in order})
    return rep


def run(
    nodes: int = 2,
    clients: int = 6,
    rooms: int = 2,
    seconds: float = 20.0,
    rate: float = 8.0,
    faults: list[str] | None = None,
    log: Any = None,
) -> Report:
    """Start the cluster, chat under the nemesis for about ``seconds``, check, stop."""
    cluster = Cluster(nodes)
    stop, nemesis_stop = threading.Event(), threading.Event()
    # The last room's chatters all use the first node: a room held there (the lease), moved
    # to Redis or to another node when that node is killed.
    chatters = [
        Chatter(
            f"c{i}", f"room{i % rooms}", cluster.urls, stop, rate, pinned=i % rooms == rooms - 1
        )
        for i in range(clients)
    ]
    plan = list(faults or FAULTS)
    try:
        for c in chatters:
            c.start()
        started = time.monotonic()
        done = nemesis(cluster, plan, nemesis_stop)
        while time.monotonic() - started < seconds:  # more rounds while there is time
            more = nemesis(cluster, random.sample(plan, len(plan)), nemesis_stop)
            done += more
            if not more:
                break
            if log:
                log(f"{len(done)} faults so far")
        time.sleep(3)  # quiet: everything heals
        stop.set()
        for c in chatters:
            c.join(timeout=10)
    finally:
        cluster.close()
    report = check(chatters)
    report.faults = done
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench faults", description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--clients", type=int, default=12)
    p.add_argument("--rooms", type=int, default=3)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--rate", type=float, default=8.0, help="says per second per client")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    report = run(
        args.nodes,
        args.clients,
        args.rooms,
        args.seconds,
        args.rate,
        log=lambda m: print(f"[{time.monotonic() - t0:5.1f}s] {m}", file=sys.stderr, flush=True),
    )
    print(json.dumps(report.as_dict(), indent=2))
    return 1 if report.anomalies else 0


if __name__ == "__main__":
    sys.exit(main())
