"""Who may use /admin and /debug: the rules beyond the contract's token-or-loopback.

Loopback is not a security boundary for a browser: any web page the operator opens can
make the operator's browser send requests to ``127.0.0.1``.  Two attacks follow, and
each rule here closes one (issue 15 item 5):

- **DNS rebinding**: a page at ``evil.example`` makes its name resolve to 127.0.0.1 and
  then reads ``/debug/actors`` as same-origin.  The browser still sends
  ``Host: evil.example``, so without a token only names that are ours are answered
  (``AdminHosts.host_allowed``).
- **Cross-site request forgery**: a page posts a ``text/plain`` form to ``/admin/kick``;
  such a "simple" request needs no CORS preflight, so it arrives.  A state-changing
  request must be JSON (``Content-Type: application/json`` forces a preflight that we
  never grant) and, if it carries an ``Origin``, our own (``AdminHosts.same_origin``).

With ``--admin-token`` the bearer token is the check, and guessing it is slowed down:
``FailureThrottle`` counts wrong tokens per IP and answers 429 once there are too many.

Pure: no sockets, time passed in.  hubbub/http.py's ``App.guarded`` applies them.
"""

from __future__ import annotations

import ipaddress

from .admission import _DEFAULT_PORTS, _host_key, _is_loopback, _parse_host_header, parse_origin

__all__ = ["AdminHosts", "FailureThrottle", "is_json"]


def _loopback_name(name: str) -> bool:
    # RFC 6761 §6.3: "localhost" and every name under it are loopback, and browsers
    # resolve them so without asking DNS, which a rebinding attacker cannot change.
    return _is_loopback(name) or name.endswith(".localhost")


class AdminHosts:
    """The ``Host`` names the admin routes answer without a token: loopback names and
    addresses, the address the node is bound to (unless a wildcard), and ``extra``
    (``--admin-hosts``)."""

    def __init__(self, bound: str | None = None, extra: tuple[str, ...] = ()) -> None:
        names = {n.strip("[]").lower() for n in extra}
        if bound:
            bare = bound.strip("[]").lower()
            try:
                wildcard = ipaddress.ip_address(bare).is_unspecified
            except ValueError:
                wildcard = False
            if not wildcard:
                names.add(bare)
        self.names = frozenset(_host_key(n) for n in names)

    def host_allowed(self, host: str | None) -> bool:
        """Whether a request with this ``Host`` header (None: absent) may be answered.
        No ``Host`` at all is an HTTP/1.0 script, never a browser: allowed."""
        if host is None:
            return True
        parsed = _parse_host_header(host)
        if parsed is None:
            return False
        name = parsed[0]
        return _loopback_name(name) or name in self.names

    @staticmethod
    def same_origin(origin: str | None, host: str | None) -> bool:
        """Whether a request's ``Origin`` (None: absent, not a browser's cross-site
        request) is the page the request is addressed to: scheme http(s), same host
        and port as ``Host``.  ``Origin: null`` (sandboxed frames, file://) is not."""
        if origin is None:
            return True
        parsed, own = parse_origin(origin), _parse_host_header(host or "")
        if parsed is None or own is None:
            return False
        scheme, name, port = parsed
        if scheme not in ("http", "https"):
            return False
        own_name, own_port = own
        return name == own_name and port == (own_port or _DEFAULT_PORTS[scheme])


def is_json(content_type: str | None) -> bool:
    """``application/json``, parameters (``; charset=utf-8``) allowed, any case."""
    return (content_type or "").split(";", 1)[0].strip().lower() == "application/json"


class FailureThrottle:
    """Wrong admin tokens per IP: at most ``limit`` in a fixed ``window`` (seconds), then
    refused until the window ends.  A guess per ``window / limit`` seconds is no threat
    to a real token, and the operator who mistyped waits at most one window.

    Pure: the caller passes ``now`` (monotonic seconds).  Memory: one entry per IP that
    failed in the last window (older entries are swept).
    """

    def __init__(self, limit: int = 10, window: float = 60.0) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("need limit >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self.failures: dict[str, tuple[float, int]] = {}  #: ip -> (window start, failures)
        self._next_sweep = float("-inf")

    def retry_after(self, ip: str, now: float) -> float | None:
        """Seconds until ``ip`` may try again, or None if it may try now."""
        start, count = self._current(ip, now)
        if count >= self.limit:
            return start + self.window - now
        return None

    def failed(self, ip: str, now: float) -> bool:
        """Count a wrong token from ``ip``; True if it is the first of its window (the
        one to log: an attacker must not be able to fill the log)."""
        self._sweep(now)
        start, count = self._current(ip, now)
        self.failures[ip] = (start, count + 1)
        return count == 0

    def _current(self, ip: str, now: float) -> tuple[float, int]:
        start, count = self.failures.get(ip, (now, 0))
        if now - start >= self.window:
            return now, 0
        return start, count

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.window
        for ip in [ip for ip, (start, _) in self.failures.items() if now - start >= self.window]:
            del self.failures[ip]
