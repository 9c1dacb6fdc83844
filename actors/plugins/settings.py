"""Checking what an operator wrote: settings tables and timer delays.

A plugin's settings come from ``[plugins."module:Class"]`` (or the entry point's name)
in the TOML file; they are checked against the class's ``defaults`` before the actor
is linked into the tree, so a typo stops the server at start-up with one line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..core.codec import valid_name

__all__ = ["PluginSettingsError", "BASE_DEFAULTS", "check_delay", "merge_settings"]


class PluginSettingsError(ValueError):
    """A setting is unknown or of the wrong type, or a plugin refused its value."""


BASE_DEFAULTS: Mapping[str, Any] = {"nick": None, "rooms": []}
"""The two settings every plugin has: the base class claims ``nick`` and joins ``rooms``."""


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):  # bool is an int: keep them apart
        return type(value) is type(default)
    if isinstance(default, float):
        return isinstance(value, (int, float))  # TOML `window = 10` means 10.0
    return isinstance(value, type(default))


def merge_settings(defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` (the base ones included) overlaid with ``given``; PluginSettingsError for
    an unknown key, a value of another type, a bad nick or room name, or rooms without a nick."""
    known = {**BASE_DEFAULTS, **defaults}
    for key, value in given.items():
        if key not in known:
            raise PluginSettingsError(
                f"unknown setting {key!r} (known: {', '.join(sorted(known))})"
            )
        default = known[key]
        if default is not None and value is not None and not _same_kind(value, default):
            raise PluginSettingsError(
                f"setting {key!r} must be {type(default).__name__} (got {value!r})"
            )
    merged = {**known, **given}
    nick = merged["nick"]
    if nick is not None and not (isinstance(nick, str) and valid_name(nick)):
        raise PluginSettingsError(f"setting 'nick' is not a valid nick (got {nick!r})")
    rooms = merged["rooms"]
    if not isinstance(rooms, list) or not all(isinstance(r, str) and valid_name(r) for r in rooms):
        raise PluginSettingsError(f"setting 'rooms' must be a list of room names (got {rooms!r})")
    if rooms and not nick:
        raise PluginSettingsError("setting 'rooms' needs a 'nick': members have nicks")
    return merged


def check_delay(name: str, delay: Any) -> float:
    """A timer delay in seconds: a real number, finite, >= 0 (NaN would never fire, and
    infinity never either: both are mistakes to report, not timers to keep)."""
    if isinstance(delay, bool) or not isinstance(delay, (int, float)):
        raise ValueError(f"set_timer({name!r}, {delay!r}): the delay must be a number of seconds")
    if not math.isfinite(delay) or delay < 0:
        raise ValueError(
            f"set_timer({name!r}, {delay!r}): the delay must be finite and >= 0 seconds"
        )
    return float(delay)
