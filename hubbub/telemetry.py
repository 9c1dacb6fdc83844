"""Metrics (/metrics, prometheus-client) and the connect/disconnect log lines.

Gauges that describe the tree (users by state, rooms, pending timers, mailbox
depth) are read from the actor system at scrape time by a custom collector, so
there is nothing to keep in sync.  Counters are bumped by the UserActor's
lifecycle hooks (``connected`` / ``disconnected``).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily

__all__ = ["Telemetry", "setup_logging", "CONTENT_TYPE"]

disable_created_metrics()  # the `_created` series double every counter for no operator value

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

log = logging.getLogger("hubbub.sessions")


class _TreeCollector:
    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def collect(self) -> Any:
        system = self.telemetry.system
        if system is None:
            return
        stats = system.stats()
        users = GaugeMetricFamily("hubbub_users", "Connected users by state", labels=["state"])
        for state, n in stats["users_by_state"].items():
            users.add_metric([state], n)
        yield users
        yield GaugeMetricFamily("hubbub_rooms", "Rooms with members", value=stats["rooms"])
        yield GaugeMetricFamily("hubbub_scheduler_pending_timers", "Timers waiting in the scheduler",
                                value=stats["pending_timers"])
        yield GaugeMetricFamily("hubbub_actors", "Live actors in the tree", value=stats["actors"])
        yield GaugeMetricFamily("hubbub_mailbox_max", "Deepest mailbox (messages)", value=stats["mailbox_max"])
        yield GaugeMetricFamily("hubbub_mailbox_total", "Messages waiting in all mailboxes",
                                value=stats["mailbox_total"])


class Telemetry:
    def __init__(self, log_format: str = "text") -> None:
        self.log_format = log_format
        self.system: Any = None
        self.registry = CollectorRegistry()
        self.connections = Counter("hubbub_connections", "WebSocket connections accepted",
                                   registry=self.registry)
        self.disconnects = Counter("hubbub_disconnects", "Disconnects by reason", ["reason"],
                                   registry=self.registry)
        self.registry.register(_TreeCollector(self))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # --- UserActor lifecycle (called from the user's own greenlet) ---------------------

    def connected(self, user: Any) -> None:
        self.connections.inc()
        self._line("connect", user, None)

    def disconnected(self, user: Any) -> None:
        reason = user.session.close_reason or "client_closed"
        self.disconnects.labels(reason).inc()
        self._line("disconnect", user, reason)

    def _line(self, event: str, user: Any, reason: str | None) -> None:
        s = user.session
        fields: dict[str, Any] = {"event": event, "session": s.session_id, "nick": s.nick,
                                  "remote": getattr(user.conn, "remote_addr", None)}
        if reason is not None:
            fields["reason"] = reason
            fields["duration"] = round(user.clock.monotonic() - s.opened_at, 3)
        if self.log_format == "json":
            log.info(json.dumps(fields, separators=(",", ":")))
        else:
            log.info(" ".join(f"{k}={v}" for k, v in fields.items() if v is not None))


def setup_logging(log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(logging.Formatter('%(message)s'))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # pykka logs every actor start/stop at DEBUG; keep it quiet at INFO.
    logging.getLogger("pykka").setLevel(logging.WARNING)
