"""Framing-core micro-benchmark: hubbub.wsproto vs wsproto vs websockets' Protocol.

    python -m bench.framing [--repeat 5]

Three figures per library, best of ``--repeat`` runs (CPU-bound, one core, no sockets):

* parse: 20,000 typical chat frames from a client (masked JSON text, 40-200 bytes),
  fed 4 KiB at a time as reads deliver them → µs per frame;
* send: 20,000 server text frames of 120 bytes queued and taken → µs per frame;
* fan-out: one 120-byte frame queued on 500 connections and each one's bytes taken
  (what a room does per message) → µs per delivery.

docs/benchmarks.md ("Framing core") has the figures behind the choice of hubbub's own.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import time
from collections.abc import Callable

N_FRAMES = 20_000
FANOUT = 500
CHUNK = 4096


def client_frames(n: int) -> bytes:
    rnd = random.Random(1)
    out = []
    for i in range(n):
        text = json.dumps(
            {"type": "say", "room": "lobby", "text": "x" * rnd.randint(10, 160), "id": str(i)}
        )
        payload = text.encode()
        mask = os.urandom(4)
        k = len(payload)
        head = bytes((0x81, 0x80 | k)) if k < 126 else struct.pack("!BBH", 0x81, 0x80 | 126, k)
        out.append(head + mask + bytes(b ^ mask[j % 4] for j, b in enumerate(payload)))
    return b"".join(out)


def chunks(wire: bytes) -> list[bytes]:
    return [wire[i : i + CHUNK] for i in range(0, len(wire), CHUNK)]


# --- adapters: (new server-side connection, parse chunks, send one, take bytes) -------------


def hubbub_adapter():
    from hubbub.wsproto import Protocol

    def parse(reads: list[bytes]) -> int:
        p = Protocol(max_message=65536)
        n = 0
        for data in reads:
            n += len(p.receive_data(data, 0.0))
        return n

    def new():
        return Protocol()

    def send(p, payload: bytes) -> None:
        p.send_text(payload)

    def take(p) -> bytes:
        return p.data_to_send()

    return parse, new, send, take


def wsproto_adapter():
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import TextMessage

    def parse(reads: list[bytes]) -> int:
        c = Connection(ConnectionType.SERVER)
        n = 0
        for data in reads:
            c.receive_data(data)
            # wsproto hands out partial messages as bytes arrive: count completed ones.
            n += sum(1 for e in c.events() if e.message_finished)
        return n

    def new():
        return Connection(ConnectionType.SERVER)

    def send(c, payload: bytes) -> list:
        # wsproto takes str and encodes it itself: decoding the already-encoded payload
        # once per send is part of its cost for a server that encodes JSON to bytes.
        return c.send(TextMessage(data=payload.decode()))

    def take(out) -> bytes:
        return out

    # wsproto's send() returns the bytes directly: queue == take.
    def send_take(c, payload: bytes) -> bytes:
        return c.send(TextMessage(data=payload.decode()))

    return parse, new, send_take, None


def websockets_adapter():
    from websockets.protocol import OPEN, Protocol, Side

    def parse(reads: list[bytes]) -> int:
        p = Protocol(Side.SERVER, state=OPEN, max_size=65536)
        n = 0
        for data in reads:
            p.receive_data(data)
            n += len(p.events_received())
        return n

    def new():
        return Protocol(Side.SERVER, state=OPEN)

    def send(p, payload: bytes) -> None:
        p.send_text(payload)

    def take(p) -> bytes:
        return b"".join(p.data_to_send())

    return parse, new, send, take


ADAPTERS: dict[str, Callable] = {
    "hubbub.wsproto": hubbub_adapter,
    "wsproto 1.3": wsproto_adapter,
    "websockets 14 Protocol": websockets_adapter,
}


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def run(repeat: int) -> dict[str, dict[str, float]]:
    reads = chunks(client_frames(N_FRAMES))
    payload = json.dumps(
        {
            "type": "message",
            "room": "lobby",
            "from": "alice",
            "text": "y" * 50,
            "seq": 12345,
            "ts": 1795641290.493,
        }
    ).encode()
    payload = payload.ljust(120)
    results = {}
    for name, make in ADAPTERS.items():
        parse, new, send, take = make()
        assert parse(reads) == N_FRAMES, name

        def sends(new=new, send=send, take=take) -> None:
            c = new()
            for _ in range(N_FRAMES):
                r = send(c, payload)
                if take is not None:
                    take(c)
                else:
                    assert r

        conns = [new() for _ in range(FANOUT)]

        def fanout(conns=conns, send=send, take=take) -> None:
            for c in conns:
                r = send(c, payload)
                if take is not None:
                    take(c)
                else:
                    assert r

        results[name] = {
            "parse_us_per_frame": best(lambda parse=parse: parse(reads), repeat) / N_FRAMES * 1e6,
            "send_us_per_frame": best(sends, repeat) / N_FRAMES * 1e6,
            "fanout_us_per_delivery": best(fanout, repeat * 20) / FANOUT * 1e6,
        }
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    results = run(args.repeat)
    print(f"{'library':<26}{'parse µs/frame':>16}{'send µs/frame':>16}{'fan-out µs/delivery':>22}")
    for name, r in results.items():
        print(
            f"{name:<26}{r['parse_us_per_frame']:>16.2f}{r['send_us_per_frame']:>16.2f}"
            f"{r['fanout_us_per_delivery']:>22.2f}"
        )


if __name__ == "__main__":
    main()
