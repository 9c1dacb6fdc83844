"""The public plugin API: everything a plugin author imports (docs/extending.md).

    from hubbub.plugin import PluginActor

    class Echo(PluginActor):
        defaults = {"nick": "echo", "rooms": ["lobby"]}

        def on_room_message(self, room, nick, text, seq):
            self.say(room, f"{nick} said {text!r}")

The names below are the supported surface; the modules behind them
(``actors/plugins/``) are private and may move.  ``actors.plugin`` is the old path,
kept for one version.
"""

from actors.core.observe import (
    RoomMessage,
    RoomPresence,
    UserConnected,
    UserDisconnected,
    UserProfiled,
)
from actors.plugins.actor import NickTaken, PluginActor
from actors.plugins.hub import PluginHub
from actors.plugins.registry import kinds, resolve_kind
from actors.plugins.settings import PluginSettingsError

__all__ = [
    "NickTaken",
    "PluginActor",
    "PluginHub",
    "PluginSettingsError",
    "RoomMessage",
    "RoomPresence",
    "UserConnected",
    "UserDisconnected",
    "UserProfiled",
    "kinds",
    "resolve_kind",
]
