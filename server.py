from gevent import monkey; monkey.patch_all()  # noqa: E702, I001 - must run before anything imports socket/threading  # fmt: skip

"""hubbub: run one chat node.  Wiring only: config → actor system → WSGI server → routes."""

import gc
import logging
import resource
import signal
import ssl
import sys
from typing import Any

import gevent
import gevent.event

from actors import ActorSystem, Limits, Timeouts
from actors.core.budgets import Budgets, Shape
from actors.core.identity import Verifier
from hubbub.admission import handler_for
from hubbub.config import ConfigError, load_config
from hubbub.gate import GatedServer, gate_for
from hubbub.http import App
from hubbub.plugins import PluginError, start_plugins
from hubbub.telemetry import Telemetry, setup_logging

log = logging.getLogger("hubbub")


def build(config, listener=None, **system_options):
    """The node's parts, wired: (actor system, WSGI server).  Tests build nodes this way too.

    ``listener``: an already bound socket (a --workers worker's SO_REUSEPORT one)."""
    t = Timeouts(
        hello=config.hello_timeout,
        ping=config.ping_interval,
        pong=config.pong_timeout,
        profile=config.profile_timeout,
        session=config.max_session,
    )
    telemetry = Telemetry(config.log_format)
    system = ActorSystem(
        t,
        history=config.history,
        events=telemetry,
        store=config.store,
        limits=Limits(config.rate, config.burst),
        redis=config.redis,
        budgets=budgets_for(config),
        verifier=verifier_for(config),
        require_token=config.auth_mode == "required"
        and bool(config.auth_secret or config.auth_public_key),
        max_backlog=config.max_backlog,
        **system_options,
    )
    telemetry.system = system
    handler = handler_for(config)
    tls: dict[str, Any] = {}
    if config.certfile:
        # One context per node (gevent's default re-reads the PEM files per connection),
        # and the handshake done by the gate under --tls-handshake-timeout, where a failed
        # one is a dropped client instead of a traceback for every plain-HTTP probe.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(config.certfile, config.keyfile)
        tls = {"ssl_context": context, "do_handshake_on_connect": False}
    # Every socket passes the accept-level gate (caps and pre-chat deadlines) before any
    # HTTP is read; the caps stay under the open-file limit (raised by raise_open_file_limit).
    # An automatic --max-sockets is sized again from the files open once the node listens.
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    gate = gate_for(config, fd_limit)
    app = App(system, config, telemetry)
    app.gate = gate
    server = GatedServer(
        listener or (config.host, config.port),
        app,
        handler_class=handler,
        log=None,
        error_log=logging.getLogger("hubbub.http"),
        gate=gate,
        fd_limit=None if config.max_sockets else fd_limit,
        **tls,
    )
    return system, server


def budgets_for(config):
    """The memory and rate budgets the options ask for (docs/operations.md)."""
    return Budgets(
        shape=Shape(max_bytes=config.info_bytes, max_depth=config.info_depth),
        history_bytes=config.history_bytes,
        history_total=config.history_total,
        joined_bytes=config.joined_bytes,
        max_rooms_per_user=config.max_rooms_per_user,
        max_rooms=config.max_rooms,
        dm_rate=config.dm_rate,
        dm_bytes=config.dm_bytes,
        nick_grace=config.nick_grace,
    )


def verifier_for(config):
    """The JWT checker for --auth-secret / --auth-public-key, or None (no identity)."""
    if config.auth_secret:
        return Verifier(
            config.auth_secret, audience=config.auth_audience, issuer=config.auth_issuer
        )
    if config.auth_public_key:
        with open(config.auth_public_key, "rb") as f:
            return Verifier(
                f.read(), public=True, audience=config.auth_audience, issuer=config.auth_issuer
            )
    return None


def tune_gc():
    """Fewer, cheaper collections: full ones were 23 % of CPU during logins (bench/FINDINGS.md).

    Measured with `python -m bench.gc_tuning` (docs/benchmarks.md, "tune_gc"): during
    3,000 logins 27 collections instead of ~400, no full one, the longest pause 2-8x
    shorter and 50-85 % less time collecting."""
    gc.freeze()  # everything imported so far lives for the whole process: never scan it again
    gc.set_threshold(10_000, 10, 10)


def raise_open_file_limit():
    """One socket per user: take the hard limit of open files (20,000 on these machines)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv=None, listener=None, ready=None, **system_options):
    """Run a node until SIGTERM / SIGINT.  A --workers worker passes its ``listener`` and
    ``ready(url)``, which it calls instead of printing the listening line."""
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"hubbub: error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_format)
    raise_open_file_limit()
    tune_gc()
    if config.workers > 1 and listener is None:
        from hubbub.workers import run_workers

        return run_workers(
            config, lambda sock, up: main(argv, listener=sock, ready=up, **system_options)
        )
    system, server = build(config, listener=listener, **system_options)
    try:
        start_plugins(system, config)  # before listening: a broken plugin never serves
        server.start()
    except PluginError as exc:
        print(f"hubbub: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"hubbub: error: cannot listen on {config.host}:{config.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 2
    scheme = "https" if config.certfile else "http"
    host, port = server.address[:2]
    if ready is None:
        print(f"hubbub listening on {scheme}://{host}:{port}", flush=True)
    else:
        ready(f"{scheme}://{host}:{port}")

    stopping = gevent.event.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stopping.set)
    system.node.fatal.rawlink(lambda _event: stopping.set())  # the scheduler or directory died
    stopping.wait()
    log.info("shutting down")
    server.stop_accepting()
    system.shutdown(grace=3.0)
    server.stop(timeout=1.0)
    return 1 if system.node.fatal.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
