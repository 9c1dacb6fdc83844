"""The registry of plugin kinds: every PluginActor subclass, under ``module:Class``.

Filled by ``PluginActor.__init_subclass__``; read by the loader (``hubbub/plugins.py``)
so that a class defined in a module already imported needs no second import.
"""

from __future__ import annotations

from typing import Any

__all__ = ["kinds", "register", "resolve_kind", "spec_of"]

_KINDS: dict[str, type[Any]] = {}


def spec_of(cls: type[Any]) -> str:
    """``module:Class``: how a kind is named on the command line and in settings tables."""
    return f"{cls.__module__}:{cls.__qualname__}"


def register(cls: type[Any]) -> None:
    """Record ``cls`` under its spec (a later class of the same name replaces it)."""
    _KINDS[spec_of(cls)] = cls


def kinds() -> dict[str, type[Any]]:
    """Every registered kind: ``"module:Class"`` → class (a copy)."""
    return dict(_KINDS)


def resolve_kind(spec: str) -> type[Any] | None:
    """The registered class for ``spec``, or None if none was defined yet."""
    return _KINDS.get(spec)
