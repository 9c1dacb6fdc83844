"""The HTTP edge: routes, the admin/debug access rule, and the hand-over of a chat socket.

An upgraded connection is handed to ``ActorSystem.spawn_user``, which sets the
transport's callbacks; the handler greenlet then returns (hubbub/transport.py).
"""

from __future__ import annotations

import base64
import functools
import gc
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any

import pykka
from greenlet import greenlet

from actors.clock import Clock, MonotonicClock

from .inspect import Inspector
from .telemetry import CONTENT_TYPE

__all__ = ["App"]

log = logging.getLogger("hubbub.http")

StartResponse = Callable[..., Any]
Route = Callable[[dict[str, Any]], tuple[Any, ...]]  # (status, type, body[, headers])

_STATUS = {
    200: "200 OK",
    400: "400 Bad Request",
    401: "401 Unauthorized",
    403: "403 Forbidden",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    408: "408 Request Timeout",
    413: "413 Payload Too Large",
    415: "415 Unsupported Media Type",
    426: "426 Upgrade Required",
    429: "429 Too Many Requests",
    503: "503 Service Unavailable",
}

# On every response (issue 15 "HTTP edges"): no MIME sniffing of JSON into HTML, no
# framing (clickjacking the debug page or the chat), no URL leaking to other sites.
# Responses that are not pages get a policy that allows nothing at all.
SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
]
_NOTHING = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)


def page_policy(html: bytes) -> str:
    """The Content-Security-Policy of a shipped page: its inline scripts by hash (nothing
    else runs: an injected script has another hash), the WebSocket and fetches to this
    origin only, the data: favicon.  Styles may be inline (the client sets ``style``
    attributes for avatar colours; CSS cannot run code)."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s).digest()).decode()}'"
        for s in _SCRIPT.findall(html)
    )
    return (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
        "img-src data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    )


def _static(name: str) -> bytes:
    return resources.files("hubbub").joinpath("static", name).read_bytes()


@functools.lru_cache(maxsize=4096)
def is_loopback(addr: str | None) -> bool:
    # Asked of every accepted socket (the gate, the admin reserve, the connection rate):
    # ``ipaddress`` parses the text each time, and a node sees few distinct addresses
    # that matter (a proxy's, the machine's own), so the answers are kept.
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
    return {
        "greenlets": greenlets,
        "fds": fds,
        "rss_kb": rss_pages * os.sysconf("SC_PAGE_SIZE") // 1024,
    }


class App:
    """The WSGI application: one instance per node."""

    clock: Clock = MonotonicClock()
    gate: Any = None  #: the node's AcceptGate, set by server.py, shown in /debug/stats

    def __init__(self, system: Any, config: Any, telemetry: Any) -> None:
        # Imported here: hubbub.admin builds on hubbub.admission, which imports this module.
        from .admin import AdminHosts, FailureThrottle

        self.system = system
        self.config = config
        self.telemetry = telemetry
        self.pages = {"/": _static("index.html"), "/debug": _static("debug.html")}
        # Keyed by the page's bytes object: respond() looks it up by the body it sends.
        self.policies = {body: page_policy(body) for body in self.pages.values()}
        self.admin_hosts = AdminHosts(
            getattr(config, "host", None), getattr(config, "admin_hosts", ())
        )
        self.throttle = FailureThrottle()
        # /debug's queries cost a bounded amount per request (hubbub/inspect.py); /metrics
        # reads the same incremental counts instead of walking every actor.
        self.inspector = Inspector(system)
        if telemetry is not None:
            telemetry.stats = self.inspector.stats
        self.routes: dict[tuple[str, str], Route] = {
            ("GET", "/healthz"): self.healthz,
            ("GET", "/metrics"): self.metrics,
            ("GET", "/rooms"): self.inspector.room_names,
            ("GET", "/debug/actors"): self.guarded(self.inspector.full_tree),
            **{key: self.guarded(route) for key, route in self.inspector.routes().items()},
            ("GET", "/debug"): self.debug_page,
            ("GET", "/debug/stats"): self.guarded(self.debug_stats),
            ("GET", "/"): lambda env: self.page("/"),
            ("POST", "/admin/kick"): self.guarded(self.admin_kick),
        }
        self.prefix_routes: list[
            tuple[str, str, Callable[[dict[str, Any]], tuple[int, str, Any]]]
        ] = [
            ("GET", "/debug/actors/", self.guarded(self.inspector.actor_route)),
        ]

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", "/"), environ.get("REQUEST_METHOD", "GET")
        if path == "/ws":
            conn = environ.get("hubbub.connection")
            if conn is None:
                return self.respond(
                    start_response, 426, "text/plain", b"WebSocket upgrade required\n"
                )
            self.serve_websocket(conn)
            return []
        route = self.routes.get((method, path)) or next(
            (r for m, p, r in self.prefix_routes if m == method and path.startswith(p)), None
        )
        if route is None:
            known = any(p == path for _m, p in self.routes) or any(
                path.startswith(p) for _m, p, _r in self.prefix_routes
            )
            code = 405 if known else 404
            return self.respond(
                start_response,
                code,
                "application/json",
                json.dumps({"error": _STATUS[code][4:]}).encode(),
            )
        status, ctype, body, *extra = route(environ)
        return self.respond(start_response, status, ctype, body, *extra)

    def respond(
        self,
        start_response: StartResponse,
        status: int,
        ctype: str,
        body: Any,
        headers: list[tuple[str, str]] | None = None,
    ) -> Iterable[bytes]:
        stream = not isinstance(body, bytes)
        html = not stream and ctype.startswith("text/html")
        head = [
            ("Content-Type", ctype),
            ("Cache-Control", "no-store"),
            *SECURITY_HEADERS,
            ("Content-Security-Policy", self.policies.get(body, _NOTHING) if html else _NOTHING),
            *(headers or []),
        ]
        if stream:
            # A stream of chunks (the full /debug/actors tree): written as it is made,
            # chunked, so the walk can yield to the chat between slices.
            start_response(_STATUS[status], head)
            return body
        head.insert(1, ("Content-Length", str(len(body))))
        start_response(_STATUS[status], head)
        return [body]

    # --- the chat socket ------------------------------------------------------------

    def serve_websocket(self, conn: Any) -> None:
        """A new chat socket: its user actor gets the transport's callbacks; nothing waits
        here (the connection lives on in watchers, hubbub/transport.py)."""
        self.system.spawn_user(conn)

    # --- plain HTTP -----------------------------------------------------------------

    def page(self, path: str) -> tuple[int, str, bytes]:
        return 200, "text/html; charset=utf-8", self.pages[path]

    def healthz(self, environ: dict[str, Any]) -> tuple[int, str, bytes]:
        # O(1): counts kept as they change (a probe every second must not walk 20,000
        # actors, which is what ActorSystem.stats() does for /debug/stats).
        system = self.system
        body = {
            "status": "ok",
            "users": system.counters.timelines.live(),
            "rooms": len(system.directory.rooms),
            "pending_timers": len(system.scheduler.timers),
            "protocol": 1,
        }
        cluster = getattr(self.system, "cluster", None)
        if cluster is not None:
            # Still 200: a node without Redis keeps serving its own users (docs/cluster.md).
            body["cluster"] = cluster.health()
            if not cluster.up:
                body["status"] = "degraded"
        return 200, "application/json", json.dumps(body).encode()

    def metrics(self, environ: dict[str, Any]) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE, self.telemetry.render()

    def debug_stats(self, environ: dict[str, Any]) -> tuple[int, str, bytes]:
        """Counts for leak hunting: the tree's totals plus the process's greenlets, fds and RSS."""
        body = dict(self.system.stats(), **process_stats())
        if self.gate is not None:  # the accept gate's counts (hubbub/gate.py)
            body["gate"] = dict(
                self.gate.counts,
                open=self.gate.open,
                max_sockets=self.gate.max_sockets,
                admin_reserve=self.gate.admin_reserve,
                before_chat=self.gate.waiting(),
                shedding=self.gate.shedding,
            )
        return 200, "application/json", json.dumps(body).encode()

    def admin_kick(self, environ: dict[str, Any]) -> tuple[int, str, bytes]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            if length > 65536:
                return 413, "application/json", b'{"error": "body too large"}'
            try:
                raw = environ["wsgi.input"].read(length)
            except OSError:
                # The body stopped short: the client left, or the gate's --body-timeout
                # shut the socket for reading (then the client is still there to read 408).
                ticket = environ.get("hubbub.gate_ticket")
                if ticket is not None and ticket.expired:
                    return 408, "application/json", b'{"error": "request body timed out"}'
                return 400, "application/json", b'{"error": "request body incomplete"}'
            body = json.loads(raw or b"null")
            nick, reason = body["nick"], body.get("reason", "")
            if not isinstance(nick, str) or not isinstance(reason, str):
                raise TypeError
            reason.encode("utf-8")  # a lone surrogate (UnicodeEncodeError is a ValueError)
        except (ValueError, KeyError, TypeError):
            return (
                400,
                "application/json",
                b'{"error": "expected {\\"nick\\": str, \\"reason\\": str}"}',
            )
        try:
            kicked = self.system.kick(nick, reason[:200])
        except pykka.Timeout:
            return 503, "application/json", b'{"error": "directory did not answer"}'
        if not kicked:
            return (
                404,
                "application/json",
                json.dumps({"kicked": False, "error": "no such user"}).encode(),
            )
        return 200, "application/json", b'{"kicked": true}'

    # --- /admin and /debug access rule (docs/operations.md) --------------------------------

    def debug_page(self, environ: dict[str, Any]) -> tuple[Any, ...]:
        status, ctype, body, *extra = self.guarded(lambda env: self.page("/debug"))(environ)
        if status == 401:
            # The contract's 401 stands, but its body is the page itself: it holds no
            # data, and it asks for the token and sends it with every poll.
            return 401, "text/html; charset=utf-8", self.pages["/debug"]
        return (status, ctype, body, *extra)

    def guarded(self, route: Route) -> Route:
        """``route`` behind the admin rules: the contract's token-or-loopback, plus
        (hubbub/admin.py) the token throttle, and without a token the Host check and,
        for state-changing methods, a same-origin JSON request."""
        from .admin import is_json  # see __init__

        def check(environ: dict[str, Any]) -> tuple[Any, ...]:
            ip = environ.get("REMOTE_ADDR") or ""
            token = self.config.admin_token
            if token:
                return self._token_check(environ, ip, token) or route(environ)
            if not is_loopback(ip):
                return (
                    403,
                    "application/json",
                    b'{"error": "loopback clients only (no --admin-token set)"}',
                )
            host = environ.get("HTTP_HOST")
            if not self.admin_hosts.host_allowed(host):
                # DNS rebinding: a page whose name now resolves to us, read as same-origin.
                log.info(
                    "admin request from %s refused: Host %r is not ours", ip, (host or "")[:100]
                )
                return 403, "application/json", b'{"error": "Host not allowed (see --admin-hosts)"}'
            if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
                if not self.admin_hosts.same_origin(environ.get("HTTP_ORIGIN"), host):
                    return 403, "application/json", b'{"error": "cross-origin request refused"}'
                if not is_json(environ.get("CONTENT_TYPE")):
                    # A form or text/plain POST needs no CORS preflight: a web page can send
                    # one from the operator's browser.  JSON cannot be sent that way.
                    return (
                        415,
                        "application/json",
                        b'{"error": "Content-Type must be application/json"}',
                    )
            return route(environ)

        return check

    def _token_check(self, environ: dict[str, Any], ip: str, token: str) -> tuple[Any, ...] | None:
        now = self.clock.monotonic()
        wait = self.throttle.retry_after(ip, now)
        if wait is not None:
            return (
                429,
                "application/json",
                b'{"error": "too many wrong tokens, retry later"}',
                [("Retry-After", str(max(1, int(wait + 0.999))))],
            )
        given = environ.get("HTTP_AUTHORIZATION")
        if given is not None and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return None
        if given is not None and self.throttle.failed(ip, now):
            # Only tries that carry a token count (a browser's first visit to /debug has
            # none); logged once per IP and window, so a guesser cannot flood the log.
            log.warning(
                "wrong admin token from %s (further failures from it in the next %gs "
                "are not logged; over %d it gets 429)",
                ip,
                self.throttle.window,
                self.throttle.limit,
            )
        return 401, "application/json", b'{"error": "bearer token required"}'
