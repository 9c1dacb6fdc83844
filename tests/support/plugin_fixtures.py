"""Plugins defined by the tests, and a tiny installed distribution for the entry-point test.

The server process imports these as ``tests.support.plugin_fixtures:Name`` (it runs from the
repository root), the in-process tests import them directly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hubbub.plugin import PluginActor
from hubbub.testing import Do

__all__ = [
    "Do",
    "Recorder",
    "Echo",
    "Boom",
    "Sleepy",
    "FailsToStart",
    "NotAPlugin",
    "make_distribution",
]


class Recorder(PluginActor):
    """Hears everything: every room, every user; writes each hook call down (``calls``, and
    ``seen`` in /debug/actors).  A dm ``dm NICK TEXT`` makes it dm NICK back."""

    watch_all_rooms = True
    defaults = {"nick": "recorder"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[Any, ...]] = []

    def on_started(self) -> None:
        self.calls.append(("started",))

    def on_room_message(self, room: str, nick: str, text: str, seq: int) -> None:
        self.calls.append(("message", room, nick, text, seq))

    def on_presence(self, room: str, event: str, nick: str) -> None:
        self.calls.append(("presence", room, event, nick))

    def on_joined(self, room: str, members: list[str]) -> None:
        self.calls.append(("joined", room, members))

    def on_user_connected(self, session: str) -> None:
        self.calls.append(("connected", session))

    def on_profile(self, session: str, nick: str) -> None:
        self.calls.append(("profile", session, nick))

    def on_user_disconnected(self, session: str, nick: str | None, reason: str) -> None:
        self.calls.append(("disconnected", session, nick, reason))

    def on_timer(self, name: str) -> None:
        self.calls.append(("timer", name))

    def on_dm(self, sender: str, text: str) -> None:
        self.calls.append(("dm", sender, text))
        verb, _, rest = text.partition(" ")
        if verb == "dm":
            to, _, body = rest.partition(" ")
            self.dm(to, body)

    def describe_fields(self) -> dict[str, Any]:
        seen = [" ".join(str(x) for x in call) for call in self.calls[-50:]]
        return {**super().describe_fields(), "seen": seen}


class Echo(PluginActor):
    """A member of its rooms that repeats every message with a prefix."""

    defaults = {"nick": "echo", "rooms": ["lobby"], "prefix": "echo: "}

    def on_room_message(self, room: str, nick: str, text: str, seq: int) -> None:
        self.say(room, self.settings["prefix"] + text)


class Boom(PluginActor):
    """Raises in its hook when someone says ``boom``; otherwise counts what it hears."""

    watch_all_rooms = True
    max_restarts = 2
    restart_window = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.heard = 0

    def on_room_message(self, room: str, nick: str, text: str, seq: int) -> None:
        if text == "boom":
            raise RuntimeError("boom, as asked")
        self.heard += 1

    def describe_fields(self) -> dict[str, Any]:
        return {**super().describe_fields(), "heard": self.heard}


class Sleepy(PluginActor):
    """Takes ``delay`` seconds over every message (time.sleep: a gevent sleep once patched)."""

    watch_all_rooms = True
    defaults = {"delay": 1.0}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.heard = 0

    def on_room_message(self, room: str, nick: str, text: str, seq: int) -> None:
        time.sleep(self.settings["delay"])
        self.heard += 1

    def describe_fields(self) -> dict[str, Any]:
        return {**super().describe_fields(), "heard": self.heard}


class FailsToStart(PluginActor):
    """Its on_started raises, as a plugin whose database is down would."""

    def on_started(self) -> None:
        raise ConnectionError("cannot reach db.example:5432")


class NotAPlugin:
    """A class that is not a PluginActor."""


# --- a tiny installed distribution ------------------------------------------------------

GREETER_MODULE = '''\
from hubbub.plugin import PluginActor


class Greeter(PluginActor):
    """Installed from a distribution: greets whoever joins its rooms."""

    defaults = {"nick": "greeter", "rooms": ["lobby"]}

    def on_presence(self, room, event, nick):
        if event == "join":
            self.say(room, f"hello {nick}, from an entry point")
'''


def make_distribution(root: Path) -> Path:
    """Write an installed distribution with a ``hubbub.actors`` entry point under ``root``;
    return the directory to put on PYTHONPATH (importlib.metadata finds its dist-info there)."""
    site = root / "site"
    info = site / "hubbub_greeter-1.0.dist-info"
    info.mkdir(parents=True)
    (site / "hubbub_greeter.py").write_text(GREETER_MODULE)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hubbub-greeter\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[hubbub.actors]\ngreeter = hubbub_greeter:Greeter\n")
    (info / "top_level.txt").write_text("hubbub_greeter\n")
    return site
