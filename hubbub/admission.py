"""Who may open a WebSocket: the checks made before the 101 is sent.

``handler_for(config)`` returns the WSGI handler class for a node: the hardened
WebSocket handler with this node's limits and two questions asked of every valid
upgrade request, in this order (CONTRACT.md "Running"):

1. **Origin** (``--allowed-origins``): a browser always sends ``Origin`` on a
   WebSocket upgrade, and the same-origin policy does not apply to WebSockets, so
   without this check any web page could open a chat socket with the visitor's
   cookies (cross-site WebSocket hijacking). Not allowed → ``403``.
2. **Per-IP limits** (``--max-connections`` and a connection rate): one client
   must not be able to take every file descriptor or keep the actor system busy
   creating users. Over a limit → ``503`` with ``Retry-After: 1``. Behind a proxy
   every client has the proxy's address, so ``--max-connections 0`` turns both off.

The rules are pure (``OriginPolicy``, ``ConnectionLimits``: no sockets, time passed
in) so that tests check them in microseconds; ``AdmissionHandler`` is the thin shell
that feeds them the request and holds a slot for as long as the connection lives.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Any

from actors.clock import Clock, MonotonicClock

from .http import is_loopback
from .websocket import HardenedHandler

__all__ = [
    "AdmissionHandler",
    "ConnectionLimits",
    "OriginPolicy",
    "handler_for",
    "parse_origin",
]

# RFC 6454 §4 and §6.1: an origin is scheme, host and port; a missing port means
# the scheme's default, so "https://a.example" and "https://a.example:443" are one.
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# The same grammar hubbub/config.py accepts for --allowed-origins (minus "*"):
# no userinfo, path, query or fragment can appear in a serialised origin.
_HOST = r"(\[[0-9a-f:.]+\]|[^\]\[\s/?#@:]+)(?::(\d{1,5}))?"
_ORIGIN = re.compile(r"([a-z][a-z0-9+.-]*)://" + _HOST)
_HOST_HEADER = re.compile(_HOST)

Origin = tuple[str, str, int | None]  # (scheme, host, port); port None: unknown scheme


def _host_key(host: str) -> str:
    """One spelling per host: IP literals normalised ("[::0:1]" and "[::1]" are one)."""
    bare = host[1:-1] if host.startswith("[") else host
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return bare


def _port(text: str | None, scheme: str | None) -> int | None:
    if text is None:
        return _DEFAULT_PORTS.get(scheme) if scheme else None
    port = int(text)
    if port > 65535:
        raise ValueError(text)
    return port


def parse_origin(value: str) -> Origin | None:
    """``(scheme, host, port)`` of an ``Origin`` header or an --allowed-origins entry,
    default ports filled in; None if malformed (which includes the opaque ``null``)."""
    match = _ORIGIN.fullmatch(value.strip().lower())
    if match is None:
        return None
    scheme, host, port = match.groups()
    try:
        return scheme, _host_key(host), _port(port, scheme)
    except ValueError:
        return None


def _parse_host_header(value: str) -> tuple[str, int | None] | None:
    """``(host, port or None)`` of a ``Host`` header; None if malformed."""
    match = _HOST_HEADER.fullmatch(value.strip().lower())
    if match is None:
        return None
    host, port = match.groups()
    try:
        return _host_key(host), _port(port, None)
    except ValueError:
        return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OriginPolicy:
    """Which ``Origin`` may open a WebSocket (CONTRACT.md ``--allowed-origins``).

    ``allowed`` is ``config.allowed_origins``: None for the default (the request's own
    host, http or https, plus any loopback origin), ``("*",)`` for anyone, or a tuple
    of origins that are then the only ones allowed.
    """

    def __init__(self, allowed: tuple[str, ...] | None) -> None:
        self.anyone = allowed == ("*",)
        self.listed: frozenset[Origin] | None = None
        if allowed is not None and not self.anyone:
            parsed = {o: parse_origin(o) for o in allowed}
            if bad := [o for o, p in parsed.items() if p is None]:
                raise ValueError(f"not an origin: {', '.join(bad)}")
            self.listed = frozenset(p for p in parsed.values() if p is not None)

    def allows(self, origin: str | None, host: str | None) -> bool:
        """Whether an upgrade with this ``Origin`` header (None: absent) and ``Host``
        header may proceed."""
        if origin is None:
            # Hijacking needs a victim's browser, and browsers always send Origin on a
            # WebSocket upgrade (RFC 6455 §4.1 item 8; Fetch). Scripts and native
            # clients send none and carry no one else's cookies.
            return True
        if self.anyone:
            return True
        parsed = parse_origin(origin)
        if parsed is None:
            return False
        if self.listed is not None:
            return parsed in self.listed
        scheme, name, port = parsed
        if scheme not in ("http", "https"):  # pages only; not e.g. extension pages
            return False
        if _is_loopback(name):  # a page served from the user's own machine
            return True
        own = _parse_host_header(host or "")
        if own is None:
            return False
        own_name, own_port = own
        # Either scheme: behind a TLS proxy the page is https while this request
        # arrives as plain http. A Host without a port is the default port of the
        # page's scheme (that is how a browser writes it).
        if own_port is None:
            own_port = _DEFAULT_PORTS[scheme]
        return name == own_name and port == own_port


class ConnectionLimits:
    """Per-IP admission: at most ``max_open`` open connections (0: no limit), and new
    connections through a token bucket of ``rate`` per second, ``burst`` deep
    (``rate`` 0: no limit).

    Pure: the caller passes ``now`` (monotonic seconds). Every ``admit`` that returns
    None reserves a slot that exactly one ``release`` gives back. All state lives in
    one OS thread (gevent), so there are no locks. ``max_open``, ``rate`` and ``burst``
    are plain attributes and may be changed while serving.
    """

    def __init__(self, max_open: int = 0, rate: float = 50.0, burst: int = 100) -> None:
        if max_open < 0 or rate < 0 or burst < 1:
            raise ValueError("need max_open >= 0, rate >= 0 and burst >= 1")
        self.max_open = max_open
        self.rate = rate
        self.burst = burst
        #: open connections per IP; an IP is removed when its count returns to 0
        self.connections: dict[str, int] = {}
        #: token bucket per IP: (tokens, when counted); a missing IP has a full bucket
        self.buckets: dict[str, tuple[float, float]] = {}
        self._next_sweep = float("-inf")

    def admit(self, ip: str, now: float, *, metered: bool = True) -> str | None:
        """Reserve a slot for a new connection from ``ip``: None if admitted (call
        ``release(ip)`` when it ends), else the reason for refusing it. ``metered``
        False skips the rate (the cap still counts)."""
        open_now = self.connections.get(ip, 0)
        # The count is checked first: a refusal for being at the cap burns no token,
        # so a client that retries until a slot frees up is not also rate limited.
        if self.max_open and open_now >= self.max_open:
            return f"too many open connections from {ip} (limit {self.max_open})"
        if self.rate and metered:
            self._sweep(now)
            tokens, then = self.buckets.get(ip, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            # The tolerance: clock differences lose low bits (1000.02 - 1000.0 is
            # 0.0199999...), and a token due exactly now must not be a hair short.
            if tokens < 1 - 1e-9:
                self.buckets[ip] = (tokens, now)
                return f"too many new connections from {ip} (limit {self.rate:g}/s)"
            self.buckets[ip] = (tokens - 1, now)
        self.connections[ip] = open_now + 1
        return None

    def release(self, ip: str) -> None:
        """Give back the slot of a connection that ``admit`` let in."""
        open_now = self.connections.get(ip, 0)
        if open_now == 0:
            # A release without its admit would let a client exceed the limit later.
            raise ValueError(f"release({ip!r}) without a matching admit")
        if open_now == 1:
            del self.connections[ip]
        else:
            self.connections[ip] = open_now - 1

    def _sweep(self, now: float) -> None:
        """Forget IPs whose bucket has refilled: a missing IP means a full bucket, so
        nothing changes but memory. Runs at most once per refill time, so admit stays
        O(1) amortised and the map holds only IPs seen in the last two refill times."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.burst / self.rate
        full = [
            ip
            for ip, (tokens, then) in self.buckets.items()
            if tokens + (now - then) * self.rate >= self.burst
        ]
        for ip in full:
            del self.buckets[ip]


class AdmissionHandler(HardenedHandler):
    """``HardenedHandler`` with the origin check and the per-IP limits.

    ``handler_for`` makes one subclass per node, whose ``origins`` and ``limits`` are
    that node's: all its connections share them, and nothing is shared between nodes.
    """

    #: new WebSocket connections per second from one IP (0: no limit), and the burst
    #: allowed above that rate. Not in the contract, so no flag: generous enough for a
    #: NAT full of browsers reconnecting at once, low enough to stop a tight loop.
    #: handler_for reads these when it builds a node's limits; at run time tune
    #: ``Handler.limits.rate`` / ``.burst`` instead.
    connection_rate: float = 50.0
    connection_burst: int = 100
    #: Which client addresses the connection rate does not apply to (the cap still
    #: does): loopback. A local process can hurt the node in easier ways than opening
    #: sockets quickly, tests and benchmarks open thousands at once, and a proxy on the
    #: same host would otherwise put all its users in one bucket.
    rate_exempt: Callable[[str], bool] = staticmethod(is_loopback)
    retry_after: str = "1"  #: seconds, on every 503 (RFC 9110 §10.2.3)

    origins: OriginPolicy
    limits: ConnectionLimits
    clock: Clock = MonotonicClock()

    _admitted: str | None = None  # the IP this request holds a slot for
    _refusal: tuple[str, list[tuple[str, str]]] | None = None  # (message, headers)

    def check_upgrade(self, environ: dict[str, Any]) -> str | None:
        origin = environ.get("HTTP_ORIGIN")
        if not self.origins.allows(origin, environ.get("HTTP_HOST")):
            self._refusal = (f"Origin {str(origin)[:200]!r} is not allowed", [])
            return "403 Forbidden"
        ip = environ.get("REMOTE_ADDR") or ""
        why = self.limits.admit(ip, self.clock.monotonic(), metered=not self.rate_exempt(ip))
        if why is not None:
            self._refusal = (why, [("Retry-After", self.retry_after)])
            return "503 Service Unavailable"
        self._admitted = ip
        return None

    def run_application(self) -> None:
        # One request per call (a keep-alive connection may bring several): whatever
        # ends it - the peer's close, an error, a reset, or the server killing this
        # greenlet with GreenletExit - the slot taken in check_upgrade is given back.
        try:
            super().run_application()
        finally:
            ip, self._admitted, self._refusal = self._admitted, None, None
            if ip is not None:
                self.limits.release(ip)

    def _refuse(
        self, status: str, message: str, headers: Iterable[tuple[str, str]] = ()
    ) -> list[bytes]:
        # check_upgrade can only return a status; the reason and headers (Retry-After)
        # that go with our own refusals are kept aside for here.
        if self._refusal is not None:
            message, extra = self._refusal
            headers = [*headers, *extra]
        return super()._refuse(status, message, headers)


def handler_for(config: Any) -> type[AdmissionHandler]:
    """The WSGI handler class for a node built from ``config`` (hubbub.config.Config)."""
    # --max-connections 0 turns off the connection rate too: it is how a node behind a
    # reverse proxy, where every client has the proxy's address, stops policing per IP
    # (docs/tls.md); the rate has no flag of its own to turn it off with.
    rate = AdmissionHandler.connection_rate if config.max_connections else 0.0
    return type(
        "Handler",
        (AdmissionHandler,),
        {
            "max_message": config.max_message,
            "max_backlog": config.max_backlog,
            "origins": OriginPolicy(config.allowed_origins),
            "limits": ConnectionLimits(
                config.max_connections, rate, AdmissionHandler.connection_burst
            ),
        },
    )
