"""Who may open a WebSocket, against the real server: the Origin check and the per-IP cap.

The rules themselves (every origin case, the connection-rate bucket on a fake clock,
every way a slot is given back) are unit-tested in test_admission.py; here each one
is shown end to end: the HTTP status before the 101, no user created for a refusal,
and chat working for an admitted client. Malformed upgrades are test_e2e_framing.py's.
"""

from __future__ import annotations

import json

import pytest

from ..support.e2e import Client, Server, raw_upgrade

pytestmark = pytest.mark.e2e


def status_of(server: Server, headers: dict[str, str] | None = None) -> int:
    """The HTTP status a raw upgrade with these headers gets (101 or a refusal)."""
    sock, response = raw_upgrade(server, headers=headers)
    sock.close()
    return int(response.split(b" ", 2)[1])


def chat_works(client: Client, nick: str) -> None:
    client.login(nick, "lobby")
    assert client.say("lobby", "hi")["seq"] >= 1


@pytest.fixture(scope="module")
def server():
    with Server() as srv:
        yield srv


class TestDefaultOrigins:
    """docs/operations.md --allowed-origins, default "same host + loopback"; an upgrade with another Origin gets HTTP 403."""

    def test_forged_origin_is_403_and_creates_no_user(self, server):
        """Origin https://evil.example → 403 before the 101, and no UserActor appears."""
        before = {u["id"] for u in server.users()}
        sock, response = raw_upgrade(server, headers={"Origin": "https://evil.example"})
        sock.close()
        assert response.startswith(b"HTTP/1.1 403")
        assert {u["id"] for u in server.users()} <= before

    def test_same_host_origin_is_101_and_chat_works(self, server):
        """A page from the server's own host:port may open the chat socket and chat."""
        with Client(server, origin=f"http://{server.host}:{server.port}") as c:
            chat_works(c, "same-host")

    def test_same_host_by_name(self, server):
        """Host chat.example.com:PORT: that origin (either scheme) → 101, another port → 403."""
        host = {"Host": f"chat.example.com:{server.port}"}
        assert (
            status_of(server, host | {"Origin": f"https://chat.example.com:{server.port}"}) == 101
        )
        assert status_of(server, host | {"Origin": f"http://chat.example.com:{server.port}"}) == 101
        assert status_of(server, host | {"Origin": "https://chat.example.com"}) == 403

    def test_loopback_origin_any_port(self, server):
        """A page served from localhost on another port (a dev server) is allowed."""
        assert status_of(server, {"Origin": "http://localhost:3000"}) == 101

    def test_no_origin_is_allowed(self, server):
        """No Origin header (a script, not a browser) → allowed, and chat works."""
        with Client(server) as c:
            chat_works(c, "no-origin")

    @pytest.mark.parametrize("origin", ["null", "evil.example", "https://127.0.0.1:1/path", ""])
    def test_malformed_origin_is_403(self, server, origin):
        """A malformed Origin value (or the opaque "null") → 403."""
        assert status_of(server, {"Origin": origin}) == 403


class TestListedOrigins:
    """docs/operations.md --allowed-origins: comma-separated origins or `*`."""

    def test_list_allows_exactly_those(self):
        """--allowed-origins https://chat.example.com: that origin → 101; the server's own → 403."""
        with Server("--allowed-origins", "https://chat.example.com") as server:
            assert status_of(server, {"Origin": "https://chat.example.com"}) == 101
            assert status_of(server, {"Origin": f"http://127.0.0.1:{server.port}"}) == 403
            assert status_of(server, {"Origin": "http://chat.example.com"}) == 403
            with Client(server, origin="https://chat.example.com") as c:
                chat_works(c, "listed")

    def test_star_allows_any(self):
        """--allowed-origins '*': even https://evil.example → 101."""
        with Server("--allowed-origins", "*") as server:
            with Client(server, origin="https://evil.example") as c:
                chat_works(c, "starred")


class TestMaxConnections:
    """docs/operations.md --max-connections: open connections from one client IP; over it the upgrade gets HTTP 503."""

    def test_cap_and_release(self):
        """With --max-connections 3 the 4th gets 503 Retry-After; once one closes, one more fits."""
        with Server("--max-connections", "3") as server:
            clients = [Client(server) for _ in range(3)]
            for n, c in enumerate(clients):
                c.login(f"cap{n}")
            sock, response = raw_upgrade(server)
            sock.close()
            assert response.startswith(b"HTTP/1.1 503") and b"\r\nRetry-After: 1\r\n" in response
            assert len(server.users()) == 3

            clients.pop().close()
            server.wait_for(lambda: len(server.users()) == 2, what="the server saw the close")

            def upgraded():
                # The slot is given back when the handler ends, just after the actor stopped.
                sock, response = raw_upgrade(server)
                if response.startswith(b"HTTP/1.1 101"):
                    return sock
                sock.close()
                return None

            third = server.wait_for(upgraded, what="a slot to free up")
            assert status_of(server) == 503  # three open again: the cap still holds
            third.close()
            for c in clients:
                c.close()

    def test_refused_upgrade_body_says_why(self):
        """The 503 body names the limit, for whoever reads the browser's network log."""
        with Server("--max-connections", "1") as server, Client(server) as c:
            c.hello()
            sock, response = raw_upgrade(server)
            body = response.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in response else b""
            body += sock.recv(4096)
            sock.close()
            assert b"too many open connections" in body
            assert (
                json.loads(server.http("/healthz")[2])["status"] == "ok"
            )  # plain HTTP is not capped
