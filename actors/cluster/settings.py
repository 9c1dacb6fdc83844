"""The ``--redis`` URL: where Redis is, and the cluster's own settings (docs/cluster.md)."""

from __future__ import annotations

import math
import urllib.parse
from dataclasses import dataclass

__all__ = ["DEFAULT_NODE_TTL", "DEFAULT_ROOM_TTL", "Settings", "parse_url"]

DEFAULT_NODE_TTL = 30.0
"""Seconds within which a dead node's users leave presence and its nicks are free
(``?node_ttl=`` in the URL)."""
DEFAULT_ROOM_TTL = 86400.0
"""Seconds a room's keys (seq, epoch, history) live after its last member left
(``?room_ttl=`` in the URL); a room that comes back after that starts a new epoch."""


@dataclass(frozen=True, slots=True)
class Settings:
    """What the ``--redis`` URL says."""

    url: str
    """For redis-py (hubbub's own parameters taken out)."""
    node_ttl: float
    room_ttl: float
    sentinels: tuple[tuple[str, int], ...] = ()
    """``redis+sentinel://`` only: the Sentinels to ask for the primary."""
    service: str = ""
    """``redis+sentinel://`` only: the primary's name (Sentinel's ``monitor`` name)."""
    db: int = 0
    password: str | None = None


def _seconds(key: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"--redis: {key} must be a number of seconds > 0 (got {value!r})")
    return seconds


def parse_url(url: str) -> Settings:
    """Split hubbub's own settings (``node_ttl``, ``room_ttl``) off the Redis URL.

    They live in the URL because they belong to the cluster, not to one node: every node
    is given the same URL, so all agree on when a silent node is dead.
    ``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]`` asks Sentinel.
    """
    # Not urlunsplit: it turns "unix:///path" into "unix:/path", which redis-py refuses.
    base, _, query = url.partition("?")
    found = {"node_ttl": DEFAULT_NODE_TTL, "room_ttl": DEFAULT_ROOM_TTL}
    rest = []
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if key in found:
            found[key] = _seconds(key, value)
        else:
            rest.append((key, value))
    clean = base + ("?" + urllib.parse.urlencode(rest) if rest else "")
    if not base.startswith("redis+sentinel://"):
        return Settings(clean, found["node_ttl"], found["room_ttl"])
    auth, _, hosts_path = base[len("redis+sentinel://") :].rpartition("@")
    hosts, _, path = hosts_path.partition("/")
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise ValueError("--redis: redis+sentinel://host:port/SERVICE needs the primary's name")
    sentinels = []
    for hp in hosts.split(","):
        host, _, port = hp.rpartition(":")
        sentinels.append((host or hp, int(port) if host else 26379))
    password = urllib.parse.unquote(auth.partition(":")[2]) if auth else None
    return Settings(
        clean,
        found["node_ttl"],
        found["room_ttl"],
        tuple(sentinels),
        parts[0],
        int(parts[1]) if len(parts) > 1 else 0,
        password or None,
    )
