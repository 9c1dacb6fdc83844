"""Loading plugins at start-up: ``--plugin module:Class`` and the ``hubbub.actors`` entry points.

Which plugins run:

* every ``module:Class`` of ``config.plugins`` (flag ``--plugin``, repeatable;
  ``HUBBUB_PLUGIN``; ``plugin = [...]`` in the TOML file), and
* every entry point of the group ``hubbub.actors`` of the installed distributions, so
  that installing a package adds its actor types with no change to hubbub:

      [project.entry-points."hubbub.actors"]
      greeter = "mypackage.greeter:Greeter"

Each one gets the settings table ``[plugins."module:Class"]`` of the TOML file.

All of this happens before the server listens.  A plugin that does not import, is
not a PluginActor, has a bad setting or raises while starting stops the server with
one line (``hubbub: error: plugin ...``) and exit code 2: nothing is ever served by
a node missing one of the plugins it was told to run.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pykka

from actors.plugin import PluginActor, resolve_kind

__all__ = ["ENTRY_POINT_GROUP", "PluginError", "Wanted", "wanted", "load_class", "start_plugins"]

ENTRY_POINT_GROUP = "hubbub.actors"
START_TIMEOUT = 5.0
"""Seconds a plugin may take to start (constructor and on_started)."""

log = logging.getLogger("hubbub.plugins")


class PluginError(Exception):
    """A plugin could not be loaded or started.  The message is one line, for the operator."""


@dataclass(frozen=True)
class Wanted:
    """One plugin to run."""

    spec: str
    """``module:Class``; the key of its settings table."""
    origin: str
    """Where it was asked for, for messages (``--plugin`` or the entry point)."""
    entry_point: Any = None
    """The importlib.metadata EntryPoint, for entry-point plugins."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def wanted(config: Any) -> list[Wanted]:
    """The plugins to run, in order: the configured ones, then the entry points (once each)."""
    out = [Wanted(spec, "--plugin") for spec in config.plugins]
    seen = set(config.plugins)
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        spec = ep.value.replace(" ", "")
        if spec in seen:
            continue
        seen.add(spec)
        dist = getattr(ep.dist, "name", None) or "?"
        out.append(Wanted(spec, f"entry point {ep.name!r} of {dist}", ep))
    return out


def load_class(want: Wanted) -> type[PluginActor]:
    """Import the class; PluginError with one line saying what is wrong."""
    where = f"plugin {want.spec} ({want.origin})"
    try:
        if want.entry_point is not None:
            obj = want.entry_point.load()
        else:
            obj = resolve_kind(want.spec) or _import(want.spec)
    except Exception as exc:  # noqa: BLE001 - whatever the import raised, it is the operator's to read
        raise PluginError(f"{where}: cannot import: {_one_line(exc)}") from None
    if not (isinstance(obj, type) and issubclass(obj, PluginActor)):
        raise PluginError(f"{where}: {obj!r} is not a subclass of actors.plugin.PluginActor")
    return obj


def _import(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def start_plugins(system: Any, config: Any, timeout: float = START_TIMEOUT) -> list[PluginActor]:
    """Load and start every wanted plugin under the system's node; PluginError on the first failure."""
    plans = [(want, load_class(want)) for want in wanted(config)]  # import all before starting any
    started = []
    for want, cls in plans:
        where = f"plugin {want.spec} ({want.origin})"
        try:
            started.append(system.plugins.start(cls, config.plugin_settings.get(want.spec), want.spec,
                                                 timeout=timeout))
        except pykka.Timeout:
            raise PluginError(f"{where}: did not start within {timeout:g} s") from None
        except Exception as exc:  # noqa: BLE001 - bad settings, or on_started raised
            raise PluginError(f"{where}: failed to start: {_one_line(exc)}") from None
    for spec in config.plugin_settings:
        if spec not in {want.spec for want, _cls in plans}:
            log.warning("settings [plugins.%r] ignored: that plugin is not loaded", spec)
    if started:
        log.info("plugins: %s", ", ".join(p.spec for p in started))
    return started
