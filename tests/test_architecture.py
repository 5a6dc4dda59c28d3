"""docs/architecture.md's module table names every module in the tree, and nothing that is not there."""

from __future__ import annotations

import re
from pathlib import Path

import llmhost

SRC = Path(llmhost.__file__).parent
DOC = Path(__file__).parents[1] / "docs" / "architecture.md"


def _module_table() -> dict[str, str]:
    """Package (`top level` for llmhost/*.py) -> its row's text."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Modules", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] not in ("package", "---"):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def _named(row: str) -> set[str]:
    # `name`, and the module of `name.attr` / `name.func()`
    return set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?:\(\))?`", row))


def test_every_module_is_in_the_architecture_table():
    rows = _module_table()
    missing = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if path.name == "__init__.py" and len(rel.parts) > 1 and rel.parts[0] != "cli":
            continue  # a package's __init__ is the package itself
        package = rel.parts[0] if len(rel.parts) > 1 else "top level"
        if package not in rows or path.stem not in _named(rows[package]):
            missing.append(str(rel))
    assert not missing, f"docs/architecture.md's module table does not name: {missing}"


def test_every_package_in_the_table_exists():
    for package in _module_table():
        if package != "top level":
            assert (SRC / package / "__init__.py").is_file(), f"{package} is in the table but not in the tree"
