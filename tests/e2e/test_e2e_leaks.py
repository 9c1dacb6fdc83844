"""Nothing leaks: a thousand connections come and go, and the server is back where it was.

The cycles are bench/leak_cycles.py's (the full-size run is
``python bench/leak_cycles.py --cycles 20000``; docs/benchmarks.md has its table):
every connection ends one of seven ways — client `bye`, WebSocket close frame, TCP
reset after chatting, TCP reset in the middle of the upgrade, TCP half-close, no
`hello` (hello timeout, 4001), no `profile` (profile timeout, 4004) — 50 at a time.
"""

from __future__ import annotations

import pytest

from bench.leak_cycles import KINDS, SERVER_FLAGS, check, run_cycles, settle

from ..support.e2e import Server

pytestmark = pytest.mark.e2e

WARMUP, CYCLES, CONCURRENCY = 210, 1050, 50  # multiples of len(KINDS): every kind as often


@pytest.fixture(scope="module")
def server():
    with Server(*SERVER_FLAGS) as srv:
        yield srv


def test_a_thousand_cycles_leave_nothing_behind(server):
    """After warm-up, 1,050 mixed cycles: users 0; actors, pending timers, nicks and rooms
    back to the baseline; mailboxes empty; greenlets +5, fds +3, RSS +10% at most."""
    warm = run_cycles(server, WARMUP, CONCURRENCY, deadline=10)
    # RSS is read after the warm-up: the allocator keeps what the first peak took.
    base = settle(server, timeout=5)
    assert (base["users"], base["pending_timers"], base["mailbox_total"]) == (0, 0, 0), base
    assert base["nicks"] in (0, None) and base["dir_rooms"] in (0, None), base

    outcomes = run_cycles(server, CYCLES, CONCURRENCY, start=WARMUP, deadline=20)
    after = settle(server, base, timeout=10)

    errors = {k: v for k, v in (warm + outcomes).items() if k.startswith("error")}
    assert not errors, errors
    # "late": the server's 0.3 s hello timer beat a hello sent at once (a loaded machine);
    # legitimate, but it must stay rare.
    late = sum(v for k, v in outcomes.items() if k.startswith("late"))
    assert late <= CYCLES // 100, outcomes
    assert sum(outcomes.values()) == CYCLES and outcomes["reset_early"] == CYCLES // len(KINDS), (
        outcomes
    )
    assert not check(base, after), (check(base, after), base, after)
    assert "Traceback" not in server.log()
