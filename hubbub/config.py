"""Configuration from flags, ``HUBBUB_*`` env vars and a TOML file (docs/operations.md "Running").

Pure (no gevent, no sockets): the only I/O is reading the TOML file and checking that the
TLS files exist, so a typo fails at start-up, not at the first ``wss://`` handshake.
"""

import argparse
import math
import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Config", "ConfigError", "load_config"]


@dataclass(frozen=True)
class Config:
    """Every option of the contract's "Running" table, with the contract's default."""

    host: str = "127.0.0.1"  #: address to bind
    port: int = 8080  #: port to bind; 0 picks a free one
    hello_timeout: float = 5.0  #: seconds from socket open to ``hello``, else 4001
    ping_interval: float = 30.0  #: seconds between server pings once ``welcome`` was sent
    pong_timeout: float = 120.0  #: seconds without a pong (from ``welcome``), else 4002
    profile_timeout: float = 300.0  #: seconds from socket open to a ``profile``, else 4004
    max_session: float = 43200.0  #: seconds a connection may live, else 4003
    # repr=False on secrets: a Config gets logged, its token and Redis password must not.
    admin_token: str | None = field(default=None, repr=False)  #: None: loopback only
    history: int = 100  #: messages kept per room
    max_message: int = 65536  #: largest client message in bytes, else close 1009
    redis: str | None = field(default=None, repr=False)  #: cluster URL; None: one node
    workers: int = 1  #: server processes sharing the port; more than 1 needs redis
    max_backlog: int = 1048576  #: bytes queued to one client, else slow_consumer 4007
    rate: float = 20.0  #: per-user token bucket refill, messages per second
    burst: int = 40  #: per-user token bucket size
    max_connections: int = 10000  #: open connections per client IP; 0: no limit
    allowed_origins: tuple[str, ...] | None = None  #: or ("*",); None: same host + loopback
    certfile: str | None = None  #: TLS certificate (PEM), always with keyfile
    keyfile: str | None = None  #: TLS private key (PEM), always with certfile
    store: str | None = None  #: SQLite file for durable history; None: memory only
    log_format: str = "text"  #: "text" or "json"
    plugins: tuple[str, ...] = ()  #: extra actor types "module:Class" (flag --plugin)
    #: entry-point names (or module:Class) not to start (flag --disable-plugin)
    disable_plugins: tuple[str, ...] = ()
    #: from TOML tables [plugins."module:Class"]; plain dicts so that a Config pickles for
    #: worker processes, hence not frozen (treat as read-only) and left out of the hash
    plugin_settings: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)
    config: str | None = None  #: the TOML file the values came from, if any
    # Time and size limits on the phases before the chat starts (nginx's defaults).
    header_timeout: float = 60.0  #: request line + headers must arrive within this, else dropped
    keepalive_timeout: float = 75.0  #: an idle keep-alive HTTP connection is closed after this
    max_header_bytes: int = 32768  #: request line + headers larger than this -> HTTP 431
    # The transport's per-connection fairness budget (every frame kind counts).
    frame_budget: int = 1000  #: WebSocket frames one connection may send per second, else 4006
    byte_budget: int = 8388608  #: WebSocket bytes one connection may send per second, else 4006
    # The accept-level gate (hubbub/gate.py) and the admin rules (issue 15 items 2 and 5).
    tls_handshake_timeout: float = 60.0  #: a TLS handshake must finish within this
    body_timeout: float = 60.0  #: a request body must arrive within this, else HTTP 408
    max_sockets: int = 0  #: accepted sockets in total; 0: the open-file limit minus headroom
    admin_reserve: int = 32  #: sockets over max_sockets that only loopback clients may use
    max_pending_per_ip: int = 1000  #: sockets from one IP not yet in chat; 0: no limit
    admin_hosts: tuple[str, ...] = ()  #: Host names /admin and /debug answer besides loopback
    # Memory budgets (docs/operations.md "Worst-case memory" adds them up).
    info_bytes: int = 2048  #: profile.info as compact JSON, at most this many bytes
    info_depth: int = 4  #: profile.info nested at most this deep
    history_bytes: int = 1048576  #: bytes of messages kept per room (with --history as the count)
    history_total: int = 67108864  #: bytes of messages kept over all rooms; 0: no total
    joined_bytes: int = 262144  #: largest joined/history page (at most a quarter of --max-backlog)
    max_rooms_per_user: int = 128  #: rooms one user may be in
    max_rooms: int = 10000  #: rooms with members on this node; also emptied rooms remembered
    dm_rate: float = 10.0  #: dms per second into one user, from all senders together
    dm_bytes: int = 65536  #: dm bytes per second into one user
    nick_grace: float = 30.0  #: seconds a dropped user's nick is held for its owner; 0: not held
    # Identity (signed tokens); none set: anyone may use any free nick.
    auth_secret: str | None = field(default=None, repr=False)  #: HMAC key for JWTs in profile.token
    auth_public_key: str | None = None  #: PEM file: RS256/ES256/EdDSA public key for JWTs
    auth_audience: str | None = None  #: required `aud` claim
    auth_issuer: str | None = None  #: required `iss` claim
    auth_mode: str = (
        "required"  #: required: every profile needs a token; optional: guests use unbound nicks
    )

    @property
    def timeouts(self) -> dict[str, float]:
        """The five durations under the names the ``welcome`` frame uses."""
        return {
            "hello": self.hello_timeout,
            "ping": self.ping_interval,
            "pong": self.pong_timeout,
            "profile": self.profile_timeout,
            "session": self.max_session,
        }


class ConfigError(ValueError):
    """A bad option; the message names it and where it came from (flag, env var or file)."""


# Converters take a raw value (a str from a flag or env var, a native value from TOML)
# and return the typed value or raise ValueError with the problem; the caller adds where.
def _number(
    kind: type[int] | type[float], lo: float, hi: float = math.inf, above: bool = False
) -> Callable:
    def convert(v: Any) -> Any:
        x: Any
        try:  # exact type test: bool is an int, and `port = true` must not become port 1
            x = kind(v) if isinstance(v, str) or (kind is float and type(v) is int) else v
        except ValueError:
            x = None
        if type(x) is not kind or (kind is float and not math.isfinite(x)):  # inf is no limit
            raise ValueError(f"{v!r} is not {'an integer' if kind is int else 'a number'}")
        if x < lo or x > hi or (above and x == lo):
            span = f"{lo}..{hi}" if hi < math.inf else f"{'>' if above else '>='} {lo}"
            raise ValueError(f"must be {span} (got {v!r})")
        return x

    return convert


def _text(ok: Callable[[str], bool] = bool, problem: str = "") -> Callable[[Any], str]:
    def convert(v: Any) -> str:
        if not isinstance(v, str) or not v:
            raise ValueError(f"must be a non-empty string (got {v!r})")
        if not ok(v):
            raise ValueError(problem.format(v))
        return v

    return convert


_PLUGIN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
# --disable-plugin takes an entry point's name (in practice [\w.-]+) or a module:Class.
_PLUGIN_NAME = re.compile(r"[\w.-]+|" + _PLUGIN.pattern)
# scheme://host[:port] and nothing more: an Origin header has no path, not even "/"
# (RFC 6454 section 6.1), so anything else could never match and is a typo to report.
_ORIGIN = re.compile(r"\*|[a-z][a-z0-9+.-]*://(\[[0-9a-f:.]+\]|[^\]\[\s/?#@:]+)(:\d{1,5})?", re.I)


def _listed(pattern: re.Pattern[str], like: str) -> Callable[[Any], tuple[str, ...]]:
    def convert(v: Any) -> tuple[str, ...]:
        # One shape for "a,b" (flag, env) and ["a", "b"] (TOML, or a repeated flag).
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise ValueError(f"must be a string or a list of strings (got {v!r})")
        specs = [s.strip() for item in items for s in item.split(",") if s.strip()]
        for spec in specs:
            if not pattern.fullmatch(spec):
                raise ValueError(f"{spec!r} is not like {like}")
        return tuple(dict.fromkeys(specs))  # a plugin or origin named twice is still one

    return convert


def _origins(v: Any) -> tuple[str, ...]:
    origins = _listed(_ORIGIN, "https://chat.example.com[:port] or *")(v)
    if not origins or ("*" in origins and len(origins) > 1):
        raise ValueError("must be '*' alone or a comma-separated list of origins")
    return tuple(o.lower() for o in origins)  # browsers send scheme and host in lower case


# A host name or IP literal as a Host header carries it (no port, no scheme).
_HOSTNAME = re.compile(r"\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9.-]*[a-z0-9])?", re.I)


def _hosts(v: Any) -> tuple[str, ...]:
    return tuple(h.lower() for h in _listed(_HOSTNAME, "chat.example.com")(v))


_REDIS = ("redis://", "rediss://", "unix://", "redis+sentinel://")
_KINDS: dict[str, Callable[[Any], Any]] = {
    "str": _text(),
    "0..65535": _number(int, 0, 65535),
    "int>=0": _number(int, 0),
    "int>=1": _number(int, 1),
    "float>0": _number(float, 0, above=True),
    # 125 bytes is the largest payload with a one-byte length, and a hello needs about that;
    # 64 MiB caps what one connection may make the server buffer for one message.
    "125..64MiB": _number(int, 125, 64 * 1024 * 1024),
    # The message does not echo the value: a Redis URL may carry a password.
    "redis-url": _text(lambda s: s.startswith(_REDIS), f"must start with {' or '.join(_REDIS)}"),
    "file": _text(lambda s: Path(s).is_file(), "no such file: {}"),
    "text|json": _text(lambda s: s in ("text", "json"), "must be 'text' or 'json' (got {!r})"),
    "required|optional": _text(
        lambda s: s in ("required", "optional"), "must be 'required' or 'optional' (got {!r})"
    ),
    "float>=0": _number(float, 0),
    "int>=64": _number(int, 64),
    "int>=1024": _number(int, 1024),
    "origins": _origins,
    "hosts": _hosts,
    "module:Class": _listed(_PLUGIN, "module:Class"),
    "plugin-names": _listed(_PLUGIN_NAME, "an entry-point name or module:Class"),
}
# The contract's "Running" table, one row per option: flag name (also the TOML key and
# HUBBUB_<NAME>), kind (how the value is parsed and checked), metavar, and --help text.
_TABLE = """
host             str           ADDR          address to bind
port             0..65535      PORT          port to bind; 0 picks a free one and prints it
hello-timeout    float>0       SECONDS       no hello this long after the socket opened -> disconnect 4001
ping-interval    float>0       SECONDS       the server sends ping this often once welcome was sent
pong-timeout     float>0       SECONDS       no pong this long (counted from welcome, then from the last pong) -> 4002
profile-timeout  float>0       SECONDS       no accepted profile this long after the socket opened -> 4004
max-session      float>0       SECONDS       connection older than this -> 4003
admin-token      str           TOKEN         bearer token for /admin/* and /debug/*; without one these answer only clients on loopback
history          int>=0        N             messages kept per room for joined.history and since
max-message      125..64MiB    BYTES         largest client message in bytes -> else close 1009
redis            redis-url     URL           redis://... URL: join a cluster of nodes through Redis
workers          int>=1        N             server processes on one port; more than 1 needs --redis
max-backlog      int>=1        BYTES         bytes waiting to be written to one client; over it -> slow_consumer 4007
rate             float>0       PER_SECOND    per-user token bucket for client messages (per second); over it -> error rate_limited, persisting -> 4006
burst            int>=1        N             per-user token bucket size (see --rate)
max-connections  int>=0        N             open connections from one client IP; over it the upgrade gets HTTP 503; 0 = no limit
allowed-origins  origins       ORIGINS       comma-separated origins (https://chat.example.com) or *; an upgrade with another Origin gets HTTP 403; no Origin header (non-browser clients) is allowed (default: same host + loopback)
certfile         file          FILE          serve https:// and wss:// directly (needs --keyfile)
keyfile          file          FILE          private key for --certfile
store            str           FILE          SQLite file for durable room history (seq and since survive a restart)
log-format       text|json     {text,json}   text or json: one line per connect and disconnect (session, nick, reason, duration)
plugin           module:Class  MODULE:CLASS  repeatable: load an extra actor type (also the hubbub.actors entry points)
disable-plugin   plugin-names  NAME          repeatable: do not start this installed entry point (its name, or module:Class)
header-timeout   float>0       SECONDS       the request line and headers must arrive within this, else the socket is closed
keepalive-timeout float>0      SECONDS       an idle keep-alive HTTP connection is closed after this
max-header-bytes int>=1        BYTES         request line + headers larger than this -> HTTP 431
frame-budget     int>=0        N             WebSocket frames of any kind (pings, pongs, fragments included) one connection may send per second; over it -> close 4006; 0 = no limit
byte-budget      int>=0        BYTES         WebSocket bytes one connection may send per second; over it -> close 4006; 0 = no limit
tls-handshake-timeout float>0  SECONDS       with --certfile: the TLS handshake must finish within this, else the socket is closed
body-timeout     float>0       SECONDS       a request body must arrive within this, else HTTP 408 and the socket is closed
max-sockets      int>=0        N             accepted sockets in total; over it the one longest before the chat is closed (503 if all are in chat); 0 = the open-file limit minus --admin-reserve minus the files open at start minus 17
admin-reserve    int>=0        N             sockets over --max-sockets that only loopback clients may use (/healthz, /metrics, /debug, /admin while the node is full)
max-pending-per-ip int>=0      N             sockets from one IP not yet upgraded; over it that IP's oldest one is closed; 0 = no limit (also off with --max-connections 0)
admin-hosts      hosts         NAMES         comma-separated Host names /admin and /debug answer without --admin-token, besides loopback names and --host (DNS rebinding)
info-bytes       int>=64       BYTES         profile.info as compact JSON may be at most this big, else error bad_message
info-depth       int>=1        N             profile.info may be nested at most this deep (an object in an object is 2)
history-bytes    int>=1024     BYTES         bytes of messages kept per room (--history is the count limit)
history-total    int>=0        BYTES         bytes of messages kept over all rooms (emptied rooms evicted first); 0 = no total
joined-bytes     int>=1024     BYTES         largest joined or history page (never more than a quarter of --max-backlog)
max-rooms-per-user int>=1      N             rooms one user may be in; over it join gets error too_many_rooms
max-rooms        int>=1        N             rooms with members on this node (also how many emptied rooms keep their seq)
dm-rate          float>0       PER_SECOND    dms per second into one user from all senders; over it the sender gets error rate_limited
dm-bytes         int>=1        BYTES         dm bytes per second into one user (bursts of 4 seconds' worth)
nick-grace       float>=0      SECONDS       a dropped user's nick is held this long for its owner (profile.resume); 0 = not held
auth-secret      str           SECRET        HMAC secret: profile.token must be a JWT signed with it (HS256/384/512)
auth-public-key  file          FILE          PEM public key: profile.token must be a JWT signed with its private key (RS256, ES256, EdDSA)
auth-audience    str           AUD           the token's aud claim must be this
auth-issuer      str           ISS           the token's iss claim must be this
auth-mode        required|optional MODE      with --auth-*: required = every profile needs a token; optional = guests may use nicks no token bound
"""
_ROWS = [line.split(None, 3) for line in _TABLE.strip().splitlines()]
_OPTIONS = {name: (_KINDS[kind], metavar, text) for name, kind, metavar, text in _ROWS}
_LISTS = {"plugin": "plugins", "disable-plugin": "disable_plugins"}  # repeatable flags
_FIELD = {name: _LISTS.get(name, name.replace("-", "_")) for name in _OPTIONS}


class _Parser(argparse.ArgumentParser):
    # argparse declares error() -> NoReturn; this one never returns either (it raises).
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse would print usage and exit 2; callers want one exception type for every
        # bad option. --help still exits 0, through print_help() and exit().
        raise ConfigError(f"command line: {message}")


def _parser() -> argparse.ArgumentParser:
    epilog = """Every option also comes from HUBBUB_<NAME> (the lists HUBBUB_PLUGIN and
        HUBBUB_DISABLE_PLUGIN comma-separated) and
        the --config file. Flag beats env beats file beats default. Durations may be fractional."""
    # allow_abbrev=False: a flag prefix that works today would break when a flag is added.
    p = _Parser(
        prog="hubbub", description="A WebSocket chat server.", epilog=epilog, allow_abbrev=False
    )
    p.add_argument("--config", metavar="FILE", help="TOML file whose keys are the flag names")
    for name, (_, metavar, text) in _OPTIONS.items():
        if (default := getattr(Config, _FIELD[name])) not in (None, ()):
            text += f" (default: {default})"
        # argparse's default None, never the real default: "not given" lets env and file fill in.
        action = "append" if name in _LISTS else "store"
        p.add_argument(f"--{name}", dest=_FIELD[name], metavar=metavar, help=text, action=action)
    return p


def _read_file(path: str, where: str) -> tuple[dict[str, tuple[Any, str]], dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    raw: dict[str, tuple[Any, str]] = {}
    table = data.pop("plugins", {})  # the settings tables, not an option
    for key, value in data.items():
        if (name := key.replace("_", "-")) not in _OPTIONS:
            raise ConfigError(f"{path}: unknown key {key!r} (keys are the flag names)")
        if name in raw:
            raise ConfigError(f"{path}: {key!r} is given twice, with dashes and with underscores")
        raw[name] = (value, f"{key} in {path}")
    if not isinstance(table, dict):
        raise ConfigError(f'plugins in {path}: must be tables like [plugins."module:Class"]')
    for name, settings in table.items():
        where = f'[plugins."{name}"] in {path}'
        if not _PLUGIN.fullmatch(name):
            raise ConfigError(
                f"{where}: settings tables are keyed by module:Class; {_entry_point_hint(name)}"
            )
        if not isinstance(settings, dict):
            raise ConfigError(f"{where}: must be a table of settings (got {settings!r})")
    return raw, table


def _entry_point_hint(name: str) -> str:
    """What to write instead of an entry point's name (the one place config reads metadata)."""
    from importlib import metadata

    for ep in metadata.entry_points(group="hubbub.actors", name=name):
        return f'the entry point {name!r} is [plugins."{ep.value.replace(" ", "")}"]'
    return f"no installed hubbub.actors entry point is named {name!r} either"


def load_config(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Build the Config from flags, environment and TOML file; raise ConfigError if bad."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    # Empty variables count as unset: `HUBBUB_REDIS=` in a compose file means "no Redis".
    env = {k: v for k, v in (os.environ if environ is None else environ).items() if v != ""}
    path, where = args.config, "--config"
    if path is None:
        path, where = env.get("HUBBUB_CONFIG"), "HUBBUB_CONFIG"
    raw, settings = _read_file(path, where) if path is not None else ({}, {})
    for name in _OPTIONS:  # each layer overwrites the one below it
        if (var := "HUBBUB_" + name.upper().replace("-", "_")) in env:
            raw[name] = (env[var], var)
        if (flag := getattr(args, _FIELD[name])) is not None:
            raw[name] = (flag, f"--{name}")
    values = {}
    for name, (value, src) in raw.items():
        try:
            values[_FIELD[name]] = _OPTIONS[name][0](value)
        except ValueError as e:
            raise ConfigError(f"{src}: {e}") from None
    cfg = Config(**values, plugin_settings=settings, config=path)
    if cfg.workers > 1 and cfg.redis is None:
        why = "processes share rooms only through Redis"
        raise ConfigError(f"--workers > 1 needs --redis: {why} (from {raw['workers'][1]})")
    if cfg.auth_secret is not None and cfg.auth_public_key is not None:
        raise ConfigError("--auth-secret and --auth-public-key: give one of them")
    if cfg.auth_secret is not None and len(cfg.auth_secret.encode()) < 32:
        # RFC 7518 section 3.2: an HMAC key at least as long as the hash (HS256: 32 bytes).
        raise ConfigError(
            f"{raw['auth-secret'][1]}: must be at least 32 bytes (RFC 7518 section 3.2)"
        )
    if (cfg.certfile is None) != (cfg.keyfile is None):
        given, missing = ("certfile", "keyfile") if cfg.certfile else ("keyfile", "certfile")
        raise ConfigError(f"--{given} needs --{missing}, TLS needs both (from {raw[given][1]})")
    return cfg
