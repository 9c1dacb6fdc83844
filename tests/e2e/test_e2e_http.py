"""docs/operations.md "HTTP endpoints", "Running" and shutdown, against the real server process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from hubbub.http import App, is_loopback

from ..support.e2e import ROOT, Client, Server, walk

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server():
    with Server() as srv:
        yield srv


class TestEndpoints:
    def test_index_is_the_web_client(self, server):
        """GET / → an HTML page that speaks the protocol."""
        status, headers, body = server.http("/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert b"<html" in body.lower() and b"hello" in body and b"/ws" in body

    def test_healthz(self, server):
        """GET /healthz → 200 JSON with status ok."""
        assert server.json("/healthz")["status"] == "ok"

    def test_metrics(self, server):
        """GET /metrics → Prometheus text with users by state, rooms and pending timers."""
        with Client(server) as c:
            c.login("metric-user", "m-room")
            status, headers, body = server.http("/metrics")
        text = body.decode()
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert 'hubbub_users{state="InChat"} 1.0' in text
        assert "hubbub_rooms 1.0" in text and "hubbub_scheduler_pending_timers" in text

    def test_debug_page(self, server):
        """GET /debug → an HTML page that polls /debug/actors."""
        status, headers, body = server.http("/debug")
        assert status == 200 and b"/debug/actors" in body

    def test_ws_without_upgrade(self, server):
        """GET /ws as plain HTTP → 426, not a stack trace."""
        assert server.http("/ws")[0] == 426

    def test_unknown_path_and_method(self, server):
        """Unknown path → 404; known path, wrong method → 405."""
        assert server.http("/nope")[0] == 404
        assert server.http("/admin/kick")[0] == 405

    @pytest.mark.parametrize("body", [b"not json", b'{"reason": "x"}', b'{"nick": 5}', b"[]"])
    def test_kick_bad_body(self, server, body):
        """/admin/kick with a malformed body → 400."""
        assert server.http("/admin/kick", "POST", body)[0] == 400


class TestActorTree:
    """docs/operations.md "/debug and /debug/actors"."""

    def test_shape(self, server):
        """One root; every node has kind/id/mailbox/children; one scheduler with pending; rooms and users carry their fields."""
        with Client(server) as a, Client(server) as b, Client(server) as c:
            a.login("tree-a", "tree-room")
            b.login("tree-b")
            c.hello()
            root = server.actors()
            nodes = list(walk(root))
            for n in nodes:
                assert isinstance(n["kind"], str) and isinstance(n["id"], str)
                assert isinstance(n["mailbox"], int) and isinstance(n["children"], list)
            ids = [n["id"] for n in nodes]
            assert len(ids) == len(set(ids)), "every actor exactly once"
            scheds = [n for n in nodes if n["kind"] == "SchedulerActor"]
            assert (
                len(scheds) == 1
                and isinstance(scheds[0]["pending"], int)
                and scheds[0]["pending"] >= 9
            )
            room = [n for n in nodes if n["kind"] == "RoomActor"]
            assert [(r["room"], r["members"]) for r in room] == [("tree-room", 1)]
            users = {n["id"]: n for n in nodes if n["kind"] == "UserActor"}
            ua, uc = users[a.session], users[c.session]
            assert (ua["state"], ua["nick"], ua["rooms"]) == ("InChat", "tree-a", ["tree-room"])
            assert (uc["state"], uc["nick"]) == ("Connected", None)
            assert {t["name"] for t in ua["timers"]} == {"ping", "pong", "session"}
            assert all(isinstance(t["due_in"], float) and t["due_in"] > 0 for t in ua["timers"])

    def test_states_move(self, server):
        """A user shows Undefined, then Connected, then InChat."""
        with Client(server) as c:

            def state():
                return [u["state"] for u in server.users()]

            server.wait_for(lambda: state() == ["Undefined"], what="Undefined")
            c.hello()
            assert state() == ["Connected"]
            c.send({"type": "profile", "nick": "mover"})
            c.expect("profile_ok")
            assert state() == ["InChat"]


class TestAccess:
    """/debug* and /admin/*: a bearer token, or loopback only."""

    def test_token_required_when_set(self):
        """With --admin-token, no or wrong token → 401; the right one → 200."""
        with Server("--admin-token", "s3cret") as srv:
            for path in ("/debug/actors", "/debug"):
                assert srv.http(path)[0] == 401
                assert srv.http(path, headers={"Authorization": "Bearer nope"})[0] == 401
                assert srv.http(path, headers={"Authorization": "Bearer s3cret"})[0] == 200
            assert srv.http("/admin/kick", "POST", {"nick": "x"})[0] == 401
            assert (
                srv.http(
                    "/admin/kick", "POST", {"nick": "x"}, headers={"Authorization": "Bearer s3cret"}
                )[0]
                == 404
            )

    def test_loopback_only_without_token(self):
        """Without a token, a non-loopback client gets 403 (the WSGI edge, called directly)."""
        app = App(system=None, config=type("C", (), {"admin_token": None})(), telemetry=None)
        seen = []
        body = app(
            {"PATH_INFO": "/debug/actors", "REQUEST_METHOD": "GET", "REMOTE_ADDR": "203.0.113.9"},
            lambda status, headers: seen.append(status),
        )
        assert seen == ["403 Forbidden"] and b"loopback" in b"".join(body)
        assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("10.0.0.1")


class TestRunning:
    """docs/operations.md "Running": config errors, --port 0, shutdown."""

    def test_invalid_values_exit_nonzero_with_a_message(self):
        """A bad flag value exits 2 with one clear line on stderr, no traceback."""
        for args in (["--hello-timeout", "-1"], ["--port", "abc"], ["--workers", "2"], ["--bogus"]):
            proc = subprocess.run(
                [sys.executable, "server.py", *args],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=20,
            )
            assert proc.returncode == 2, args
            assert proc.stderr.startswith("hubbub: error:") and "Traceback" not in proc.stderr

    def test_env_and_config_file(self, tmp_path):
        """HUBBUB_* env vars and a --config TOML file set options (seen in welcome.timeouts)."""
        cfg = tmp_path / "hubbub.toml"
        cfg.write_text("ping-interval = 7\nprofile_timeout = 9.5\n")
        with (
            Server("--config", str(cfg), env={"HUBBUB_HELLO_TIMEOUT": "3"}) as srv,
            Client(srv) as c,
        ):
            t = c.hello()["timeouts"]
            assert (t["hello"], t["ping"], t["profile"]) == (3, 7, 9.5)

    def test_help(self):
        """--help prints the options and exits 0."""
        proc = subprocess.run(
            [sys.executable, "server.py", "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert proc.returncode == 0 and "--hello-timeout" in proc.stdout

    @pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
    def test_shutdown(self, sig):
        """SIGTERM/SIGINT: every client gets bye shutdown + 1001; exit 0 within 5 s."""
        srv = Server()
        clients = [Client(srv) for _ in range(3)]
        clients[0].login("s0", "room")
        clients[1].hello()
        start = time.monotonic()
        srv.proc.send_signal(sig)
        for c in clients:
            code, reason, frames = c.closed()
            assert (code, reason) == (1001, "shutdown") and frames[-1] == {
                "type": "bye",
                "reason": "shutdown",
            }
        assert srv.stop(timeout=5) == 0 and time.monotonic() - start < 5
        assert "Traceback" not in srv.stderr


class TestLogs:
    def test_connect_and_disconnect_lines(self):
        """One line per connect and disconnect, with session, nick, reason and duration (json)."""
        srv = Server("--log-format", "json")
        with Client(srv) as c:
            c.login("logged")
            c.send({"type": "bye"})
            c.closed()
        srv.stop()
        lines = [json.loads(line) for line in srv.stderr.splitlines() if line.startswith("{")]
        events = [e for e in lines if e.get("event") in ("connect", "disconnect")]
        assert [e["event"] for e in events] == ["connect", "disconnect"]
        assert events[1]["nick"] == "logged" and events[1]["reason"] == "bye"
        assert events[1]["session"] == c.session and events[1]["duration"] >= 0
