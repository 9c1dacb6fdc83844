"""Plugins end to end (issue "extend hubbub with new actor types"): loading, failures, isolation, the two examples.

Every test runs the real server process with ``--plugin`` (or TOML, or an entry point)
and talks to it over real sockets.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ..support.e2e import ROOT, Client, Server, walk
from ..support.plugin_fixtures import make_distribution

pytestmark = pytest.mark.e2e

BOT = "actors.plugins.bot:BotActor"
MODERATION = "actors.plugins.moderation:ModerationActor"


def until(client: Client, kind: str, timeout: float = 3.0, **fields: Any) -> dict[str, Any]:
    """Read frames until one of ``kind`` with ``fields``; the others are skipped."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        try:
            frame = client.recv(max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            raise AssertionError(f"no {kind} {fields} within {timeout} s; saw {seen}") from None
        if frame["type"] == kind and all(frame.get(k) == v for k, v in fields.items()):
            return frame
        seen.append(frame)


def say(client: Client, room: str, text: str) -> dict[str, Any]:
    """`say` and wait for its ack, whatever plugins send in between (greetings, warnings)."""
    client.send({"type": "say", "room": room, "text": text, "id": text})
    return until(client, "ack", id=text)


def plugin_nodes(server: Server) -> dict[str, dict[str, Any]]:
    """The node's plugin children by kind (they carry a `plugin` field)."""
    return {n["kind"]: n for n in server.actors()["children"] if "plugin" in n}


def toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "hubbub.toml"
    path.write_text(text)
    return str(path)


def start_fails(*flags: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the server expecting it not to start: (exit code, stdout, stderr)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "server.py", "--port", "0", *flags],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return proc.returncode, proc.stdout, proc.stderr


class TestLoading:
    """docs/operations.md "Running", `--plugin`: by flag, environment, TOML with settings, entry point."""

    def test_by_flag_the_plugin_runs_under_the_node(self):
        """--plugin module:Class: the actor is a child of the node in /debug/actors and a room member."""
        with (
            Server("--plugin", "tests.support.plugin_fixtures:Echo") as server,
            Client(server) as alice,
        ):
            alice.login("alice")
            assert alice.join("lobby")["members"] == ["alice", "echo"]
            alice.say("lobby", "hi")
            until(alice, "message", **{"from": "echo", "text": "echo: hi"})
            echo = plugin_nodes(server)["Echo"]
            assert echo["id"] == "plugin:tests.support.plugin_fixtures:Echo"
            assert (echo["nick"], echo["rooms"], echo["restarts"]) == ("echo", ["lobby"], 0)
            assert isinstance(echo["mailbox"], int) and echo["children"] == []

    def test_by_environment(self):
        """HUBBUB_PLUGIN (comma-separated) loads the same way."""
        env = {
            "HUBBUB_PLUGIN": "tests.support.plugin_fixtures:Echo,tests.support.plugin_fixtures:Recorder"
        }
        with Server(env=env) as server:
            assert sorted(plugin_nodes(server)) == ["Echo", "Recorder"]

    def test_by_toml_with_settings(self, tmp_path):
        """`plugin = [...]` in the file, settings from [plugins."module:Class"]."""
        config = toml(
            tmp_path,
            """
plugin = ["tests.support.plugin_fixtures:Echo"]

[plugins."tests.support.plugin_fixtures:Echo"]
nick = "parrot"
rooms = ["den"]
prefix = ">> "
""",
        )
        with Server("--config", config) as server, Client(server) as alice:
            alice.login("alice")
            assert alice.join("den")["members"] == ["alice", "parrot"]
            alice.say("den", "hi")
            until(alice, "message", **{"from": "parrot", "text": ">> hi"})

    def test_by_entry_point_of_an_installed_distribution(self, tmp_path):
        """A distribution with a `hubbub.actors` entry point adds its actor type with no flag at all."""
        site = make_distribution(tmp_path)
        with Server(env={"PYTHONPATH": str(site)}) as server, Client(server) as alice:
            assert plugin_nodes(server)["Greeter"]["plugin"] == "hubbub_greeter:Greeter"
            alice.login("alice")
            assert alice.join("lobby")["members"] == ["alice", "greeter"]
            until(
                alice, "message", **{"from": "greeter", "text": "hello alice, from an entry point"}
            )


class TestStartupFailures:
    """A plugin that fails to import or start stops the server at start-up: one line, exit 2."""

    @pytest.mark.parametrize(
        "flags, message",
        [
            (
                ["--plugin", "no_such_module_xyz:Thing"],
                "hubbub: error: plugin no_such_module_xyz:Thing (--plugin): cannot import: "
                "ModuleNotFoundError: No module named 'no_such_module_xyz'",
            ),
            (
                ["--plugin", "tests.support.plugin_fixtures:NotAPlugin"],
                "hubbub: error: plugin tests.support.plugin_fixtures:NotAPlugin (--plugin): "
                "<class 'tests.support.plugin_fixtures.NotAPlugin'> is not a subclass of actors.plugin.PluginActor",
            ),
            (
                ["--plugin", "tests.support.plugin_fixtures:FailsToStart"],
                "hubbub: error: plugin tests.support.plugin_fixtures:FailsToStart (--plugin): failed to start: "
                "ConnectionError: cannot reach db.example:5432",
            ),
        ],
    )
    def test_exit_2_with_one_clear_line(self, flags, message):
        """No listening line, no traceback: exactly one line on stderr, exit code 2."""
        code, out, err = start_fails(*flags)
        assert (code, out, err.splitlines()) == (2, "", [message])

    def test_a_module_that_raises_on_import(self, tmp_path):
        """Whatever the import raises is reported on the one line."""
        (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('missing API key')\n")
        code, out, err = start_fails(
            "--plugin", "broken_plugin:Thing", env={"PYTHONPATH": str(tmp_path)}
        )
        assert (code, out) == (2, "")
        assert err.splitlines() == [
            "hubbub: error: plugin broken_plugin:Thing (--plugin): cannot import: "
            "RuntimeError: missing API key"
        ]

    def test_a_bad_setting(self, tmp_path):
        """An unknown key in the plugin's settings table is a start failure naming the key."""
        config = toml(tmp_path, f'plugin = ["{BOT}"]\n[plugins."{BOT}"]\ngreetin = "hi"\n')
        code, out, err = start_fails("--config", config)
        assert (code, out) == (2, "")
        (line,) = err.splitlines()
        assert line.startswith(
            f"hubbub: error: plugin {BOT} (--plugin): failed to start: "
            "PluginSettingsError: unknown setting 'greetin'"
        )

    def test_a_broken_entry_point(self, tmp_path):
        """An installed entry point that does not import stops the server too, naming the distribution."""
        site = make_distribution(tmp_path)
        (site / "hubbub_greeter.py").write_text("import no_such_dependency_xyz\n")
        code, out, err = start_fails(env={"PYTHONPATH": str(site)})
        assert (code, out) == (2, "")
        assert err.splitlines() == [
            "hubbub: error: plugin hubbub_greeter:Greeter (entry point 'greeter' of hubbub-greeter): "
            "cannot import: ModuleNotFoundError: No module named 'no_such_dependency_xyz'"
        ]


class TestDisabling:
    """--disable-plugin NAME (docs/extending.md, "Loading"): the way out of a broken installed package."""

    def test_a_broken_entry_point_disabled_by_name_lets_the_server_start(self, tmp_path):
        """The error line names the entry point; --disable-plugin with that name and the node serves."""
        site = make_distribution(tmp_path)
        (site / "hubbub_greeter.py").write_text("import no_such_dependency_xyz\n")
        with (
            Server("--disable-plugin", "greeter", env={"PYTHONPATH": str(site)}) as server,
            Client(server) as alice,
        ):
            assert alice.login("alice")
            assert plugin_nodes(server) == {}

    def test_disabled_from_the_environment(self, tmp_path):
        """HUBBUB_DISABLE_PLUGIN works like every option's variable."""
        site = make_distribution(tmp_path)
        with Server(env={"PYTHONPATH": str(site), "HUBBUB_DISABLE_PLUGIN": "greeter"}) as server:
            assert plugin_nodes(server) == {}

    def test_settings_keyed_by_the_entry_point_name_say_which_key_to_write(self, tmp_path):
        """[plugins."greeter"] is refused at start-up with the module:Class it should be."""
        site = make_distribution(tmp_path)
        config = toml(tmp_path, '[plugins."greeter"]\nnick = "hi"\n')
        code, out, err = start_fails("--config", config, env={"PYTHONPATH": str(site)})
        assert (code, out) == (2, "")
        assert err.splitlines() == [
            f'hubbub: error: [plugins."greeter"] in {config}: settings tables are keyed by module:Class; '
            "the entry point 'greeter' is [plugins.\"hubbub_greeter:Greeter\"]"
        ]

    def test_a_taken_nick_stops_the_start(self, tmp_path):
        """Two plugins asking for one nick: exit 2 naming the second and the nick."""
        config = toml(
            tmp_path,
            f'plugin = ["{BOT}", "tests.support.plugin_fixtures:Echo"]\n'
            '[plugins."tests.support.plugin_fixtures:Echo"]\nnick = "bot"\n',
        )
        code, out, err = start_fails("--config", config)
        assert (code, out) == (2, "")
        assert err.splitlines() == [
            "hubbub: error: plugin tests.support.plugin_fixtures:Echo (--plugin): "
            "failed to start: NickTaken: nick 'bot' is taken"
        ]


class TestIsolation:
    """A plugin never takes rooms or users down, and never slows them."""

    def test_a_plugin_raising_in_a_hook_is_restarted_and_the_chat_goes_on(self):
        """Each failure restarts it (restarts counts up); past max_restarts it stays stopped; humans never notice."""
        server = Server("--plugin", "tests.support.plugin_fixtures:Boom")
        server.expect_tracebacks = True  # pykka logs the plugin's traceback
        with server, Client(server) as alice, Client(server) as bob:
            alice.login("alice", "lobby")
            bob.login("bob", "lobby")
            for n in (1, 2):
                say(alice, "lobby", "boom")
                until(bob, "message", text="boom")
                server.wait_for(
                    lambda n=n: plugin_nodes(server).get("Boom", {}).get("restarts") == n,
                    what=f"restart {n}",
                )
            say(alice, "lobby", "counted")
            server.wait_for(
                lambda: plugin_nodes(server)["Boom"]["heard"] == 1, what="the fresh one hears"
            )
            say(alice, "lobby", "boom")  # the 3rd failure within the window: given up
            server.wait_for(lambda: "Boom" not in plugin_nodes(server), what="stopped for good")
            # ... yet still shown in /debug, on the node's row, with its last error.
            assert server.actors()["plugins_given_up"] == (
                "tests.support.plugin_fixtures:Boom: RuntimeError('boom, as asked')"
            )
            assert say(alice, "lobby", "still chatting")["seq"] == 5
            until(bob, "message", text="still chatting")
            metrics = server.http("/metrics")[2].decode()
            assert re.search(r'^hubbub_actor_failures_total\{kind="Boom"\} 3', metrics, re.M)
        assert (
            "plugin tests.support.plugin_fixtures:Boom failed 3 times in 60 s: stopped"
            in server.stderr
        )

    def test_a_sleeping_plugin_does_not_delay_the_humans(self):
        """A plugin that takes 1 s per message lags on its own mailbox; 10 messages still reach bob at once."""
        with (
            Server("--plugin", "tests.support.plugin_fixtures:Sleepy") as server,
            Client(server) as alice,
            Client(server) as bob,
        ):
            alice.login("alice", "lobby")
            bob.login("bob", "lobby")
            until(alice, "presence", nick="bob")
            start = time.monotonic()
            for i in range(10):
                alice.send({"type": "say", "room": "lobby", "text": f"m{i}"})
            texts = [until(bob, "message")["text"] for _ in range(10)]
            elapsed = time.monotonic() - start
            assert texts == [f"m{i}" for i in range(10)]
            assert elapsed < 0.8, f"humans waited {elapsed:.2f} s behind a sleeping plugin"
            sleepy = plugin_nodes(server)["Sleepy"]
            assert sleepy["heard"] < 10 and sleepy["mailbox"] > 0  # it lags, alone


class TestBotExample:
    """docs/extending.md, "The bot": a member with a nick; greets; !help, !who, !uptime."""

    @pytest.fixture
    def server(self):
        with Server("--plugin", BOT) as srv:
            yield srv

    def test_the_bot_is_a_member_and_greets_joiners(self, server):
        """It shows in `members`; each joiner gets a greeting in the room; others see presence, then it."""
        with Client(server) as alice, Client(server) as bob:
            alice.login("alice")
            assert alice.join("lobby")["members"] == ["alice", "bot"]
            greeting = until(alice, "message", **{"from": "bot"})
            assert greeting["text"] == "Welcome, alice! Say !help to see what I answer."
            bob.login("bob")
            assert bob.join("lobby")["members"] == ["alice", "bob", "bot"]
            alice.expect("presence", event="join", nick="bob")
            alice.expect(
                "message",
                **{"from": "bot", "text": "Welcome, bob! Say !help to see what I answer."},
            )
            node = plugin_nodes(server)["BotActor"]
            assert (node["nick"], node["rooms"], node["greeted"]) == ("bot", ["lobby"], 2)

    def test_commands(self, server):
        """!help lists the commands, !who the room's members, !uptime the node's age."""
        with Client(server) as alice:
            alice.login("alice", "lobby")
            until(alice, "message", **{"from": "bot"})  # the greeting
            alice.say("lobby", "!help")
            assert "!who" in until(alice, "message", **{"from": "bot"})["text"]
            alice.say("lobby", "!who")
            assert until(alice, "message", **{"from": "bot"})["text"] == "In lobby: alice, bot (2)"
            alice.say("lobby", "!uptime")
            assert re.fullmatch(
                r"Up (\d+m )?\d+s\.", until(alice, "message", **{"from": "bot"})["text"]
            )
            alice.say("lobby", "just chatting")
            assert not [
                f for f in alice.pump(0.3) if f.get("from") == "bot"
            ]  # no command, no answer

    def test_the_bot_answers_a_dm(self, server):
        """A dm to the bot's nick is answered by dm."""
        with Client(server) as alice:
            alice.login("alice")
            alice.send({"type": "dm", "to": "bot", "text": "!uptime", "id": "d"})
            alice.expect("ack", id="d")
            assert until(alice, "dm", **{"from": "bot"})["text"].startswith("Up ")


class TestModerationExample:
    """docs/extending.md, "The moderator": repeats and banned words; warn first, then kick 4005."""

    @pytest.fixture
    def server(self, tmp_path):
        config = toml(
            tmp_path,
            f'''
plugin = ["{MODERATION}", "{BOT}"]

[plugins."{MODERATION}"]
repeat_limit = 3
repeat_window = 10
banned_words = ["spam"]
''',
        )
        with Server("--config", config) as srv:
            yield srv

    def test_repeating_a_message_warns_then_kicks(self, server):
        """3 times the same within 10 s: a dm warning from the moderator; 3 times again: kicked (4005, detail)."""
        with Client(server) as alice, Client(server) as bob:
            alice.login("alice", "lobby")
            bob.login("bob", "lobby")
            for _ in range(3):
                say(alice, "lobby", "buy my stuff")
            warning = until(alice, "dm", **{"from": "moderator"})
            assert warning["text"] == (
                "Warning (lobby): the same message 3 times in 10 s. Next time you will be kicked."
            )
            for _ in range(3):
                alice.send({"type": "say", "room": "lobby", "text": "buy my stuff"})
            code, reason, frames = alice.closed()
            assert (code, reason) == (4005, "kicked")
            assert frames[-1] == {
                "type": "bye",
                "reason": "kicked",
                "message": "the same message 3 times in 10 s (in lobby)",
            }
            until(bob, "presence", event="leave", nick="alice")
            assert say(bob, "lobby", "bob stays")["seq"] > 0
            node = plugin_nodes(server)["ModerationActor"]
            assert (node["warned"], node["kicked"]) == (1, 1)

    def test_a_banned_word_warns_then_kicks(self, server):
        """A word from the list: warning first, kick with the word as the detail next."""
        with Client(server) as alice:
            alice.login("alice", "lobby")
            say(alice, "lobby", "cheap SPAM here")
            assert (
                "the word 'spam' is not allowed here"
                in until(alice, "dm", **{"from": "moderator"})["text"]
            )
            alice.send({"type": "say", "room": "lobby", "text": "spam again"})
            code, _reason, frames = alice.closed()
            assert code == 4005
            assert frames[-1]["message"] == "the word 'spam' is not allowed here (in lobby)"

    def test_the_moderator_watches_without_being_a_member_and_spares_the_bot(self, server):
        """The moderator is not in `members`; the bot repeating its help 3 times is not kicked."""
        with Client(server) as alice:
            alice.login("alice")
            assert alice.join("lobby")["members"] == ["alice", "bot"]
            for text in ("!help", "!HELP please", "!help me"):  # alice herself never repeats
                alice.send({"type": "say", "room": "lobby", "text": text})
            frames = alice.pump(0.5)
            assert len([f for f in frames if f["type"] == "message" and f["from"] == "bot"]) >= 3
            assert not [f for f in frames if f["type"] in ("bye", "dm")]
            assert "BotActor" in plugin_nodes(server)
            users = [n for n in walk(server.actors()) if "state" in n]
            assert [u["nick"] for u in users] == ["alice"]


class TestTutorial:
    """docs/extending.md, "A new actor type in 30 lines": the code as printed."""

    def test_the_tutorial_plugin_works_as_written(self, tmp_path):
        """The doc's dice.py and its TOML, saved as the tutorial says: in both rooms, rolls, arms its timer."""
        text = (ROOT / "docs" / "extending.md").read_text()
        code = re.search(r"```python\n(.*?)```", text, re.S)
        config = re.search(r"```toml\n(.*?)```", text, re.S)
        assert code and config
        (tmp_path / "dice.py").write_text(code.group(1))
        (tmp_path / "hubbub.toml").write_text(config.group(1))
        with (
            Server(
                "--config", str(tmp_path / "hubbub.toml"), env={"PYTHONPATH": str(tmp_path)}
            ) as server,
            Client(server) as alice,
        ):
            alice.login("alice")
            assert alice.join("games")["members"] == ["alice", "dice"]
            say(alice, "games", "!roll 20")
            roll = re.fullmatch(
                r"alice rolls (\d+) \(d20\)", until(alice, "message", **{"from": "dice"})["text"]
            )
            assert roll and 1 <= int(roll.group(1)) <= 20
            node = plugin_nodes(server)["Dice"]
            assert (node["rooms"], node["rolls"], [t["name"] for t in node["timers"]]) == (
                ["games", "lobby"],
                1,
                ["tally"],
            )

    def test_the_testing_example_passes_as_written(self, tmp_path):
        """docs/extending.md, "Testing a plugin": the doc's test of dice.py, run by pytest as printed."""
        text = (ROOT / "docs" / "extending.md").read_text()
        dice, test = re.findall(r"```python\n(.*?)```", text, re.S)[:2]
        (tmp_path / "dice.py").write_text(dice)
        (tmp_path / "test_dice.py").write_text(test)
        (tmp_path / "conftest.py").write_text("from gevent import monkey\n\nmonkey.patch_all()\n")
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_dice.py"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "1 passed" in proc.stdout
