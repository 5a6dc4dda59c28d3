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


# Layers, bottom up: a module may import its own package, and anything on a lower layer (docs/architecture.md,
# "Dependencies point down"). Unknown top-level modules fail the test until they are placed here.
LAYERS: list[set[str]] = [
    {
        "__init__",
        "errors",
        "units",
        "bisection",
        "atomic",
        "contract",
        "text",
        "cache",
        "net",
        "prometheus",
        "engine_ids",
    },
    {"inputs", "outputs"},
    {"hardware", "models", "demo_model", "tiny_hf"},
    {"estimate"},
    {"plan"},
    {"engines"},
    {"profiles"},  # a profile's chat_template: becomes the engine's flags (Engine.chat_template_args)
    {"supervise"},
    {"bench"},
    {"export"},
    {"app"},
    {"gateway"},  # drives deployments through app (serve's use case), never through the CLI
    {"cli"},
    {"__main__"},
]
# Imports that still point up, each with why it is tolerated (and what would remove it).
KNOWN_UPWARD: set[tuple[str, str]] = set()


def _rank(package: str) -> int:
    for rank, layer in enumerate(LAYERS):
        if package in layer:
            return rank
    raise AssertionError(f"llmhost.{package} is not placed in tests/test_architecture.py's LAYERS")


def _is_module(name: str) -> bool:
    return (SRC / f"{name}.py").is_file() or (SRC / name / "__init__.py").is_file()


def test_imports_point_down():
    import ast

    upward = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        package = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                parts = node.module.split(".")
                if parts[0] == "llmhost":
                    names = [a.name for a in node.names]  # `from llmhost import x`: a module, or __init__'s
                    targets = (
                        [parts[1]] if len(parts) > 1 else [n if _is_module(n) else "__init__" for n in names]
                    )
            elif isinstance(node, ast.Import):
                targets = [a.name.split(".")[1] for a in node.names if a.name.startswith("llmhost.")]
            for target in targets:
                if target == package or (str(rel), target) in KNOWN_UPWARD:
                    continue
                if _rank(target) > _rank(package) or (
                    _rank(target) == _rank(package) and _rank(package) > 0 and target != package
                ):
                    upward.append(f"{rel} imports llmhost.{target}")
    assert not upward, "imports that point up or sideways: " + "; ".join(sorted(set(upward)))


# The CLI parses, calls one `app/` function and renders (docs/architecture.md): a command that grows
# past this is doing the library's work, or rendering that wants splitting into small functions.
# A function's lines run from its first decorator (or its `def`) to its last line: signature (a command's
# options), docstring, body and nested functions all count, blank lines and comments inside too.
MAX_CLI_FUNCTION_LINES = 60


def long_functions(folder: Path, most: int = MAX_CLI_FUNCTION_LINES) -> list[str]:
    import ast

    long = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = (node.end_lineno or node.lineno) - first + 1
                if lines > most:
                    long.append(f"{path.relative_to(folder)}:{node.lineno} {node.name}() is {lines} lines")
    return long


def test_cli_functions_are_short():
    long = long_functions(SRC / "cli")
    assert not long, f"CLI functions over {MAX_CLI_FUNCTION_LINES} lines: " + "; ".join(long)


def test_the_length_check_counts_decorators_and_nested_functions(tmp_path):
    body = "".join(f"        x{i} = {i}\n" for i in range(5))
    (tmp_path / "a.py").write_text(f"@app.command()\n@other\ndef f():\n    def g():\n{body}        pass\n")
    # f: 2 decorators + def + nested g (1 + 5 + 1) = 10 lines; g alone 7.
    assert long_functions(tmp_path, most=9) == ["a.py:3 f() is 10 lines"]
    assert long_functions(tmp_path, most=10) == []


def test_one_pydantic_base_model():
    """Every pydantic model derives from `llmhost.contract` (extra="forbid" spelled once), never from
    `BaseModel` directly: seven copies of that base once drifted apart."""
    import ast

    direct = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "contract.py" and path.parent == SRC:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                for base in node.bases:
                    name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", None)
                    if name == "BaseModel":
                        direct.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}")
    assert direct == []
