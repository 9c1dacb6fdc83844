"""hubbub.config: docs/operations.md "Running", the options table and its precedence rules."""

import dataclasses
import pickle
from pathlib import Path

import pytest

from hubbub.config import Config, ConfigError, load_config


def toml(tmp_path: Path, text: str) -> str:
    """Write a TOML file and return its path as a string."""
    path = tmp_path / "hubbub.toml"
    path.write_text(text)
    return str(path)


def error_of(argv: list[str], environ: dict[str, str] | None = None) -> str:
    """The ConfigError message load_config raises for these inputs."""
    with pytest.raises(ConfigError) as info:
        load_config(argv, environ={} if environ is None else environ)
    return str(info.value)


class TestDefaults:
    """docs/operations.md "Running": the default column of the options table."""

    def test_defaults_equal_the_contract_table(self):
        """With no flag, env var or file every option has the contract's default."""
        cfg = load_config([], environ={})
        assert cfg == Config()
        got = dataclasses.asdict(cfg)
        contract = {
            "host": "127.0.0.1",
            "port": 8080,
            "hello_timeout": 5.0,
            "ping_interval": 30.0,
            "pong_timeout": 120.0,
            "profile_timeout": 300.0,
            "max_session": 43200.0,
            "admin_token": None,
            "history": 100,
            "max_message": 65536,
            "redis": None,
            "workers": 1,
            "max_backlog": 1048576,
            "rate": 20.0,
            "burst": 40,
            "max_connections": 10000,
            "allowed_origins": None,
            "certfile": None,
            "keyfile": None,
            "store": None,
            "log_format": "text",
            "plugins": (),
            "plugin_settings": {},
            "config": None,
        }
        # Extensions (the options after the contract's table) are checked where they are used.
        assert {k: got[k] for k in contract} == contract

    def test_extension_defaults(self):
        """The options hubbub adds beyond the contract have nginx-like defaults."""
        cfg = load_config([], environ={})
        assert (cfg.header_timeout, cfg.keepalive_timeout, cfg.max_header_bytes) == (
            60.0,
            75.0,
            32768,
        )

    def test_gate_and_admin_defaults(self):
        """The accept gate's and admin rules' options: nginx-like deadlines, caps under the fd limit."""
        cfg = load_config([], environ={})
        assert (cfg.tls_handshake_timeout, cfg.body_timeout) == (60.0, 60.0)
        assert (cfg.max_sockets, cfg.admin_reserve, cfg.max_pending_per_ip) == (0, 32, 1000)
        assert cfg.admin_hosts == ()

    def test_admin_hosts_are_names(self):
        """--admin-hosts takes comma-separated host names (lower-cased), not URLs."""
        cfg = load_config(["--admin-hosts", "Chat.Example.com,10.0.0.5,[::1]"], environ={})
        assert cfg.admin_hosts == ("chat.example.com", "10.0.0.5", "[::1]")
        with pytest.raises(ConfigError, match="--admin-hosts"):
            load_config(["--admin-hosts", "https://chat.example.com"], environ={})

    def test_timeouts_use_the_welcome_frame_names(self):
        """`timeouts` maps the five welcome names to the configured durations."""
        cfg = load_config(["--hello-timeout", "1", "--max-session", "9"], environ={})
        assert cfg.timeouts == {
            "hello": 1.0,
            "ping": 30.0,
            "pong": 120.0,
            "profile": 300.0,
            "session": 9.0,
        }

    def test_config_is_frozen_hashable_and_picklable(self, tmp_path):
        """A Config cannot be changed, can be a dict key and pickles (for worker processes)."""
        path = toml(tmp_path, '[plugins."a:B"]\nx = 1\n')
        cfg = load_config(["--config", path], environ={})
        with pytest.raises(dataclasses.FrozenInstanceError):
            cfg.port = 1  # type: ignore[misc]  # frozen dataclass: the test checks the assignment fails
        assert hash(cfg) == hash(dataclasses.replace(cfg, plugin_settings={}))
        assert pickle.loads(pickle.dumps(cfg)) == cfg

    def test_repr_hides_secrets(self):
        """The admin token and the Redis URL (which may hold a password) stay out of repr."""
        cfg = load_config(["--admin-token", "s3cret", "--redis", "redis://:pw@h/0"], environ={})
        assert "s3cret" not in repr(cfg) and "pw@" not in repr(cfg)

    def test_help_exits_0(self, capsys):
        """--help prints the usage for prog "hubbub" with the contract's meanings, then exits 0."""
        with pytest.raises(SystemExit) as info:
            load_config(["--help"], environ={})
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: hubbub")
        assert "no hello this long after the socket opened" in out
        assert "--plugin MODULE:CLASS" in out


class TestPrecedence:
    """docs/operations.md "Running": flag beats env beats file beats default."""

    @pytest.mark.parametrize(
        ("flag", "env", "file", "expected"),
        [
            (True, True, True, 1003),
            (False, True, True, 1002),
            (False, False, True, 1001),
            (False, False, False, 8080),
            (True, False, True, 1003),
            (True, True, False, 1003),
        ],
    )
    def test_flag_beats_env_beats_file_beats_default(self, tmp_path, flag, env, file, expected):
        """Each layer that sets --port wins over every layer below it."""
        argv = ["--port", "1003"] if flag else []
        environ = {"HUBBUB_PORT": "1002"} if env else {}
        if file:
            argv += ["--config", toml(tmp_path, "port = 1001\n")]
        assert load_config(argv, environ=environ).port == expected

    def test_config_file_from_env(self, tmp_path):
        """HUBBUB_CONFIG names the TOML file when --config is absent."""
        path = toml(tmp_path, "history = 7\n")
        cfg = load_config([], environ={"HUBBUB_CONFIG": path})
        assert cfg.history == 7 and cfg.config == path

    def test_config_flag_beats_config_env(self, tmp_path):
        """--config wins over HUBBUB_CONFIG, like every other flag."""
        path = toml(tmp_path, "history = 7\n")
        environ = {"HUBBUB_CONFIG": str(tmp_path / "missing.toml")}
        assert load_config(["--config", path], environ=environ).history == 7

    def test_env_names_are_upper_case_with_underscores(self):
        """HUBBUB_<NAME>: upper case, '-' becomes '_'."""
        environ = {
            "HUBBUB_HELLO_TIMEOUT": "2",
            "HUBBUB_ADMIN_TOKEN": "t",
            "HUBBUB_LOG_FORMAT": "json",
        }
        cfg = load_config([], environ=environ)
        assert (cfg.hello_timeout, cfg.admin_token, cfg.log_format) == (2.0, "t", "json")

    def test_empty_env_values_count_as_unset(self, tmp_path):
        """HUBBUB_REDIS= (empty) leaves the lower layer's value, here the default."""
        assert load_config([], environ={"HUBBUB_REDIS": "", "HUBBUB_PORT": ""}).port == 8080

    def test_unrelated_env_is_ignored(self):
        """Variables without the HUBBUB_ prefix do not configure anything."""
        assert load_config([], environ={"PORT": "1", "HOST": "x"}) == Config()


class TestValues:
    """docs/operations.md "Running": durations, TOML keys, plugins."""

    def test_fractional_durations(self, tmp_path):
        """Durations are seconds and may be fractional, from any layer."""
        path = toml(tmp_path, "max_session = 1.5\nprofile-timeout = 2\n")
        environ = {"HUBBUB_PING_INTERVAL": "0.25"}
        cfg = load_config(["--hello-timeout", "0.5", "--config", path], environ=environ)
        assert cfg.timeouts == {
            "hello": 0.5,
            "ping": 0.25,
            "pong": 120.0,
            "profile": 2.0,
            "session": 1.5,
        }
        assert isinstance(cfg.profile_timeout, float)

    def test_toml_keys_with_dashes_and_underscores(self, tmp_path):
        """TOML keys are the flag names, spelled with '-' or '_'."""
        path = toml(tmp_path, 'hello-timeout = 2\npong_timeout = 3.5\nlog-format = "json"\n')
        cfg = load_config(["--config", path], environ={})
        assert (cfg.hello_timeout, cfg.pong_timeout, cfg.log_format) == (2.0, 3.5, "json")

    def test_toml_key_given_both_ways_is_refused(self, tmp_path):
        """The same option spelled with '-' and '_' in one file is ambiguous."""
        path = toml(tmp_path, "history = 1\nmax-message = 200\nmax_message = 300\n")
        assert "max_message" in error_of(["--config", path])

    def test_plugin_flag_is_repeatable(self):
        """--plugin may be given several times; order kept, duplicates dropped."""
        argv = ["--plugin", "a.b:C", "--plugin", "d:E.F", "--plugin", "a.b:C"]
        assert load_config(argv, environ={}).plugins == ("a.b:C", "d:E.F")

    def test_plugin_list_in_toml(self, tmp_path):
        """`plugin` in TOML is a list of specs, or a single string."""
        path = toml(tmp_path, 'plugin = ["a:B", "c:D"]\n')
        assert load_config(["--config", path], environ={}).plugins == ("a:B", "c:D")
        path = toml(tmp_path, 'plugin = "a:B"\n')
        assert load_config(["--config", path], environ={}).plugins == ("a:B",)

    def test_plugin_comma_list_in_env(self):
        """HUBBUB_PLUGIN is a comma-separated list; spaces around items are ignored."""
        cfg = load_config([], environ={"HUBBUB_PLUGIN": "a:B, c.d:E"})
        assert cfg.plugins == ("a:B", "c.d:E")

    def test_plugin_flag_replaces_env_list(self):
        """Precedence applies to the whole list: --plugin replaces HUBBUB_PLUGIN."""
        cfg = load_config(["--plugin", "x:Y"], environ={"HUBBUB_PLUGIN": "a:B"})
        assert cfg.plugins == ("x:Y",)

    def test_plugin_settings_from_toml_tables(self, tmp_path):
        """[plugins."module:Class"] tables become settings dicts keyed by the spec."""
        path = toml(
            tmp_path,
            'plugin = ["echo.bot:EchoBot"]\n'
            '[plugins."echo.bot:EchoBot"]\nprefix = "!"\nrooms = ["lobby"]\n'
            '[plugins."other:Thing"]\nlimit = 3\n',
        )
        cfg = load_config(["--config", path], environ={})
        assert cfg.plugin_settings == {
            "echo.bot:EchoBot": {"prefix": "!", "rooms": ["lobby"]},
            "other:Thing": {"limit": 3},
        }

    def test_allowed_origins(self):
        """Comma-separated origins become a lower-case tuple; '*' stands alone."""
        argv = [
            "--allowed-origins",
            "https://Chat.Example.com, http://localhost:8080,http://[::1]:80",
        ]
        cfg = load_config(argv, environ={})
        assert cfg.allowed_origins == (
            "https://chat.example.com",
            "http://localhost:8080",
            "http://[::1]:80",
        )
        assert load_config(["--allowed-origins", "*"], environ={}).allowed_origins == ("*",)

    def test_boundaries_that_are_allowed(self, tmp_path):
        """Port 0, history 0, max-connections 0, the max-message limits and TLS pairs are fine."""
        cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        cert.write_text("c")
        key.write_text("k")
        argv = ["--port", "0", "--history", "0", "--max-connections", "0", "--max-message", "125"]
        argv += ["--certfile", str(cert), "--keyfile", str(key), "--workers", "4"]
        cfg = load_config(argv, environ={"HUBBUB_REDIS": "rediss://r:6380/0"})
        assert (cfg.port, cfg.history, cfg.max_connections, cfg.max_message) == (0, 0, 0, 125)
        assert (cfg.certfile, cfg.keyfile, cfg.workers) == (str(cert), str(key), 4)
        assert load_config(["--max-message", str(64 * 2**20)], environ={}).max_message == 64 * 2**20
        assert load_config(["--redis", "unix:///run/redis.sock"], environ={}).redis


class TestValidation:
    """Every bad value is a ConfigError naming the option and where it came from."""

    @pytest.mark.parametrize(
        ("argv", "named"),
        [
            (["--hello-timeout", "0"], "--hello-timeout"),
            (["--ping-interval", "-1"], "--ping-interval"),
            (["--pong-timeout", "soon"], "--pong-timeout"),
            (["--profile-timeout", "inf"], "--profile-timeout"),
            (["--max-session", "nan"], "--max-session"),
            (["--port", "65536"], "--port"),
            (["--port", "-1"], "--port"),
            (["--port", "80.5"], "--port"),
            (["--history", "-1"], "--history"),
            (["--max-message", "124"], "--max-message"),
            (["--max-message", str(64 * 2**20 + 1)], "--max-message"),
            (["--workers", "0"], "--workers"),
            (["--max-backlog", "0"], "--max-backlog"),
            (["--rate", "0"], "--rate"),
            (["--burst", "0"], "--burst"),
            (["--max-connections", "-1"], "--max-connections"),
            (["--log-format", "xml"], "--log-format"),
            (["--redis", "http://localhost:6379"], "--redis"),
            (["--admin-token", ""], "--admin-token"),
            (["--allowed-origins", "*,https://a.example"], "--allowed-origins"),
            (["--allowed-origins", "chat.example.com"], "--allowed-origins"),
            (["--allowed-origins", "https://chat.example.com/"], "--allowed-origins"),
            (["--allowed-origins", ","], "--allowed-origins"),
            (["--plugin", "just_a_module"], "--plugin"),
            (["--plugin", "a:B", "--plugin", "a/b:C"], "--plugin"),
            (["--certfile", "/nonexistent/cert.pem", "--keyfile", "/nonexistent/k"], "--certfile"),
        ],
    )
    def test_bad_flag_value(self, argv, named):
        """A bad flag value raises ConfigError naming the flag."""
        assert error_of(argv).startswith(named + ":")

    def test_bad_env_value_names_the_variable(self):
        """HUBBUB_PORT=abc raises ConfigError naming HUBBUB_PORT."""
        message = error_of([], {"HUBBUB_PORT": "abc"})
        assert message.startswith("HUBBUB_PORT:") and "'abc'" in message

    def test_bad_file_value_names_key_and_file(self, tmp_path):
        """A bad value in the TOML file names the key and the file."""
        path = toml(tmp_path, "hello_timeout = 0\n")
        message = error_of(["--config", path])
        assert "hello_timeout" in message and path in message

    @pytest.mark.parametrize(
        "text", ["port = true\n", 'port = "x"\n', "port = 1.5\n", "rate = false\n"]
    )
    def test_wrong_toml_types(self, tmp_path, text):
        """TOML booleans and wrong types are not numbers (true is not port 1)."""
        path = toml(tmp_path, text)
        assert path in error_of(["--config", path])

    def test_unknown_toml_key(self, tmp_path):
        """An unknown key in the file is refused and named."""
        path = toml(tmp_path, "port = 1\nhello-timout = 2\n")
        assert "'hello-timout'" in error_of(["--config", path])

    def test_config_key_in_file_is_unknown(self, tmp_path):
        """A config file cannot point at another config file."""
        path = toml(tmp_path, 'config = "other.toml"\n')
        assert "'config'" in error_of(["--config", path])

    def test_bad_toml(self, tmp_path):
        """A file that is not TOML is a ConfigError naming the file."""
        path = toml(tmp_path, "port = = 1\n")
        assert "not valid TOML" in error_of(["--config", path])

    def test_missing_config_file(self, tmp_path):
        """A --config or HUBBUB_CONFIG file that does not exist is a ConfigError."""
        missing = str(tmp_path / "nope.toml")
        assert error_of(["--config", missing]).startswith("--config:")
        assert error_of([], {"HUBBUB_CONFIG": missing}).startswith("HUBBUB_CONFIG:")

    @pytest.mark.parametrize(
        "text", ['plugins = "a:B"\n', "[plugins.nocolon]\nx = 1\n", '[plugins]\n"a:B" = 1\n']
    )
    def test_bad_plugin_tables(self, tmp_path, text):
        """`plugins` must hold tables named like "module:Class"."""
        assert "plugins" in error_of(["--config", toml(tmp_path, text)])

    def test_workers_need_redis(self):
        """--workers > 1 without --redis is refused: processes could not share rooms."""
        message = error_of(["--workers", "2"])
        assert message.startswith("--workers > 1 needs --redis")
        assert load_config(["--workers", "2", "--redis", "redis://h"], environ={}).workers == 2

    def test_workers_need_redis_names_env_source(self):
        """The refusal says where the worker count came from."""
        assert "HUBBUB_WORKERS" in error_of([], {"HUBBUB_WORKERS": "3"})

    @pytest.mark.parametrize("given", ["certfile", "keyfile"])
    def test_tls_files_come_in_pairs(self, tmp_path, given):
        """--certfile without --keyfile (or the reverse) is refused."""
        path = tmp_path / "x.pem"
        path.write_text("x")
        assert error_of([f"--{given}", str(path)]).startswith(f"--{given} needs")

    def test_unknown_flag_is_a_config_error(self):
        """An unknown flag raises ConfigError instead of exiting."""
        assert "--bogus" in error_of(["--bogus"])

    def test_flag_without_value_is_a_config_error(self):
        """A flag missing its value raises ConfigError instead of exiting."""
        assert "--port" in error_of(["--port"])

    def test_flag_prefixes_are_not_accepted(self):
        """Abbreviated flags are refused, so adding a flag never breaks a command line."""
        assert "--hello" in error_of(["--hello", "1"])

    def test_redis_url_is_not_echoed(self):
        """The refusal of a bad Redis URL does not repeat it: it may hold a password."""
        assert "hunter2" not in error_of(["--redis", "http://:hunter2@h"])


class TestDisablePlugin:
    """--disable-plugin NAME (docs/operations.md): repeatable, env comma list, TOML list."""

    def test_flag_env_and_file(self, tmp_path):
        """Like --plugin: flag repeatable, HUBBUB_DISABLE_PLUGIN comma-separated, `disable_plugin` in TOML."""
        assert load_config(
            ["--disable-plugin", "greeter", "--disable-plugin", "a.b:C"], environ={}
        ).disable_plugins == ("greeter", "a.b:C")
        assert load_config([], environ={"HUBBUB_DISABLE_PLUGIN": "x,y"}).disable_plugins == (
            "x",
            "y",
        )
        path = toml(tmp_path, 'disable_plugin = ["greeter"]\n')
        assert load_config(["--config", path], environ={}).disable_plugins == ("greeter",)

    def test_a_name_with_spaces_is_refused(self):
        """A name that cannot be an entry point's is a ConfigError naming the flag."""
        assert error_of(["--disable-plugin", "two words"]).startswith("--disable-plugin:")

    def test_settings_named_after_no_entry_point(self, tmp_path):
        """[plugins."nocolon"] says tables are keyed by module:Class and no entry point has that name."""
        message = error_of(["--config", toml(tmp_path, '[plugins."nocolon"]\nx = 1\n')])
        assert "settings tables are keyed by module:Class" in message
        assert "no installed hubbub.actors entry point is named 'nocolon'" in message


class TestBudgetAndAuthOptions:
    """The options of issue 15's budgets and identity (docs/operations.md)."""

    def test_defaults(self):
        c = load_config([], {})
        assert (c.info_bytes, c.info_depth, c.history_bytes, c.history_total, c.joined_bytes) == (
            2048,
            4,
            1 << 20,
            64 << 20,
            256 << 10,
        )
        assert (c.max_rooms_per_user, c.max_rooms, c.dm_rate, c.dm_bytes, c.nick_grace) == (
            128,
            10000,
            10.0,
            65536,
            30.0,
        )
        assert c.auth_secret is None and c.auth_public_key is None and c.auth_mode == "required"

    def test_env_and_flags(self):
        c = load_config(
            ["--nick-grace", "0", "--auth-mode", "optional"], {"HUBBUB_MAX_ROOMS_PER_USER": "5"}
        )
        assert (c.nick_grace, c.auth_mode, c.max_rooms_per_user) == (0.0, "optional", 5)

    def test_short_secret_and_both_keys_are_refused(self, tmp_path):
        assert "32 bytes" in error_of(["--auth-secret", "short"])
        pem = tmp_path / "k.pem"
        pem.write_text("x")
        assert "one of them" in error_of(["--auth-secret", "s" * 32, "--auth-public-key", str(pem)])
        assert "required" in error_of(["--auth-mode", "maybe"])

    def test_the_secret_is_not_in_the_repr(self):
        assert "s" * 32 not in repr(load_config(["--auth-secret", "s" * 32], {}))
