"""What an idle actor costs, and what a drain costs (actors/base.py, docs/architecture.md).

    python -m bench.actor_probe            # 2,000 actors for tracemalloc, 20,000 for RSS

In one process, no sockets, bounded (a few seconds):

* bytes per idle actor: N bare HubbubActors under one parent, each given one message and
  left idle; tracemalloc (Python heap) and RSS (/proc/self/statm) before and after;
* greenlets alive after they went idle (gc scan);
* the cost of one drain's switch: a fresh raw greenlet per drain vs a parked runner reused
  through a hub callback (200,000 of each), the choice behind the runner pool.
"""

from gevent import monkey

monkey.patch_all()

import gc  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from greenlet import getcurrent, greenlet  # noqa: E402

from actors.base import HubbubActor  # noqa: E402


class Idle(HubbubActor):
    def on_receive(self, message: Any) -> Any:
        return None


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _greenlets() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet) and not o.dead)


def _settle(actors: list[Idle]) -> None:
    while not all(a.actor_inbox.empty() for a in actors):
        gevent.sleep(0.01)
    gevent.sleep(0.05)
    gc.collect()


def per_actor(n_heap: int = 2000, n_rss: int = 20000) -> dict[str, float]:
    root = Idle.spawn("root")
    warm = [Idle.spawn(f"w{i}", root) for i in range(200)]
    for a in warm:
        a.actor_ref.tell("x")
    _settle(warm)
    g0 = _greenlets()
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    heap = [Idle.spawn(f"h{i}", root) for i in range(n_heap)]
    for a in heap:
        a.actor_ref.tell("x")
    _settle(heap)
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    heap_bytes = sum(s.size_diff for s in snap1.compare_to(snap0, "filename")) / n_heap
    greenlets = _greenlets() - g0
    gc.collect()
    r0 = _rss()
    many = [Idle.spawn(f"r{i}", root) for i in range(n_rss)]
    for a in many:
        a.actor_ref.tell("x")
    _settle(many)
    rss_bytes = (_rss() - r0) / n_rss
    return {
        "heap_bytes_per_actor": round(heap_bytes),
        "rss_bytes_per_actor": round(rss_bytes),
        "greenlets_after_idle": greenlets,
        "actors": n_heap,
    }


def drain_switch(n: int = 200_000) -> dict[str, float]:
    hub = gevent.get_hub()
    loop = hub.loop
    done = [0]

    def work() -> None:
        done[0] += 1

    def fresh() -> None:
        greenlet(work, hub).switch()

    t = time.perf_counter()
    for _ in range(n):
        loop.run_callback(fresh)
    while done[0] < n:
        gevent.sleep(0)
    fresh_us = (time.perf_counter() - t) / n * 1e6

    done[0] = 0
    free: list[greenlet] = []

    def runner(fn: Any) -> None:
        while True:
            fn()
            free.append(getcurrent())
            fn = hub.switch()

    def dispatch(fn: Any) -> None:
        (free.pop() if free else greenlet(runner, hub)).switch(fn)

    t = time.perf_counter()
    for _ in range(n):
        loop.run_callback(dispatch, work)
    while done[0] < n:
        gevent.sleep(0)
    pooled_us = (time.perf_counter() - t) / n * 1e6
    return {"fresh_greenlet_us": round(fresh_us, 2), "pooled_runner_us": round(pooled_us, 2)}


if __name__ == "__main__":
    print(per_actor())
    print(drain_switch())
