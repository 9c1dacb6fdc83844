"""hubbub.admin and App.guarded: the admin rules beyond token-or-loopback (issue 15 item 5).

The rules are pure (AdminHosts, FailureThrottle, on a fake clock); the App is then called
as a WSGI application in-process, with a recording start_response, no server and no mocks.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from hubbub.admin import AdminHosts, FailureThrottle, is_json
from hubbub.config import Config
from hubbub.http import App

from ..support.fakes import FakeClock

pytestmark = pytest.mark.timeout(10)


class TestHostAllowed:
    """DNS rebinding: without a token, only our own names in Host."""

    @pytest.mark.parametrize(
        "host",
        [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "app.localhost:8080",
            "127.1.2.3",
        ],
    )
    def test_loopback_names(self, host):
        """Loopback addresses, localhost and names under .localhost are ours."""
        assert AdminHosts("127.0.0.1").host_allowed(host)

    @pytest.mark.parametrize(
        "host",
        [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1:8080",
            "",
            "a b",
            "[::1",
        ],
    )
    def test_other_names(self, host):
        """Any other name, or a malformed Host, is not."""
        assert not AdminHosts("127.0.0.1").host_allowed(host)

    def test_no_host_header_is_not_a_browser(self):
        """HTTP/1.0 scripts send no Host; browsers always do."""
        assert AdminHosts("127.0.0.1").host_allowed(None)

    def test_bound_host_and_listed_names(self):
        """The --host address and --admin-hosts names are ours; a wildcard bind adds nothing."""
        hosts = AdminHosts("192.0.2.7", ("chat.example.com",))
        assert hosts.host_allowed("192.0.2.7:8080") and hosts.host_allowed("Chat.Example.com")
        assert not AdminHosts("0.0.0.0").host_allowed("0.0.0.0:8080")
        assert not AdminHosts("::").host_allowed("[::]:8080")


class TestSameOrigin:
    """A state-changing request's Origin must be the page it is addressed to."""

    def test_absent_origin(self):
        """No Origin: not a browser's cross-site request."""
        assert AdminHosts.same_origin(None, "127.0.0.1:8080")

    def test_same_scheme_host_port(self):
        """http://127.0.0.1:8080 posting to Host 127.0.0.1:8080 is same-origin."""
        assert AdminHosts.same_origin("http://127.0.0.1:8080", "127.0.0.1:8080")
        assert AdminHosts.same_origin("http://localhost", "localhost")

    @pytest.mark.parametrize(
        "origin",
        [
            "http://127.0.0.1:9999",
            "http://evil.example",
            "null",
            "https://localhost",
            "file://",
            "chrome-extension://abc",
        ],
    )
    def test_anything_else(self, origin):
        """Another port, host or scheme's default port, an opaque origin: refused."""
        assert not AdminHosts.same_origin(origin, "localhost:8080")

    def test_is_json(self):
        """application/json with parameters, any case; nothing else."""
        assert is_json("application/json") and is_json("Application/JSON; charset=utf-8")
        assert not is_json("text/plain") and not is_json(None) and not is_json("application/jsonx")


class TestFailureThrottle:
    """Wrong tokens per IP: limit per window, then refused until the window ends."""

    def test_over_the_limit_then_wait(self):
        """The limit-th failure blocks; Retry-After counts down to the window's end."""
        t, clock = FailureThrottle(limit=3, window=60), FakeClock()
        for _ in range(3):
            assert t.retry_after("198.51.100.1", clock.monotonic()) is None
            t.failed("198.51.100.1", clock.monotonic())
        assert t.retry_after("198.51.100.1", clock.monotonic()) == 60
        clock.jump(59)
        assert t.retry_after("198.51.100.1", clock.monotonic()) == 1
        clock.jump(1)
        assert t.retry_after("198.51.100.1", clock.monotonic()) is None

    def test_logged_once_per_window(self):
        """failed() is True for the first failure of a window only."""
        t, clock = FailureThrottle(limit=3, window=60), FakeClock()
        assert [t.failed("a", clock.monotonic()) for _ in range(5)] == [
            True,
            False,
            False,
            False,
            False,
        ]
        clock.jump(60)
        assert t.failed("a", clock.monotonic())

    def test_ips_are_separate_and_old_entries_swept(self):
        """One IP's failures do not block another; entries older than a window are forgotten."""
        t, clock = FailureThrottle(limit=1, window=10), FakeClock()
        t.failed("a", clock.monotonic())
        assert (
            t.retry_after("a", clock.monotonic()) and t.retry_after("b", clock.monotonic()) is None
        )
        clock.jump(10)
        t.failed("b", clock.monotonic())
        assert set(t.failures) == {"b"}


class Kicker:
    """A system whose kick records the nick (the only thing /admin/kick asks of it)."""

    def __init__(self) -> None:
        self.kicked: list[str] = []

    def kick(self, nick: str, reason: str) -> bool:
        self.kicked.append(nick)
        return True

    def describe(self) -> dict[str, Any]:
        return {"actors": {"kind": "NodeActor", "id": "n", "mailbox": 0, "children": []}}


def call(
    app: App, path: str, method: str = "GET", body: bytes = b"", **headers: str
) -> tuple[int, dict, bytes]:
    """One request through the WSGI app: (status, headers, body)."""
    environ: dict[str, Any] = {
        "PATH_INFO": path,
        "REQUEST_METHOD": method,
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
    }
    for name, value in headers.items():
        key = name.upper()
        environ[key if key in ("CONTENT_TYPE", "REMOTE_ADDR") else f"HTTP_{key}"] = value
    seen: list[Any] = []
    out = b"".join(app(environ, lambda status, hdrs: seen.extend([status, dict(hdrs)])))
    return int(seen[0][:3]), seen[1], out


KICK = json.dumps({"nick": "bob"}).encode()


def kick(app: App, **headers: str) -> int:
    """POST /admin/kick as a same-origin JSON request would: the status."""
    return call(app, "/admin/kick", "POST", KICK, content_type="application/json", **headers)[0]


class TestGuardedWithoutToken:
    """No --admin-token: loopback, our Host, and for POST a same-origin JSON request."""

    @pytest.fixture
    def app(self):
        return App(system=Kicker(), config=Config(), telemetry=None)

    def test_json_post_from_a_script_kicks(self, app):
        """curl-like: JSON, no Origin → 200 kicked."""
        assert kick(app, host="127.0.0.1:8080") == 200
        assert app.system.kicked == ["bob"]

    def test_text_plain_post_is_415(self, app):
        """A form or text/plain body (what a web page can send without preflight) → 415, no kick."""
        for ctype in (
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ):
            assert (
                call(app, "/admin/kick", "POST", KICK, host="127.0.0.1:8080", content_type=ctype)[0]
                == 415
            )
        assert app.system.kicked == []

    def test_cross_origin_post_is_403(self, app):
        """Origin of another site (or another port) → 403, even as JSON."""
        for origin in ("http://evil.example", "http://127.0.0.1:3000", "null"):
            assert (
                call(
                    app,
                    "/admin/kick",
                    "POST",
                    KICK,
                    host="127.0.0.1:8080",
                    origin=origin,
                    content_type="application/json",
                )[0]
                == 403
            )
        assert app.system.kicked == []

    def test_same_origin_post_is_allowed(self, app):
        """The debug page's own origin may post."""
        assert kick(app, host="127.0.0.1:8080", origin="http://127.0.0.1:8080") == 200

    def test_rebound_host_is_403(self, app):
        """Host: evil.example (DNS rebinding) → 403 on every admin route, GET included."""
        for path in ("/debug/actors", "/debug", "/debug/stats"):
            status, _h, body = call(app, path, host="evil.example:8080")
            assert status == 403 and b"Host" in body
        assert kick(app, host="evil.example:8080") == 403

    def test_open_routes_ignore_host(self, app):
        """/healthz answers whatever the Host (it is public)."""
        from types import SimpleNamespace as NS

        app.system = NS(  # what /healthz reads: counts kept as they change
            counters=NS(timelines=NS(live=lambda: 0)),
            directory=NS(rooms={}),
            scheduler=NS(timers=[]),
        )
        assert call(app, "/healthz", host="evil.example")[0] == 200

    def test_non_loopback_is_still_403(self, app):
        """The contract's rule stands: without a token, non-loopback → 403."""
        assert call(app, "/debug/actors", remote_addr="203.0.113.9")[0] == 403


class TestGuardedWithToken:
    """--admin-token: 401 for a wrong one (the contract), throttled per IP with 429."""

    @pytest.fixture
    def app(self):
        app = App(system=Kicker(), config=Config(admin_token="s3cret"), telemetry=None)
        app.clock = FakeClock()
        return app

    def test_right_token_with_any_content_type(self, app):
        """With a token, the bearer is the check: a script's form-typed JSON still works."""
        assert (
            call(
                app,
                "/admin/kick",
                "POST",
                KICK,
                authorization="Bearer s3cret",
                content_type="application/x-www-form-urlencoded",
            )[0]
            == 200
        )

    def test_guessing_is_throttled(self, app, caplog):
        """After 10 wrong tokens in a minute → 429 with Retry-After, even for the right one; one log line."""
        caplog.set_level("INFO", logger="hubbub.http")
        statuses = [
            call(app, "/debug/actors", authorization=f"Bearer guess{i}")[0] for i in range(12)
        ]
        assert statuses == [401] * 10 + [429] * 2
        status, headers, _ = call(app, "/debug/actors", authorization="Bearer s3cret")
        assert status == 429 and headers["Retry-After"] == "60"
        assert sum("wrong admin token" in r.message for r in caplog.records) == 1
        app.clock.jump(60)
        assert kick(app, authorization="Bearer s3cret") == 200

    def test_no_token_at_all_is_not_counted(self, app):
        """A visit without Authorization (the debug page before the token is typed) is 401, never 429."""
        assert {call(app, "/debug/actors")[0] for _ in range(20)} == {401}


class TestSecurityHeaders:
    """Every response: nosniff, DENY, no-referrer and a CSP; pages run only their own scripts."""

    def test_on_every_response(self):
        """Pages, JSON, errors: all carry the headers."""
        app = App(system=Kicker(), config=Config(), telemetry=None)
        for path in ("/", "/debug", "/nope", "/ws"):
            _s, headers, _b = call(app, path, host="127.0.0.1")
            assert (
                headers["X-Content-Type-Options"] == "nosniff"
                and headers["X-Frame-Options"] == "DENY"
            )
            assert headers["Referrer-Policy"] == "no-referrer"
            assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]

    def test_page_policy_hashes_the_inline_scripts(self):
        """The page CSP allows exactly the page's inline scripts, by sha256."""
        app = App(system=Kicker(), config=Config(), telemetry=None)
        _s, headers, body = call(app, "/", host="127.0.0.1")
        policy = headers["Content-Security-Policy"]
        assert (
            "script-src 'sha256-" in policy
            and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
        )
        assert "connect-src 'self'" in policy and b"<script>" in body
