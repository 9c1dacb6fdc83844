"""Metrics (/metrics, prometheus-client) and the connect/disconnect log lines.

Everything is read from the actor system at scrape time by one custom collector:
gauges that describe the tree (users by state, rooms, pending timers, mailbox
depth: kept incrementally or by the inspector's sliced sweep, hubbub/inspect.py) and the plain counters the actors bump (actors/core/counters.py), so the hot
paths pay no lock and there is nothing to keep in sync.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

__all__ = ["Telemetry", "setup_logging", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

log = logging.getLogger("hubbub.sessions")


def _labelled(family: Any, values: dict[str, int]) -> Any:
    for label, n in sorted(values.items()):
        family.add_metric([label], n)
    return family


class _Collector:
    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def collect(self) -> Any:
        system = self.telemetry.system
        if system is None:
            return
        stats = self.telemetry.stats() if self.telemetry.stats is not None else system.stats()
        c = system.counters
        yield _labelled(
            GaugeMetricFamily("hubbub_users", "Connected users by state", labels=["state"]),
            stats["users_by_state"],
        )
        yield GaugeMetricFamily("hubbub_rooms", "Rooms with members", value=stats["rooms"])
        yield GaugeMetricFamily(
            "hubbub_dormant_rooms",
            "Emptied rooms whose seq (and maybe history) is kept",
            value=stats["dormant_rooms"],
        )
        yield GaugeMetricFamily(
            "hubbub_history_bytes",
            "Bytes of room history kept (under --history-total)",
            value=stats["history_bytes"],
        )
        yield CounterMetricFamily(
            "hubbub_history_evicted",
            "Messages dropped to stay under --history-total",
            value=stats["history_evicted"],
        )
        yield GaugeMetricFamily(
            "hubbub_held_nicks",
            "Nicks held for their owners after a drop (--nick-grace)",
            value=stats["held_nicks"],
        )
        yield GaugeMetricFamily(
            "hubbub_scheduler_pending_timers",
            "Timers waiting in the scheduler",
            value=stats["pending_timers"],
        )
        yield GaugeMetricFamily("hubbub_actors", "Live actors in the tree", value=stats["actors"])
        yield GaugeMetricFamily(
            "hubbub_mailbox_max", "Deepest mailbox (messages)", value=stats["mailbox_max"]
        )
        yield GaugeMetricFamily(
            "hubbub_mailbox_total",
            "Messages waiting in all mailboxes",
            value=stats["mailbox_total"],
        )
        yield CounterMetricFamily(
            "hubbub_connections", "WebSocket connections accepted", value=c.connections
        )
        yield CounterMetricFamily(
            "hubbub_messages_in", "Client data frames received", value=c.frames_in
        )
        yield CounterMetricFamily(
            "hubbub_messages_out", "Frames queued to clients", value=c.frames_out
        )
        yield CounterMetricFamily(
            "hubbub_room_messages", "Room messages stored (say)", value=c.messages
        )
        yield CounterMetricFamily(
            "hubbub_deliveries", "Room messages handed to members", value=c.deliveries
        )
        yield CounterMetricFamily("hubbub_dms", "Direct messages delivered", value=c.dms)
        yield _labelled(
            CounterMetricFamily("hubbub_disconnects", "Disconnects by reason", labels=["reason"]),
            c.disconnects,
        )
        yield _labelled(
            CounterMetricFamily("hubbub_errors", "error frames sent, by code", labels=["code"]),
            c.errors,
        )
        yield _labelled(
            CounterMetricFamily(
                "hubbub_actor_failures", "Actors that raised, by kind", labels=["kind"]
            ),
            c.actor_failures,
        )
        h = c.fanout_seconds
        cumulative, buckets = 0, []
        for bound, n in zip((*h.buckets, float("inf")), h.counts, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily(
            "hubbub_fanout_seconds",
            "From a say reaching the sender's actor to every member told",
            buckets=buckets,
            sum_value=h.sum,
        )


class Telemetry:
    def __init__(self, log_format: str = "text") -> None:
        self.log_format = log_format
        self.system: Any = None
        self.stats: Any = None
        """Cheap stats for the scrape (the inspector's incremental counts), else system.stats()."""
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # --- UserActor lifecycle (called from the user's own greenlet) ---------------------

    def connected(self, user: Any) -> None:
        self._line("connect", user, None)

    def disconnected(self, user: Any) -> None:
        self._line("disconnect", user, user.session.close_reason or "client_closed")

    def _line(self, event: str, user: Any, reason: str | None) -> None:
        s = user.session
        fields: dict[str, Any] = {
            "event": event,
            "session": s.session_id,
            "nick": s.nick,
            "remote": getattr(user.conn, "remote_addr", None),
        }
        if reason is not None:
            fields["reason"] = reason
            fields["duration"] = round(user.clock.monotonic() - s.opened_at, 3)
        log.info(
            "%s",
            " ".join(f"{k}={v}" for k, v in fields.items() if v is not None),
            extra={"fields": fields},
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per line; session lines carry their fields at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields:
            out.update(fields)
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"), default=str)


class TextFormatter(logging.Formatter):
    """``asctime level logger message``, the timestamp's text made once per second
    (``Formatter.formatTime`` calls ``localtime`` and ``strftime`` for every line)."""

    _second: int | None = None
    _text = ""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._text = time.strftime(self.default_time_format, self.converter(second))
        return f"{self._text},{int(record.msecs):03d}"  # the default_msec_format


def setup_logging(log_format: str) -> None:
    # A connect and a disconnect line per session: at thousands of logins a second the
    # record's extras were a third of a line's cost. Neither format shows the caller
    # (a stack walk per record), the thread, the process or the asyncio task, so they
    # are not looked up (the logging HOWTO's "Optimization"): 25 -> 10 us a line here.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined,unused-ignore]  # Python 3.12+
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # pykka logs every actor start/stop at DEBUG; keep it quiet at INFO.
    logging.getLogger("pykka").setLevel(logging.WARNING)
