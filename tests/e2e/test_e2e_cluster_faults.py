"""The cluster under faults (issue 12.5): a small run of bench/faults.py in the suite.

Real node processes and a real redis-server; a nemesis restarts Redis empty, pauses it
(SIGSTOP), slows it (DEBUG SLEEP, CLIENT PAUSE) and kills a node while clients chat;
then the checker goes over every frame every client received and every say it sent.
"""

from __future__ import annotations

import pytest

from bench.faults import FAULTS, run

pytestmark = pytest.mark.e2e


def test_one_order_per_room_through_every_fault():
    """Per room and epoch one order, no duplicates, no acked message lost, every complete
    flag true to the history, every say answered or its connection closed."""
    report = run(nodes=2, clients=6, rooms=2, seconds=15, rate=8)
    summary = report.as_dict()
    assert set(report.faults) == set(FAULTS), summary
    assert report.acked > 100 and report.messages_checked > 500, summary
    assert report.refused > 0, "the faults were felt: some says were refused as unavailable"
    assert report.anomalies == [], summary
