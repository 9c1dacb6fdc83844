"""Loading plugins at start-up: ``--plugin module:Class`` and the ``hubbub.actors`` entry points.

Which plugins run:

* every ``module:Class`` of ``config.plugins`` (flag ``--plugin``, repeatable;
  ``HUBBUB_PLUGIN``; ``plugin = [...]`` in the TOML file), and
* every entry point of the group ``hubbub.actors`` of the installed distributions, so
  that installing a package adds its actor types with no change to hubbub:

      [project.entry-points."hubbub.actors"]
      greeter = "mypackage.greeter:Greeter"

  except those named by ``--disable-plugin NAME`` (the entry point's name, or its
  ``module:Class``): the way to keep an installed package's plugin from running
  without uninstalling the package.

Each one gets the settings table ``[plugins."module:Class"]`` of the TOML file (an entry
point's too, keyed by its value: a table named after the entry point is a ConfigError
that says which key to write).

All of this happens before the server listens.  A plugin that does not import, is
not a PluginActor, has a bad setting, raises while starting or finds its nick taken
stops the server with one line (``hubbub: error: plugin ...``) and exit code 2 —
an installed entry point too: nothing is ever served by a node missing one of the
plugins it was told to run, and an installed entry point is such an instruction
until ``--disable-plugin`` says otherwise (docs/extending.md, "Loading").
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pykka

from hubbub.plugin import PluginActor, resolve_kind

__all__ = ["ENTRY_POINT_GROUP", "PluginError", "Wanted", "wanted", "load_class", "start_plugins"]

ENTRY_POINT_GROUP = "hubbub.actors"
START_TIMEOUT = 5.0
"""Seconds a plugin may take to start (constructor, on_started, and its nick granted)."""

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

    @property
    def names(self) -> tuple[str, ...]:
        """What an operator may call it: its spec, and its entry point's name if it has one."""
        return (self.spec,) if self.entry_point is None else (self.spec, self.entry_point.name)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def wanted(config: Any) -> list[Wanted]:
    """The plugins to run, in order: the configured ones, then the entry points (once each),
    less the disabled ones."""
    out = [Wanted(spec, "--plugin") for spec in config.plugins]
    seen = set(config.plugins)
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        spec = ep.value.replace(" ", "")
        if spec in seen:
            continue
        seen.add(spec)
        dist = getattr(ep.dist, "name", None) or "?"
        out.append(Wanted(spec, f"entry point {ep.name!r} of {dist}", ep))
    disabled = set(config.disable_plugins)
    kept = [want for want in out if disabled.isdisjoint(want.names)]
    for want in out:
        if want not in kept:
            log.info("plugin %s (%s) disabled by --disable-plugin", want.spec, want.origin)
    unknown = disabled.difference(*(want.names for want in out))
    if unknown:
        log.warning(
            "--disable-plugin %s: no such plugin is installed or configured",
            ", ".join(sorted(unknown)),
        )
    return kept


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
        # Named by its old path, which still works, so the message stays what scripts match.
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
            started.append(
                system.plugins.start(
                    cls, config.plugin_settings.get(want.spec), want.spec, timeout=timeout
                )
            )
        except (pykka.Timeout, TimeoutError):
            raise PluginError(f"{where}: did not start within {timeout:g} s") from None
        except Exception as exc:  # noqa: BLE001 - bad settings, on_started raised, nick taken
            raise PluginError(f"{where}: failed to start: {_one_line(exc)}") from None
    loaded = {want.spec for want, _cls in plans}
    for spec in config.plugin_settings:
        if spec not in loaded:
            log.warning('settings [plugins."%s"] ignored: that plugin is not loaded', spec)
    if started:
        log.info("plugins: %s", ", ".join(p.spec for p in started))
    return started
