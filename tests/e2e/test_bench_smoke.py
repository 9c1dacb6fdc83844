"""The benchmark harness (bench/, issue 4), CI-sized: every scenario against hubbub.

Each test runs ``python -m bench run --scale smoke`` for one scenario group in a
child process (the load generator forks its workers; this process is
gevent-patched) and checks the correctness figures only: nothing lost, every socket
closed with the right code, every user pinged and still there. Never speed: these
figures must hold on any machine, however busy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from ..support.e2e import ROOT

pytestmark = pytest.mark.e2e


def bench(*scenarios: str) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "run",
            "--server",
            "hubbub",
            "--scale",
            "smoke",
            "--scenarios",
            ",".join(scenarios),
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=55,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


class TestConnectAndIdle:
    """Issue 4 scenarios "connect" and "idle" (200 users in rooms of 10, pinged every second)."""

    def test_every_user_logs_in_and_stays_through_the_idle_pings(self):
        """Every login completes; every user is pinged during idle, answers, and stays."""
        r = bench("connect", "idle")
        connect, idle = r["connect"], r["idle"]
        assert connect["users"] == r["scale"]["connect_users"], connect
        assert connect["failed"] == 0, connect
        assert connect["kb_per_user"] > 0, connect
        assert idle["users"] == connect["users"], idle
        assert idle["lost"] == 0 and idle["codes"] == {}, idle
        assert idle["pings_min"] >= 1, idle


class TestFanOut:
    """Issue 4 scenarios "fan-out paced" and "fan-out saturated" (1 room of 50, 5 senders)."""

    def test_every_member_receives_every_acked_message_in_order(self):
        """Paced and saturated: 0 lost, no seq gap, no error frame, every say acked."""
        r = bench("paced", "saturated")
        members = r["scale"]["fan_members"]
        for name in ("paced", "saturated"):
            level = r[name]
            assert level["members"] == members, (name, level)
            assert level["messages"] > 0 and level["unacked"] == 0, (name, level)
            assert level["lost"] == 0 and level["lost_conns"] == 0, (name, level)
            assert level["seq_gaps"] == 0 and level["errors"] == 0, (name, level)
            assert level["deliveries"] == level["messages"] * members, (name, level)
            assert level["samples"] > 0, (name, level)
            assert min(level["sent_per_sender"]) > 0, (name, level)


class TestHelloStorm:
    """Issue 4 scenario "hello storm" (100 sockets never say hello, --hello-timeout 0.5)."""

    def test_every_silent_socket_is_closed_4001(self):
        """Every socket that upgraded and stayed silent is closed with 4001, none stays open."""
        storm = bench("storm")["storm"]
        assert storm["opened"] == storm["sockets"], storm
        assert storm["closed_4001"] == storm["sockets"], storm
        assert storm["codes"] == {"4001": storm["sockets"]}, storm
        assert storm["still_open"] == 0, storm


class TestMaxConnections:
    """Issue 4 scenario "max connections", against a server limited to 256 open files."""

    def test_users_up_to_the_open_file_limit_are_held_and_answer_pings(self):
        """Every user the limit allows logs in and, with every rule armed, is still there
        and pinged at least twice when the hold ends."""
        m = bench("maxconn")["maxconn"]
        assert m["nofile"] == 256, m
        assert m["logged_in"] == m["attempted"] > 200, m
        assert m["held"] == m["answering"] == m["logged_in"], m
        assert m["lost"] == 0 and m["codes"] == {}, m
        assert m["server_alive"], m


class TestDebugLoad:
    """Issue 14's bench (python -m bench debug), CI-sized: it runs, and every request is whole."""

    def test_every_phase_measures_and_every_debug_request_answers(self, tmp_path):
        """200 users, one round: each phase timed its says; the page's and the tree's requests
        came back as whole JSON (the poller parses them) with their sizes recorded."""
        out = tmp_path / "debug.json"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench",
                "debug",
                "--users",
                "200",
                "--rounds",
                "1",
                "--seconds",
                "1",
                "--warmup",
                "0.5",
                "--json",
                str(out),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=55,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        r = json.loads(out.read_text())
        assert r["users"] == 200 and r["server_alive"]
        assert set(r["phases"]) == {"quiet", "control", "page", "tree"}
        assert all(p["says"] > 5 for p in r["phases"].values())
        tree = r["phases"]["tree"]["requests"]["/debug/actors"]
        assert tree["n"] >= 1 and tree["bytes"] > 200 * 100  # every user is in it
        assert r["phases"]["page"]["requests"]["/debug/summary"]["n"] >= 1
