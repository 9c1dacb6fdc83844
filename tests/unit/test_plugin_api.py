"""The extension API (hubbub.plugin, actors/plugins/, docs/extending.md) on a real in-process actor system.

Humans are real UserActors on a recording connection; plugins are the test plugins of
tests/support/plugin_fixtures.py.  Everything runs on gevent in this process, so a test reads a
plugin's attributes directly once the mailboxes settle.
"""

from __future__ import annotations

from typing import Any

import gevent
import pytest

from actors import ActorSystem, Timeouts
from actors.plugins.bot import BotActor
from actors.user import UserActor
from hubbub.config import Config
from hubbub.plugin import NickTaken, PluginActor, PluginSettingsError, kinds
from hubbub.plugins import PluginError, Wanted, load_class, start_plugins
from hubbub.testing import RecordingConn, act, connect_user, wait_for
from tests.support.plugin_fixtures import Boom, Echo, Recorder


def settle(seconds: float = 0.05) -> None:
    gevent.sleep(seconds)


@pytest.fixture
def system():
    s = ActorSystem(Timeouts())
    yield s
    s.shutdown(grace=1.0)
    settle()


def human(system: ActorSystem, nick: str, *rooms: str) -> RecordingConn:
    return connect_user(system, nick, *rooms)


def node_of(system: ActorSystem, plugin: PluginActor) -> dict[str, Any]:
    return next(n for n in system.describe()["actors"]["children"] if n["id"] == plugin.actor_id)


class TestRoomHooks:
    """docs/extending.md, "Hooks": on_room_message, on_presence, ordering."""

    def test_a_watcher_hears_every_room_message_with_room_nick_text_and_seq(self, system):
        """watch_all_rooms: on_room_message(room, nick, text, seq) for a room it is not a member of."""
        rec = system.plugins.start(Recorder)
        alice = human(system, "alice", "lobby")
        alice.send({"type": "say", "room": "lobby", "text": "hi", "id": "1"})
        wait_for(lambda: ("message", "lobby", "alice", "hi", 1) in rec.calls)
        assert "recorder" not in wait_for(lambda: alice.of("joined"))[0]["members"]

    def test_messages_of_one_room_reach_a_plugin_in_seq_order(self, system):
        """Per room, a plugin hears messages in strictly increasing seq order."""
        rec = system.plugins.start(Recorder)
        alice = human(system, "alice", "lobby")
        bob = human(system, "bob", "lobby")
        for i in range(30):
            (alice if i % 2 else bob).send({"type": "say", "room": "lobby", "text": str(i)})
        wait_for(lambda: len([c for c in rec.calls if c[0] == "message"]) == 30)
        seqs = [c[4] for c in rec.calls if c[0] == "message"]
        assert seqs == sorted(seqs) and len(set(seqs)) == 30

    def test_presence_join_leave_and_rename(self, system):
        """on_presence(room, event, nick) for joins, leaves, and a rename as leave + join."""
        rec = system.plugins.start(Recorder)
        alice = human(system, "alice", "lobby")
        alice.send({"type": "profile", "nick": "alicia"})
        alice.send({"type": "leave", "room": "lobby"})
        wait_for(lambda: ("presence", "lobby", "leave", "alicia") in rec.calls)
        presence = [c for c in rec.calls if c[0] == "presence"]
        assert presence == [
            ("presence", "lobby", "join", "alice"),
            ("presence", "lobby", "leave", "alice"),
            ("presence", "lobby", "join", "alicia"),
            ("presence", "lobby", "leave", "alicia"),
        ]

    def test_a_member_plugin_is_in_members_and_hears_its_rooms_but_not_itself(self, system):
        """A plugin with a nick and rooms is a member: in `members`, hears the room, never its own words."""
        echo = system.plugins.start(Echo)
        wait_for(lambda: echo.rooms == ["lobby"])
        alice = human(system, "alice", "lobby")
        assert alice.of("joined")[0]["members"] == ["alice", "echo"]
        alice.send({"type": "say", "room": "lobby", "text": "hello", "id": "1"})
        wait_for(lambda: [m for m in alice.of("message") if m["from"] == "echo"])
        settle(0.1)
        assert [(m["from"], m["text"]) for m in alice.of("message")] == [
            ("alice", "hello"),
            ("echo", "echo: hello"),
        ]
        assert echo.members("lobby") == ["alice", "echo"]


class TestUserHooks:
    """docs/extending.md, "Hooks": connected, profile set, disconnected with reason."""

    def test_lifecycle_of_a_connection(self, system):
        """on_user_connected(session), on_profile(session, nick), on_user_disconnected(session, nick, reason)."""
        rec = system.plugins.start(Recorder)
        alice = human(system, "alice")
        sid = alice.frames[0]["session"]
        alice.send({"type": "bye"})
        wait_for(lambda: ("disconnected", sid, "alice", "bye") in rec.calls)
        user_calls = [c for c in rec.calls if c[0] in ("connected", "profile", "disconnected")]
        assert user_calls == [
            ("connected", sid),
            ("profile", sid, "alice"),
            ("disconnected", sid, "alice", "bye"),
        ]

    def test_the_reason_of_a_kick_reaches_the_plugin(self, system):
        """A kicked user's disconnect carries reason `kicked`."""
        rec = system.plugins.start(Recorder)
        human(system, "alice")
        assert system.kick("alice", "test")
        wait_for(lambda: any(c[0] == "disconnected" and c[3] == "kicked" for c in rec.calls))

    def test_without_plugins_users_and_rooms_hold_empty_lists(self, system):
        """No plugin subscribed: rooms and users see an empty list and build no event at all."""
        human(system, "alice", "lobby")
        (user,) = system.users()
        (room,) = system.rooms()
        assert not user.watchers and not room.watchers

    def test_only_plugins_that_override_a_user_hook_are_told(self, system):
        """Echo overrides no user hook: it is not on the user list; Recorder is."""
        echo, rec = system.plugins.start(Echo), system.plugins.start(Recorder)
        assert system.plugins.user_watchers == [rec.actor_ref]
        assert system.plugins.room_watchers == [rec.actor_ref]
        assert echo.actor_ref not in system.plugins.user_watchers


class TestActions:
    """docs/extending.md, "Actions": say, dm, kick, join, leave, timers."""

    def test_dm_both_ways(self, system):
        """A user's dm to the plugin's nick reaches on_dm; the plugin's dm arrives as a `dm` frame."""
        rec = system.plugins.start(Recorder)
        alice = human(system, "alice")
        alice.send({"type": "dm", "to": "recorder", "text": "dm alice pong", "id": "d"})
        wait_for(lambda: alice.of("dm"))
        assert ("dm", "alice", "dm alice pong") in rec.calls
        assert alice.of("dm")[0]["from"] == "recorder" and alice.of("dm")[0]["text"] == "pong"
        assert alice.of("ack")[0]["id"] == "d"

    def test_kick_closes_the_user_with_4005_and_the_detail(self, system):
        """kick(nick, reason): bye `kicked` with the reason as message, close 4005."""
        rec = system.plugins.start(Recorder)
        alice = human(system, "alice")
        act(rec, lambda p: p.kick("alice", "enough"))
        wait_for(lambda: alice.closed)
        assert alice.of("bye") == [{"type": "bye", "reason": "kicked", "message": "enough"}]
        assert alice.closed == (4005, "kicked")

    def test_join_say_leave(self, system):
        """join(room) shows as presence; say(room, text) is a message with a seq; leave(room) too."""
        rec = system.plugins.start(Recorder)
        alice = human(system, "alice", "den")
        act(rec, lambda p: p.join("den"))
        wait_for(lambda: rec.rooms == ["den"])
        act(rec, lambda p: p.say("den", "I am here"))
        act(rec, lambda p: p.leave("den"))
        wait_for(lambda: len(alice.of("presence")) == 2)
        assert [(f["event"], f["nick"]) for f in alice.of("presence")] == [
            ("join", "recorder"),
            ("leave", "recorder"),
        ]
        (said,) = alice.of("message")
        assert (said["from"], said["text"], said["seq"]) == ("recorder", "I am here", 1)
        assert ("joined", "den", ["alice", "recorder"]) in rec.calls

    def test_say_in_a_room_it_is_not_in_is_dropped(self, system):
        """say() outside its rooms returns False and sends nothing."""
        rec = system.plugins.start(Recorder)
        results: list[bool] = []
        act(rec, lambda p: results.append(p.say("nowhere", "x")))
        wait_for(lambda: results)
        assert results == [False]

    def test_join_without_a_nick_is_an_error(self, system):
        """A member needs a nick: join() before any claim raises RuntimeError."""
        plugin = system.plugins.start(Recorder, {"nick": None})
        errors: list[BaseException] = []

        def try_join(p: PluginActor) -> None:
            try:
                p.join("lobby")
            except RuntimeError as exc:
                errors.append(exc)

        act(plugin, try_join)
        wait_for(lambda: errors)
        assert "claim a nick" in str(errors[0])

    def test_timers_fire_through_the_shared_scheduler(self, system):
        """set_timer arms at the SchedulerActor (it shows as pending there); on_timer(name) when due."""
        rec = system.plugins.start(Recorder)
        act(rec, lambda p: p.set_timer("tick", 0.5))
        act(rec, lambda p: p.set_timer("never", 0.1))
        act(rec, lambda p: p.cancel_timer("never"))
        wait_for(lambda: [t["name"] for t in node_of(system, rec)["timers"]] == ["tick"])
        wait_for(lambda: len(system.scheduler.timers) == 1, what="the scheduler holds the timer")
        wait_for(lambda: ("timer", "tick") in rec.calls)
        settle(0.1)
        assert ("timer", "never") not in rec.calls
        assert node_of(system, rec)["timers"] == []

    def test_rearming_a_timer_replaces_it(self, system):
        """Arming the same name again moves the deadline; only the last one fires, once."""
        rec = system.plugins.start(Recorder)
        act(rec, lambda p: p.set_timer("t", 0.02))
        act(rec, lambda p: p.set_timer("t", 0.4))
        settle(0.15)
        assert ("timer", "t") not in rec.calls
        wait_for(lambda: ("timer", "t") in rec.calls)
        settle(0.1)
        assert rec.calls.count(("timer", "t")) == 1


class TestTreeAndSupervision:
    """docs/extending.md, "Isolation": the debug tree, restarts, giving up."""

    def test_a_plugin_is_a_child_of_the_node_with_its_own_fields(self, system):
        """/debug/actors: the plugin under the node, kind = class name, plus plugin/nick/rooms/restarts."""
        echo = system.plugins.start(Echo)
        wait_for(lambda: echo.rooms)
        node = node_of(system, echo)
        assert node["kind"] == "Echo" and node["id"] == "plugin:tests.support.plugin_fixtures:Echo"
        assert (node["plugin"], node["nick"], node["rooms"], node["restarts"]) == (
            "tests.support.plugin_fixtures:Echo",
            "echo",
            ["lobby"],
            0,
        )
        assert "state" not in node  # not a user

    def test_a_failing_hook_restarts_the_plugin_and_the_room_goes_on(self, system):
        """A hook that raises: the plugin restarts with fresh state; the room and its members carry on."""
        boom = system.plugins.start(Boom)
        alice = human(system, "alice", "lobby")
        bob = human(system, "bob", "lobby")
        alice.send({"type": "say", "room": "lobby", "text": "one"})
        wait_for(lambda: boom.heard == 1)
        alice.send({"type": "say", "room": "lobby", "text": "boom"})
        fresh = wait_for(lambda: [p for p in system.plugins.running() if p is not boom])[0]
        assert fresh.restarts == 1 and fresh.heard == 0
        assert system.plugins.room_watchers == [fresh.actor_ref]
        alice.send({"type": "say", "room": "lobby", "text": "two"})
        wait_for(lambda: fresh.heard == 1)
        assert [m["text"] for m in bob.of("message")] == ["one", "boom", "two"]
        assert system.counters.actor_failures["Boom"] == 1

    def test_a_restarted_member_gets_its_nick_and_rooms_back(self, system):
        """After a restart the plugin claims its nick again and rejoins its rooms."""

        class FragileEcho(Echo):
            def on_room_message(self, room, nick, text, seq):
                if text == "boom":
                    raise RuntimeError("fragile")
                super().on_room_message(room, nick, text, seq)

        echo = system.plugins.start(FragileEcho)
        wait_for(lambda: echo.rooms)
        alice = human(system, "alice", "lobby")
        alice.send({"type": "say", "room": "lobby", "text": "boom"})
        fresh = wait_for(
            lambda: [p for p in system.plugins.running() if p is not echo and p.rooms]
        )[0]
        assert fresh.nick == "echo"
        alice.send({"type": "say", "room": "lobby", "text": "again"})
        wait_for(lambda: [m for m in alice.of("message") if m["text"] == "echo: again"])
        events = [(f["event"], f["nick"]) for f in alice.of("presence")]
        assert events == [("leave", "echo"), ("join", "echo")]

    def test_after_too_many_failures_the_plugin_stays_stopped(self, system):
        """max_restarts failures within restart_window are restarted; one more and it is gone."""
        system.plugins.start(Boom)
        alice = human(system, "alice", "lobby")
        for _ in range(Boom.max_restarts + 1):
            alice.send({"type": "say", "room": "lobby", "text": "boom"})
            settle(0.05)
        wait_for(lambda: not system.plugins.running())
        assert "tests.support.plugin_fixtures:Boom" in system.plugins.given_up
        assert system.plugins.room_watchers == []
        alice.send({"type": "say", "room": "lobby", "text": "still here", "id": "x"})
        wait_for(lambda: [a for a in alice.of("ack") if a["id"] == "x"])


class TestSettings:
    """docs/extending.md, "Settings": defaults, overrides, errors at start-up."""

    def test_settings_override_defaults(self, system):
        """[plugins."module:Class"] values replace the class defaults."""
        echo = system.plugins.start(Echo, {"nick": "parrot", "rooms": ["den"], "prefix": "> "})
        wait_for(lambda: echo.rooms == ["den"])
        assert echo.nick == "parrot" and echo.settings["prefix"] == "> "

    @pytest.mark.parametrize(
        "settings, message",
        [
            ({"colour": "red"}, "unknown setting 'colour'"),
            ({"prefix": 3}, "setting 'prefix' must be str"),
            ({"nick": "not a nick"}, "setting 'nick' is not a valid nick"),
            ({"rooms": "lobby"}, "setting 'rooms' must be list"),
            ({"rooms": ["a room"], "nick": "x"}, "setting 'rooms' must be a list of room names"),
            ({"nick": None, "rooms": ["lobby"]}, "'rooms' needs a 'nick'"),
        ],
    )
    def test_bad_settings_fail_the_start(self, system, settings, message):
        """An unknown key or a value of the wrong type raises PluginSettingsError, and nothing is left in the tree."""
        with pytest.raises(PluginSettingsError, match=message):
            system.plugins.start(Echo, settings)
        assert not system.plugins.running()

    def test_an_int_is_a_float_but_a_bool_is_no_int(self, system):
        """TOML `delay = 1` fills a float setting; `true` does not fill an int one."""

        class Typed(PluginActor):
            defaults = {"delay": 1.5, "count": 2}

        assert system.plugins.start(Typed, {"delay": 1}).settings["delay"] == 1
        with pytest.raises(PluginSettingsError, match="'count' must be int"):
            system.plugins.start(type("Typed2", (Typed,), {}), {"count": True})


class TestLoader:
    """hubbub/plugins.py: which class a spec names; one-line errors."""

    def test_every_subclass_is_registered_as_a_kind(self):
        """The registry of kinds holds each PluginActor subclass under module:Class."""
        assert kinds()["tests.support.plugin_fixtures:Recorder"] is Recorder
        assert kinds()["actors.plugins.bot:BotActor"] is BotActor

    def test_load_class_imports_the_spec(self):
        """module:Class resolves to the class."""
        assert load_class(Wanted("tests.support.plugin_fixtures:Echo", "--plugin")) is Echo

    @pytest.mark.parametrize(
        "spec, message",
        [
            (
                "no_such_module_xyz:Thing",
                "cannot import: ModuleNotFoundError: No module named 'no_such_module_xyz'",
            ),
            ("tests.support.plugin_fixtures:Missing", "cannot import: AttributeError"),
            (
                "tests.support.plugin_fixtures:NotAPlugin",
                "is not a subclass of actors.plugin.PluginActor",
            ),
        ],
    )
    def test_load_errors_are_one_line(self, spec, message):
        """A spec that does not name a PluginActor: PluginError naming the plugin, on one line."""
        with pytest.raises(PluginError) as err:
            load_class(Wanted(spec, "--plugin"))
        assert message in str(err.value) and "\n" not in str(err.value)
        assert str(err.value).startswith(f"plugin {spec} (--plugin): ")

    def test_a_plugin_that_raises_while_starting_is_a_plugin_error(self, system):
        """on_started raising at start-up: PluginError with the exception on one line."""
        config = Config(plugins=("tests.support.plugin_fixtures:FailsToStart",))
        with pytest.raises(
            PluginError, match="failed to start: ConnectionError: cannot reach db.example:5432"
        ):
            start_plugins(system, config)

    def test_start_plugins_passes_each_its_settings(self, system):
        """config.plugin_settings[spec] reaches the plugin of that spec."""
        config = Config(
            plugins=("tests.support.plugin_fixtures:Echo",),
            plugin_settings={"tests.support.plugin_fixtures:Echo": {"nick": "parrot", "rooms": []}},
        )
        (echo,) = start_plugins(system, config)
        assert echo.settings["nick"] == "parrot"
        wait_for(lambda: echo.nick == "parrot")

    def test_a_user_actor_is_no_plugin(self):
        """Only PluginActor subclasses are kinds."""
        assert UserActor not in kinds().values()


class Ticker(PluginActor):
    """Arms a timer at its first start only; fails when told to (for restart tests)."""

    defaults = {"nick": "ticker"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ticks: list[str] = []

    def on_started(self) -> None:
        if self.restarts == 0:
            self.set_timer("tick", 0.3)

    def on_timer(self, name: str) -> None:
        self.ticks.append(name)


class TestOperatorTrust:
    """docs/extending.md, "When a plugin fails" and "Timers": what an operator can rely on."""

    def test_timers_survive_a_restart_with_their_deadline(self, system):
        """A timer armed before a failure is re-armed in the fresh incarnation, due when it was."""
        ticker = system.plugins.start(Ticker)
        wait_for(lambda: ticker.describe_fields()["timers"])
        due = ticker._timers["tick"][1]
        act(ticker, lambda p: 1 / 0)
        fresh = wait_for(lambda: [p for p in system.plugins.running() if p is not ticker])[0]
        wait_for(lambda: fresh.restarts == 1 and "tick" in fresh._timers)
        assert fresh._timers["tick"][1] == due
        wait_for(lambda: fresh.ticks == ["tick"], what="the surviving timer fires")
        assert ticker.ticks == []

    def test_a_plugin_that_gave_up_stays_visible_on_the_node_with_its_error(self, system):
        """After too many failures /debug/actors' node row says which plugin stopped, and why."""
        boom = system.plugins.start(Boom)
        for _ in range(Boom.max_restarts + 1):
            current = wait_for(lambda: system.plugins.running())[0]
            act(current, lambda p: p.on_room_message("lobby", "x", "boom", 1))
            wait_for(lambda current=current: current not in system.plugins.running())
        wait_for(lambda: not system.plugins.running())
        node = system.describe()["actors"]
        assert node["plugins_given_up"] == (
            "tests.support.plugin_fixtures:Boom: RuntimeError('boom, as asked')"
        )
        assert boom.actor_id not in {c["id"] for c in node["children"]}

    def test_a_taken_nick_fails_the_start_and_leaves_nothing(self, system):
        """Two plugins asking for one nick: the second start raises NickTaken; it is not in the tree."""
        system.plugins.start(Echo)
        parrot = type("Parrot", (Echo,), {})
        with pytest.raises(NickTaken, match="nick 'echo' is taken"):
            system.plugins.start(parrot)
        wait_for(lambda: len(system.plugins.running()) == 1)
        assert [p.nick for p in system.plugins.running()] == ["echo"]

    def test_a_taken_nick_at_start_up_is_a_plugin_error(self, system):
        """start_plugins: the one-line PluginError, like a bad setting."""
        human(system, "echo")
        config = Config(plugins=("tests.support.plugin_fixtures:Echo",))
        with pytest.raises(PluginError, match=r"failed to start: NickTaken: nick 'echo' is taken"):
            start_plugins(system, config)

    def test_in_a_cluster_a_taken_nick_is_a_standby_not_an_error(self, system):
        """shared_nicks (a --redis node): another node's copy holds the nick; this one runs without it."""
        human(system, "echo")
        system.plugins.shared_nicks = True
        echo = system.plugins.start(Echo)
        assert echo.nick is None and echo.rooms == []

    @pytest.mark.parametrize("delay", [float("nan"), float("inf"), -1, "1", True, None])
    def test_timer_delays_are_finite_seconds(self, system, delay):
        """set_timer refuses NaN, infinity, negatives and non-numbers with ValueError."""
        rec = system.plugins.start(Recorder)
        errors: list[BaseException] = []

        def arm(p: PluginActor) -> None:
            try:
                p.set_timer("t", delay)
            except ValueError as exc:
                errors.append(exc)

        act(rec, arm)
        wait_for(lambda: errors)
        assert "set_timer('t'" in str(errors[0]) and not rec._timers

    def test_a_zero_delay_fires_at_once(self, system):
        """0 seconds is a valid delay: due now."""
        rec = system.plugins.start(Recorder)
        act(rec, lambda p: p.set_timer("now", 0))
        wait_for(lambda: ("timer", "now") in rec.calls)


class TestDisabling:
    """--disable-plugin NAME: an installed entry point (or a module:Class) that does not start."""

    def entry_point(self, name: str, value: str) -> Any:
        from importlib.metadata import EntryPoint

        return EntryPoint(name, value, "hubbub.actors")

    def test_disabled_by_entry_point_name_or_spec(self, monkeypatch):
        """Both the entry point's name and its module:Class disable it; the others still run."""
        from hubbub import plugins as loader

        eps = [
            self.entry_point("greeter", "tests.support.plugin_fixtures:Echo"),
            self.entry_point("rec", "tests.support.plugin_fixtures:Recorder"),
        ]
        monkeypatch.setattr(loader.metadata, "entry_points", lambda group: eps)
        assert [w.spec for w in loader.wanted(Config())] == [
            "tests.support.plugin_fixtures:Echo",
            "tests.support.plugin_fixtures:Recorder",
        ]
        assert [w.spec for w in loader.wanted(Config(disable_plugins=("greeter",)))] == [
            "tests.support.plugin_fixtures:Recorder"
        ]
        assert [
            w.spec
            for w in loader.wanted(
                Config(disable_plugins=("tests.support.plugin_fixtures:Recorder",))
            )
        ] == ["tests.support.plugin_fixtures:Echo"]


class TestPublicNames:
    """docs/extending.md, "Import path": hubbub.plugin and hubbub.testing; the old path for one version."""

    def test_every_public_name_is_importable(self):
        """Each name in __all__ of the two public modules exists."""
        import hubbub.plugin
        import hubbub.testing

        for module in (hubbub.plugin, hubbub.testing):
            assert module.__all__ and all(hasattr(module, name) for name in module.__all__)

    def test_the_old_path_is_the_same_api(self):
        """`from actors.plugin import PluginActor` (deprecated) gives the very same classes."""
        import actors.plugin
        import hubbub.plugin

        assert actors.plugin.PluginActor is hubbub.plugin.PluginActor
        assert actors.plugin.PluginSettingsError is hubbub.plugin.PluginSettingsError
        assert actors.plugin.kinds is hubbub.plugin.kinds
