"""BotActor: a room member with a nick that greets joiners and answers three commands.

    python server.py --plugin actors.plugins.bot:BotActor

    [plugins."actors.plugins.bot:BotActor"]        # all optional; these are the defaults
    nick = "bot"                                   # shows in `members` and presence like anyone
    rooms = ["lobby"]                              # joined at start
    greeting = "Welcome, {nick}! Say !help to see what I answer."   # {nick}, {room}; "" = none

In its rooms it answers ``!help``, ``!who`` (the room's members) and ``!uptime`` (how
long the node has run); a dm gets the same answers.  A room it sits in never
retires (it is never empty), so history and ``seq`` there live as long as the node.

The answers are one pure function, :func:`answer`, tested without any actor.
"""

from __future__ import annotations

from typing import Any

from hubbub.plugin import PluginActor, PluginSettingsError

__all__ = ["BotActor", "answer", "format_duration", "HELP"]

HELP = (
    "I answer !help (this), !who (who is in this room) and !uptime (how long the server has run)."
)


def format_duration(seconds: float) -> str:
    """``3725`` → ``"1h 2m 5s"``; leading zero units are left out."""
    rest = max(0, int(seconds))
    parts: list[str] = []
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        n, rest = divmod(rest, size)
        if n or parts:
            parts.append(f"{n}{unit}")
    parts.append(f"{rest}s")
    return " ".join(parts)


def answer(text: str, room: str | None, members: list[str], uptime: float) -> str | None:
    """The bot's reply to ``text`` said in ``room`` (None: a dm), or None if it is no command."""
    words = text.split()
    command = words[0].lower() if words else ""
    if command == "!help":
        return HELP
    if command == "!who":
        if room is None:
            return "Ask !who in a room: I answer with who is there."
        return f"In {room}: {', '.join(members)} ({len(members)})"
    if command == "!uptime":
        return f"Up {format_duration(uptime)}."
    return None


class BotActor(PluginActor):
    defaults = {
        "nick": "bot",
        "rooms": ["lobby"],
        "greeting": "Welcome, {nick}! Say !help to see what I answer.",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:  # a bad template fails at start-up, not at the first join
            self.settings["greeting"].format(nick="n", room="r")
        except (KeyError, IndexError, ValueError) as exc:
            raise PluginSettingsError(
                f"setting 'greeting' is not a valid template: {exc!r}"
            ) from None
        self.answered = 0
        self.greeted = 0

    def on_room_message(self, room: str, nick: str, text: str, seq: int) -> None:
        reply = answer(text, room, self.members(room), self.uptime())
        if reply is not None:
            self.answered += 1
            self.say(room, reply)

    def on_presence(self, room: str, event: str, nick: str) -> None:
        if event == "join" and self.settings["greeting"]:
            self.greeted += 1
            self.say(room, self.settings["greeting"].format(nick=nick, room=room))

    def on_dm(self, sender: str, text: str) -> None:
        if sender in self.hub.plugin_nicks():
            return  # two plugins answering each other's dms would never stop
        self.answered += 1
        self.dm(sender, answer(text, None, [], self.uptime()) or HELP)

    def describe_fields(self) -> dict[str, Any]:
        return {**super().describe_fields(), "answered": self.answered, "greeted": self.greeted}
