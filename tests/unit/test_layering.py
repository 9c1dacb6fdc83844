"""docs/architecture.md, "The map": every import in the project is one the map allows.

The table is read from the page itself and every module's imports are parsed (``ast``,
imports inside functions included), so neither the code nor the map can drift alone.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*ROOT.glob("actors/**/*.py"), *ROOT.glob("hubbub/**/*.py"), ROOT / "server.py"])
# The pure core does no I/O and reads no clock: these never appear in actors/core/.
NOT_IN_CORE = {
    "gevent",
    "pykka",
    "redis",
    "socket",
    "select",
    "threading",
    "time",
    "sqlite3",
    "asyncio",
}


def read_map() -> tuple[dict[str, str], dict[str, set[str]]]:
    """(path or folder → concern, concern → concerns it may import), from the page's table."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## The map", 1)[1].split("\n## ", 1)[0]
    places: dict[str, str] = {}
    allowed: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[1].startswith("`"):
            continue
        concern, where, may = cells
        for path in re.findall(r"`([^`]+)`", where):
            places[path] = concern
        allowed[concern] = {c.strip() for c in may.split(",")}
    return places, allowed


PLACES, ALLOWED = read_map()


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def concern_of(path: str) -> str | None:
    """The most specific row whose path is this file, or a folder holding it."""
    best = None
    for where, concern in PLACES.items():
        if path == where or (where.endswith("/") and path.startswith(where)):
            if best is None or len(where) > len(best[0]):
                best = (where, concern)
    return best[1] if best else None


def module_path(module: str) -> str | None:
    """The source file of a project module (``actors.room`` → ``actors/room.py``), if it is one."""
    parts = module.split(".")
    if parts[0] not in ("actors", "hubbub", "server"):
        return None
    for candidate in (
        ROOT.joinpath(*parts).with_suffix(".py"),
        ROOT.joinpath(*parts, "__init__.py"),
    ):
        if candidate.exists():
            return rel(candidate)
    # ``from actors.core import codec``: the package is named, the module is one level down.
    return module_path(".".join(parts[:-1])) if len(parts) > 1 else None


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in the file, relative ones resolved."""
    # The package a relative import starts from: the module's own (for __init__.py, itself).
    package = rel(path).removesuffix(".py").replace("/", ".").split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from . import cluster`` names modules too: check each name as one.
            out += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return out


def test_the_map_names_every_concern_it_allows():
    """Every concern in a "may import" cell is a row of the table."""
    assert PLACES and ALLOWED
    for concern, may in ALLOWED.items():
        assert may <= set(ALLOWED), f"{concern} may import an unknown concern: {may - set(ALLOWED)}"


@pytest.mark.parametrize("path", SOURCES, ids=rel)
def test_every_module_is_placed_and_imports_only_what_its_row_allows(path: Path):
    """Each project import of this module lands in a concern its row may import."""
    here = rel(path)
    concern = concern_of(here)
    assert concern is not None, f"{here} is in no row of docs/architecture.md's map"
    for line, module in imports_of(path):
        if concern == "core":
            top = module.split(".")[0]
            assert top not in NOT_IN_CORE, f"{here}:{line} imports {module}: the core does no I/O"
        target = module_path(module)
        if target is None or target == here:
            continue
        target_concern = concern_of(target)
        assert target_concern in ALLOWED[concern], (
            f"{here}:{line} ({concern}) imports {module} ({target_concern}); "
            f"the map allows {sorted(ALLOWED[concern])}"
        )


def test_the_core_may_not_import_the_plugin_api():
    """The rule issue 13 is about: the map keeps the plugin API out of the core and the shells."""
    assert "plugin API" not in ALLOWED["core"] | ALLOWED["shells"] | ALLOWED["cluster"]
    assert concern_of(module_path("actors.plugins.actor") or "") == "plugin API"
    assert concern_of("actors/plugins/bot.py") == "shipped plugins"
