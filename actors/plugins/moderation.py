"""ModerationActor: warns, then kicks, users who repeat themselves or use a banned word.

    python server.py --plugin actors.plugins.moderation:ModerationActor

    [plugins."actors.plugins.moderation:ModerationActor"]   # all optional; the defaults
    nick = "moderator"       # warnings arrive as a dm from this nick
    repeat_limit = 3         # the same message this many times ...
    repeat_window = 10.0     # ... within this many seconds is a violation
    banned_words = []        # a message holding one of these words (any case) is a violation
    warnings = 1             # violations answered with a warning; the next one kicks
    forgive_after = 600.0    # seconds after which a warning is forgotten (0: never)
    exempt = []              # nicks never judged (other plugins never are)

It watches every room without being a member (it is not in ``members``).  A kick is
the contract's: ``bye`` with reason ``kicked`` and the violation as ``message``,
then close 4005.  The rules are a pure class, :class:`Rules`, driven with explicit
time in the tests; the actor only adds the clock, the dms, the kicks and a timer per
warning (through the shared scheduler) to forgive it.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any

from hubbub.plugin import PluginActor, PluginSettingsError

__all__ = ["ModerationActor", "Rules", "Verdict"]


@dataclass(frozen=True)
class Verdict:
    """What to do about one message."""

    action: str
    """``warn`` or ``kick``."""
    detail: str
    """The violation, in words the user reads."""


class Rules:
    """Per nick: recent messages, warnings given.  Time is passed in (monotonic seconds)."""

    def __init__(
        self,
        repeat_limit: int = 3,
        repeat_window: float = 10.0,
        banned_words: list[str] | tuple[str, ...] = (),
        warnings: int = 1,
    ) -> None:
        self.repeat_limit = repeat_limit
        self.repeat_window = repeat_window
        self.warnings = warnings
        words = [w.strip() for w in banned_words if w.strip()]
        # Whole words only: "class" must not trip on a banned "ass".
        self._banned = (
            re.compile(r"(?<!\w)(" + "|".join(map(re.escape, words)) + r")(?!\w)", re.I)
            if words
            else None
        )
        self._recent: dict[str, deque[tuple[float, str]]] = {}
        self.strikes: dict[str, int] = {}

    def violation(self, nick: str, text: str, now: float) -> str | None:
        if self._banned is not None and (found := self._banned.search(text)):
            return f"the word {found.group(1).lower()!r} is not allowed here"
        said = " ".join(text.split()).casefold()
        recent = self._recent.setdefault(nick, deque())
        recent.append((now, said))
        while recent and recent[0][0] <= now - self.repeat_window:
            recent.popleft()
        if sum(1 for _t, s in recent if s == said) >= self.repeat_limit:
            del self._recent[nick]  # counted: the next violation needs fresh repeats
            return f"the same message {self.repeat_limit} times in {self.repeat_window:g} s"
        return None

    def judge(self, nick: str, text: str, now: float) -> Verdict | None:
        why = self.violation(nick, text, now)
        if why is None:
            return None
        strikes = self.strikes.get(nick, 0)
        if strikes < self.warnings:
            self.strikes[nick] = strikes + 1
            return Verdict("warn", why)
        self.forget(nick)
        return Verdict("kick", why)

    def forgive(self, nick: str) -> None:
        """Forget the warnings given to ``nick``."""
        self.strikes.pop(nick, None)

    def forget(self, nick: str) -> None:
        """Forget everything about ``nick`` (kicked, or gone)."""
        self.strikes.pop(nick, None)
        self._recent.pop(nick, None)


class ModerationActor(PluginActor):
    watch_all_rooms = True
    defaults = {
        "nick": "moderator",
        "repeat_limit": 3,
        "repeat_window": 10.0,
        "banned_words": [],
        "warnings": 1,
        "forgive_after": 600.0,
        "exempt": [],
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        s = self.settings
        if s["repeat_limit"] < 2:
            raise PluginSettingsError(
                f"setting 'repeat_limit' must be >= 2 (got {s['repeat_limit']})"
            )
        for key in ("repeat_window", "forgive_after"):
            if s[key] < 0 or (key == "repeat_window" and s[key] == 0):
                raise PluginSettingsError(f"setting {key!r} must be > 0 (got {s[key]})")
        if s["warnings"] < 0:
            raise PluginSettingsError(f"setting 'warnings' must be >= 0 (got {s['warnings']})")
        for key in ("banned_words", "exempt"):
            if not all(isinstance(w, str) for w in s[key]):
                raise PluginSettingsError(f"setting {key!r} must be a list of strings")
        self.rules = Rules(
            s["repeat_limit"], float(s["repeat_window"]), s["banned_words"], s["warnings"]
        )
        self.exempt = set(s["exempt"])
        self.warned = 0
        self.kicked = 0

    def on_room_message(self, room: str, nick: str, text: str, seq: int) -> None:
        if nick in self.exempt or nick in self.hub.plugin_nicks():
            return
        verdict = self.rules.judge(nick, text, self.clock.monotonic())
        if verdict is None:
            return
        if verdict.action == "warn":
            self.warned += 1
            left = self.rules.warnings - self.rules.strikes.get(nick, 0)
            then = "you will be kicked" if left == 0 else f"{left} more warning(s), then a kick"
            self.dm(nick, f"Warning ({room}): {verdict.detail}. Next time {then}.")
            if self.settings["forgive_after"]:
                self.set_timer(f"forgive:{nick}", self.settings["forgive_after"])
        else:
            self.kicked += 1
            self.cancel_timer(f"forgive:{nick}")
            self.kick(nick, f"{verdict.detail} (in {room})")

    def on_timer(self, name: str) -> None:
        if name.startswith("forgive:"):
            self.rules.forgive(name.removeprefix("forgive:"))

    def on_user_disconnected(self, session: str, nick: str | None, reason: str) -> None:
        if nick is not None:
            self.rules.forget(nick)
            self.cancel_timer(f"forgive:{nick}")

    def on_dm(self, sender: str, text: str) -> None:
        if sender not in self.hub.plugin_nicks():
            self.dm(
                sender,
                "I am the moderator: I warn, then kick, whoever repeats a message "
                f"{self.rules.repeat_limit} times in {self.rules.repeat_window:g} s "
                "or uses a banned word.",
            )

    def describe_fields(self) -> dict[str, Any]:
        return {
            **super().describe_fields(),
            "warned": self.warned,
            "kicked": self.kicked,
            "on_warning": len(self.rules.strikes),
        }
