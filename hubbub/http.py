"""The HTTP edge: routes, the admin/debug access rule, and the per-connection reader.

Each WebSocket connection is served by the WSGI handler's greenlet, which is
also the connection's only reader: it turns frames into ``ClientFrame``
messages for the connection's UserActor and never decides anything itself.
"""

from __future__ import annotations

import gc
import hmac
import ipaddress
import json
import os
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any

import pykka
from greenlet import greenlet

from actors.base import tell
from actors.core.messages import ClientFrame, ConnectionLost, Overflow, PongFrame

from .telemetry import CONTENT_TYPE

__all__ = ["App"]

StartResponse = Callable[..., Any]

_STATUS = {200: "200 OK", 400: "400 Bad Request", 401: "401 Unauthorized", 403: "403 Forbidden",
           404: "404 Not Found", 405: "405 Method Not Allowed", 413: "413 Payload Too Large",
           426: "426 Upgrade Required", 503: "503 Service Unavailable"}


def _static(name: str) -> bytes:
    return resources.files("hubbub").joinpath("static", name).read_bytes()


def is_loopback(addr: str | None) -> bool:
    try:
        return ipaddress.ip_address((addr or "").split("%")[0]).is_loopback
    except ValueError:
        return False


def process_stats() -> dict[str, int]:
    """Live greenlets (a heap scan: debug only), open file descriptors, resident memory."""
    greenlets = sum(1 for o in gc.get_objects() if isinstance(o, greenlet) and not o.dead)
    fds = len(os.listdir("/proc/self/fd"))
    with open("/proc/self/statm") as f:
        rss_pages = int(f.read().split()[1])
    return {"greenlets": greenlets, "fds": fds, "rss_kb": rss_pages * os.sysconf("SC_PAGE_SIZE") // 1024}


class App:
    """The WSGI application: one instance per node."""

    def __init__(self, system: Any, config: Any, telemetry: Any) -> None:
        self.system = system
        self.config = config
        self.telemetry = telemetry
        self.pages = {"/": _static("index.html"), "/debug": _static("debug.html")}
        self.routes: dict[tuple[str, str], Callable[[dict[str, Any]], tuple[int, str, bytes]]] = {
            ("GET", "/healthz"): self.healthz,
            ("GET", "/metrics"): self.metrics,
            ("GET", "/debug/actors"): self.guarded(self.debug_actors),
            ("GET", "/debug"): self.debug_page,
            ("GET", "/debug/stats"): self.guarded(self.debug_stats),
            ("GET", "/"): lambda env: self.page("/"),
            ("POST", "/admin/kick"): self.guarded(self.admin_kick),
        }

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", "/"), environ.get("REQUEST_METHOD", "GET")
        if path == "/ws":
            conn = environ.get("hubbub.connection")
            if conn is None:
                return self.respond(start_response, 426, "text/plain", b"WebSocket upgrade required\n")
            self.serve_websocket(conn)
            return []
        route = self.routes.get((method, path))
        if route is None:
            known = any(p == path for _m, p in self.routes)
            code = 405 if known else 404
            return self.respond(start_response, code, "application/json",
                                json.dumps({"error": _STATUS[code][4:]}).encode())
        status, ctype, body = route(environ)
        return self.respond(start_response, status, ctype, body)

    @staticmethod
    def respond(start_response: StartResponse, status: int, ctype: str, body: bytes,
                headers: list[tuple[str, str]] | None = None) -> list[bytes]:
        start_response(_STATUS[status], [("Content-Type", ctype), ("Content-Length", str(len(body))),
                                         ("Cache-Control", "no-store"), *(headers or [])])
        return [body]

    # --- the chat socket ------------------------------------------------------------

    def serve_websocket(self, conn: Any) -> None:
        ref = self.system.spawn_user(conn)
        conn.on_pong = lambda: tell(ref, PongFrame())
        conn.on_overflow = lambda: tell(ref, Overflow())
        try:
            while True:
                data = conn.receive()
                # receive() yields after every message: a flooding client cannot
                # starve the others (buffered data never makes recv() block).
                if data is None or not tell(ref, ClientFrame(data)):
                    break
        finally:
            tell(ref, ConnectionLost(conn.close_code))
            # Let the actor finish (leave rooms, last writes) before the handler
            # closes the socket; bounded, the actor never waits on the client.
            ref.actor_stopped.wait(2.0)

    # --- plain HTTP -----------------------------------------------------------------

    def page(self, path: str) -> tuple[int, str, bytes]:
        return 200, "text/html; charset=utf-8", self.pages[path]

    def healthz(self, environ: dict[str, Any]) -> tuple[int, str, bytes]:
        stats = self.system.stats()
        body = {"status": "ok", "users": stats["users"], "rooms": stats["rooms"],
                "pending_timers": stats["pending_timers"], "protocol": 1}
        cluster = getattr(self.system, "cluster", None)
        if cluster is not None:
            # Still 200: a node without Redis keeps serving its own users (docs/cluster.md).
            body["cluster"] = cluster.health()
            if not cluster.up:
                body["status"] = "degraded"
        return 200, "application/json", json.dumps(body).encode()

    def metrics(self, environ: dict[str, Any]) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE, self.telemetry.render()

    def debug_actors(self, environ: dict[str, Any]) -> tuple[int, str, bytes]:
        return 200, "application/json", json.dumps(self.system.describe()).encode()

    def debug_stats(self, environ: dict[str, Any]) -> tuple[int, str, bytes]:
        """Counts for leak hunting: the tree's totals plus the process's greenlets, fds and RSS."""
        body = dict(self.system.stats(), **process_stats())
        return 200, "application/json", json.dumps(body).encode()

    def admin_kick(self, environ: dict[str, Any]) -> tuple[int, str, bytes]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            if length > 65536:
                return 413, "application/json", b'{"error": "body too large"}'
            body = json.loads(environ["wsgi.input"].read(length) or b"null")
            nick, reason = body["nick"], body.get("reason", "")
            if not isinstance(nick, str) or not isinstance(reason, str):
                raise TypeError
            reason.encode("utf-8")  # a lone surrogate (UnicodeEncodeError is a ValueError)
        except (ValueError, KeyError, TypeError):
            return 400, "application/json", b'{"error": "expected {\\"nick\\": str, \\"reason\\": str}"}'
        try:
            kicked = self.system.kick(nick, reason[:200])
        except pykka.Timeout:
            return 503, "application/json", b'{"error": "directory did not answer"}'
        if not kicked:
            return 404, "application/json", json.dumps({"kicked": False, "error": "no such user"}).encode()
        return 200, "application/json", b'{"kicked": true}'

    # --- /admin and /debug access rule (CONTRACT.md) --------------------------------

    def debug_page(self, environ: dict[str, Any]) -> tuple[int, str, bytes]:
        status, ctype, body = self.guarded(lambda env: self.page("/debug"))(environ)
        if status == 401:
            # The contract's 401 stands, but its body is the page itself: it holds no
            # data, and it asks for the token and sends it with every poll.
            return 401, "text/html; charset=utf-8", self.pages["/debug"]
        return status, ctype, body

    def guarded(self, route: Callable[[dict[str, Any]], tuple[int, str, bytes]]
                ) -> Callable[[dict[str, Any]], tuple[int, str, bytes]]:
        def check(environ: dict[str, Any]) -> tuple[int, str, bytes]:
            token = self.config.admin_token
            if token:
                given = environ.get("HTTP_AUTHORIZATION", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                    return 401, "application/json", b'{"error": "bearer token required"}'
            elif not is_loopback(environ.get("REMOTE_ADDR")):
                return 403, "application/json", b'{"error": "loopback clients only (no --admin-token set)"}'
            return route(environ)
        return check
