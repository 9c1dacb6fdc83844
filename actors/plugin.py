"""Deprecated import path of the plugin API: use :mod:`hubbub.plugin` instead.

Kept for one version so that plugins written against ``from actors.plugin import
PluginActor`` keep working (docs/extending.md, "Import path").  It only re-exports.
"""

from .base import publish
from .plugins.actor import PluginActor
from .plugins.hub import PluginHub
from .plugins.registry import kinds, resolve_kind
from .plugins.settings import PluginSettingsError

__all__ = ["PluginActor", "PluginHub", "PluginSettingsError", "kinds", "resolve_kind", "publish"]
