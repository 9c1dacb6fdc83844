"""Who may open a WebSocket: the checks made before the 101 is sent.

``handler_for(config)`` returns the WSGI handler class for a node: the hardened
WebSocket handler with this node's limits and two questions asked of every valid
upgrade request, in this order (docs/operations.md "Running"):

1. **Origin** (``--allowed-origins``): a browser always sends ``Origin`` on a
   WebSocket upgrade, and the same-origin policy does not apply to WebSockets, so
   without this check any web page could open a chat socket with the visitor's
   cookies (cross-site WebSocket hijacking). Not allowed → ``403``.
2. **Per-IP limits** (``--max-connections`` and a connection rate): one client
   must not be able to take every file descriptor or keep the actor system busy
   creating users. Over a limit → ``503`` with ``Retry-After: 1``. Behind a proxy
   every client has the proxy's address, so ``--max-connections 0`` turns both off.

Before both, when the socket is accepted and before any HTTP is read, the
**accept gate** (``AcceptGate``, run by hubbub/gate.py) caps sockets in total and per
IP before the chat, and gives every phase before the chat a deadline.

The rules are pure (``OriginPolicy``, ``ConnectionLimits``, ``AcceptGate``: no sockets,
time passed in) so that tests check them in microseconds; ``AdmissionHandler`` is the
thin shell that feeds them the request, holds a slot for as long as the connection
lives, and tells the gate when a request starts, ends or becomes a chat.  (About 500
lines: the three admission rules live together so that one file says who gets in.)
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from actors.clock import Clock, MonotonicClock

from .http import SECURITY_HEADERS, is_loopback
from .transport import HardenedHandler

__all__ = [
    "PHASES",
    "SHED_SLACK",
    "AcceptGate",
    "AdmissionHandler",
    "GateTicket",
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
    """Which ``Origin`` may open a WebSocket (docs/operations.md ``--allowed-origins``).

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


#: A socket's phases before the chat starts, and after.  Only ``chat`` has no deadline.
#: ``handshake``, ``headers`` and ``idle`` wait for the client; ``body`` is a request
#: being served (its body read, the app run, the response written); ``closing`` is a
#: request whose deadline passed, given a short while to send its 408 (a slow reader
#: may block even that).  Every phase but ``chat`` may be shed to make room.
PHASES = ("handshake", "headers", "body", "closing", "idle", "chat")
CLOSING_GRACE = 5.0  #: seconds; at most the body timeout
#: Shed sockets still hold their fd until their handler has run and closed it; at most
#: this many may be on their way out at once (``AcceptGate.must_wait``).  A shed socket is
#: shut down both ways, so its handler's next read or write fails and it closes the fd on
#: the next turn of the loop: the slack only has to cover the sheds between two turns.
#: 8 lets one accept batch shed 8 slow sockets before accepting pauses for a turn; every
#: one of them is a file descriptor the automatic ``--max-sockets`` keeps spare
#: (hubbub/gate.py ``auto_max_sockets``), so it stays small.
SHED_SLACK = 8


class GateTicket:
    """One accepted socket, as the gate sees it.  ``conn`` is the shell's (the socket)."""

    __slots__ = ("conn", "deadline", "expired", "ip", "loopback", "phase", "since")

    def __init__(self, ip: str, loopback: bool, conn: Any) -> None:
        self.ip = ip
        self.loopback = loopback
        self.conn = conn
        self.phase = "new"  #: one of PHASES, or "new" / "shed" (closing) / "gone" (closed)
        self.since = 0.0  #: when the current phase began (monotonic seconds)
        self.deadline: float | None = None  #: when the current phase must be over
        self.expired = False  #: a deadline fired for this socket, or it was shed

    def __repr__(self) -> str:
        return f"<GateTicket {self.ip} {self.phase}>"


class AcceptGate:
    """Which accepted sockets may stay: caps counted at ``accept``, before any HTTP, and
    a deadline for every phase before the chat starts (issue 15 item 2).

    Sockets are the scarce thing: each is a file descriptor, and a process has a fixed
    number (20,000 here).  A slowloris client needs no bandwidth to hold thousands, so
    the caps count sockets and the deadlines bound how long one may wait for its client:

    - ``max_sockets``: accepted sockets in total.  A new one over it takes the place of
      the socket that has been longest in its pre-chat phase: the one most likely to be
      a slow attacker, and the one whose loss costs least (a polite client reconnects).
      Sockets in chat are never shed; if every socket is, the new one is refused.
    - ``admin_reserve``: ``max_sockets`` plus this many for loopback clients only, so an
      operator on the machine reaches /healthz, /metrics, /debug and /admin while the
      node is full.
    - ``max_pending_per_ip``: sockets from one IP not yet in chat; a new one over it takes
      the place of that IP's oldest, so one address cannot push the others' sockets out.
      The per-IP cap on sockets *in chat* is ``--max-connections``, enforced at the
      upgrade with the contract's 503.  0: no per-IP cap.
    - ``timeouts``: seconds allowed in each phase but ``chat``.

    ``open`` counts file descriptors: a shed socket counts until ``release`` (its handler
    closed it).  Sockets not shed never exceed the cap (``max_sockets``, + ``admin_reserve``
    for loopback): a newcomer over it comes in only in exchange for one shed socket, and
    only while fewer than ``SHED_SLACK`` are closing.  So ``open`` never exceeds
    ``max_sockets`` + ``admin_reserve`` + ``SHED_SLACK``: the budget hubbub/gate.py sizes the
    automatic cap from.  When a newcomer would need a shed socket but ``SHED_SLACK`` are
    still closing, ``must_wait`` says so: the shell stops accepting for a moment (the
    kernel's backlog holds the newcomers) instead of refusing a client a moment's wait
    would let in.  ``admit`` itself refuses it, so the bound holds whatever the caller does.

    Pure: the caller passes ``now`` (monotonic seconds) and does the closing.  ``due(now)``
    returns the sockets whose deadline passed, each once per deadline.
    """

    def __init__(
        self,
        *,
        max_sockets: int,
        admin_reserve: int = 0,
        max_pending_per_ip: int = 0,
        timeouts: dict[str, float] | None = None,
    ) -> None:
        if max_sockets < 1 or admin_reserve < 0 or max_pending_per_ip < 0:
            raise ValueError("need max_sockets >= 1, admin_reserve >= 0, max_pending_per_ip >= 0")
        self.max_sockets = max_sockets
        self.admin_reserve = admin_reserve
        self.max_pending_per_ip = max_pending_per_ip
        self.timeouts = dict.fromkeys(("handshake", "headers", "body", "idle"), 60.0)
        self.timeouts.update(timeouts or {})
        self.timeouts["closing"] = min(CLOSING_GRACE, self.timeouts["body"])
        self.open = 0  #: sockets whose fd is open (every phase, shed ones included)
        self.shedding = 0  #: shed sockets not yet released
        self.pending: dict[str, int] = {}  #: per IP: sockets not in chat nor shed; dropped at 0
        # Pre-chat sockets, oldest phase start first: shedding takes the first (O(1)).
        self._waiting: OrderedDict[GateTicket, None] = OrderedDict()
        self._waiting_by_ip: dict[str, OrderedDict[GateTicket, None]] = {}
        # Deadlines with lazy deletion: an entry whose ticket moved on is skipped.
        self._heap: list[tuple[float, int, GateTicket]] = []
        self._seq = itertools.count()
        #: what happened so far, for /debug/stats
        self.counts = {"accepted": 0, "refused": 0, "shed": 0, "expired": 0}

    def admit(
        self, ip: str, now: float, conn: Any = None, *, loopback: bool = False, tls: bool = False
    ) -> tuple[GateTicket | None, list[GateTicket]]:
        """A socket from ``ip`` was accepted: ``(ticket, shed)``.  ``ticket`` None: refuse
        it.  ``shed``: sockets to close to make room."""
        shed: list[GateTicket] = []
        cap = self.max_pending_per_ip
        # Over its per-IP cap, the IP's own oldest makes room, so one address cannot push
        # the others' sockets out; it is gone from the IP's count at once (the fd still
        # counts in ``open`` until it is closed).
        own = None
        if cap and self.pending.get(ip, 0) >= cap:
            own = next(iter(self._waiting_by_ip[ip]))
        if self.open >= self._limit(loopback):
            # Full: one socket out for this one in, the IP's own oldest if it is over its
            # cap (one victim is enough), else the oldest of all.
            if not self._waiting or self.shedding >= SHED_SLACK:
                self.counts["refused"] += 1
                return None, shed
            shed.append(self._shed(own if own is not None else next(iter(self._waiting))))
        elif own is not None:
            shed.append(self._shed(own))
        ticket = GateTicket(ip, loopback, conn)
        self.open += 1
        self.pending[ip] = self.pending.get(ip, 0) + 1
        self.enter(ticket, "handshake" if tls else "headers", now)
        self.counts["accepted"] += 1
        return ticket, shed

    def must_wait(self, *, loopback: bool = False) -> bool:
        """Whether a socket accepted now would be refused only because ``SHED_SLACK`` shed
        sockets still hold their fds: wait for one to close, then ``admit`` it."""
        return (
            self.open >= self._limit(loopback)
            and bool(self._waiting)
            and (self.shedding >= SHED_SLACK)
        )

    def _limit(self, loopback: bool) -> int:
        return self.max_sockets + (self.admin_reserve if loopback else 0)

    def enter(self, ticket: GateTicket, phase: str, now: float) -> None:
        """``ticket``'s socket starts ``phase`` (one of PHASES) now."""
        if ticket.phase in ("shed", "gone", "chat"):
            return  # shed or released meanwhile; a socket in chat never goes back
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        self._unwait(ticket)
        ticket.phase, ticket.since = phase, now
        if phase == "chat":
            ticket.deadline = None
            self._unpend(ticket.ip)
            return
        ticket.deadline = now + self.timeouts[phase]
        heap = self._heap
        if len(heap) > 2 * len(self._waiting) + 64:
            # Lazy deletion leaves an entry behind for every phase a socket moved past, and
            # each would live until its deadline (60 s): at hundreds of connections a second
            # that is tens of MB.  Rebuilt from the live deadlines: amortised O(1).
            heap[:] = [
                (t.deadline, next(self._seq), t) for t in self._waiting if t.deadline is not None
            ]
            heapq.heapify(heap)
        heapq.heappush(heap, (ticket.deadline, next(self._seq), ticket))
        self._waiting[ticket] = None
        self._waiting_by_ip.setdefault(ticket.ip, OrderedDict())[ticket] = None

    def release(self, ticket: GateTicket) -> None:
        """The socket is closed.  A no-op for a ticket already released."""
        if ticket.phase == "gone":
            return
        if ticket.phase == "shed":
            self.shedding -= 1
        else:
            self._unwait(ticket)
            if ticket.phase != "chat":
                self._unpend(ticket.ip)
        ticket.phase, ticket.deadline, ticket.conn = "gone", None, None
        self.open -= 1

    def due(self, now: float) -> list[GateTicket]:
        """Tickets whose phase deadline has passed (each returned once per deadline)."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            deadline, _, ticket = heapq.heappop(self._heap)
            if ticket.deadline == deadline and ticket.phase not in ("shed", "gone", "chat"):
                ticket.deadline = None
                ticket.expired = True
                out.append(ticket)
                self.counts["expired"] += 1
        return out

    def shed_oldest(self) -> GateTicket | None:
        """Shed the socket longest in a pre-chat phase (None if there is none), e.g. when
        the process is out of file descriptors after all."""
        return self._shed(next(iter(self._waiting))) if self._waiting else None

    def waiting(self) -> int:
        """Sockets not yet in chat (the ones that may be shed)."""
        return len(self._waiting)

    def _shed(self, victim: GateTicket) -> GateTicket:
        self._unwait(victim)
        self._unpend(victim.ip)
        victim.phase, victim.deadline, victim.expired = "shed", None, True
        self.shedding += 1
        self.counts["shed"] += 1
        return victim

    def _unwait(self, ticket: GateTicket) -> None:
        if self._waiting.pop(ticket, 0) is None:
            by_ip = self._waiting_by_ip[ticket.ip]
            del by_ip[ticket]
            if not by_ip:
                del self._waiting_by_ip[ticket.ip]

    def _unpend(self, ip: str) -> None:
        left = self.pending[ip] - 1
        if left:
            self.pending[ip] = left
        else:
            del self.pending[ip]


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
    #: set by hubbub.gate.GatedServer: this socket's place at the accept-level gate
    gate_ticket: GateTicket | None = None
    _refusal: tuple[str, list[tuple[str, str]]] | None = None  # (message, headers)
    #: the upgraded connection this handler handed over (it outlives the handler)
    handed_over: Any = None

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
        self._enter("chat")  # no more deadlines: the chat's own rules (hello, pong) take over
        return None

    def _enter(self, phase: str) -> None:
        ticket = self.gate_ticket
        if ticket is not None:
            self.server.gate.enter(ticket, phase, self.server.clock.monotonic())

    def handle_one_response(self) -> None:
        # Called once the request line and headers are read: from here the request
        # (its body included) runs on the body deadline, and once it is answered the
        # connection is idle until the next request or the keep-alive deadline.
        self._enter("body")
        self.environ["hubbub.gate_ticket"] = self.gate_ticket
        try:
            super().handle_one_response()
        finally:
            self._enter("idle")

    def run_application(self) -> None:
        # One request per call (a keep-alive connection may bring several): whatever
        # ends it - the peer's close, an error, a reset, or the server killing this
        # greenlet with GreenletExit - the slot taken in check_upgrade is given back.
        # An upgraded connection outlives this call (it lives on in watchers): its slot
        # is given back when the connection is released.
        try:
            super().run_application()
        finally:
            ip, self._admitted, self._refusal = self._admitted, None, None
            conn, self._detached = self._detached, None
            self.handed_over = conn  # the gate keeps counting its socket until it is released
            if ip is not None:
                if conn is not None:
                    conn.add_done_callback(partial(self.limits.release, ip))
                else:
                    self.limits.release(ip)

    def on_upgraded(self, conn: Any) -> None:
        # upgrade_at_once's handover (pywsgi's path does this in run_application): the
        # slot taken in check_upgrade is held until the connection ends.
        ip, self._admitted = self._admitted, None
        self.handed_over = conn
        if ip is not None:
            conn.add_done_callback(partial(self.limits.release, ip))

    def upgrade_aborted(self) -> None:
        ip, self._admitted = self._admitted, None
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
        return super()._refuse(status, message, [*headers, *SECURITY_HEADERS])


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
            "header_timeout": config.header_timeout,
            "keepalive_timeout": config.keepalive_timeout,
            "max_header_bytes": config.max_header_bytes,
            "frame_budget": config.frame_budget,
            "byte_budget": config.byte_budget,
            "origins": OriginPolicy(config.allowed_origins),
            "limits": ConnectionLimits(
                config.max_connections, rate, AdmissionHandler.connection_burst
            ),
        },
    )
