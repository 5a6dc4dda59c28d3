"""Engine names come from one source (issue 9): `llmhost.engine_ids`, and the engines' own modules.

Eight modules kept lists of engine names of their own; a string "vllm" written anywhere else is a ninth
that a new engine (or a renamed runtime) would silently miss. This scans the source for them.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import get_args

SRC = Path(__file__).resolve().parents[1] / "src" / "llmhost"
# Engine ids, and the runtime names modules outside `engines/` branch on.
NAMES = {"llamacpp", "vllm", "mlx", "llama-server", "llama-cpp-python"}
# Where they may be spelled: the one source, and each engine's own code.
ALLOWED = ("engine_ids.py", "engines/")


def _docstrings(tree: ast.AST) -> set[int]:
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


@functools.cache
def _modules(root: Path) -> tuple[tuple[str, ast.Module], ...]:
    """(path relative to `root`, syntax tree) of every module under `root`, parsed once for both scans."""
    return tuple(
        (path.relative_to(root).as_posix(), ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted(root.rglob("*.py"))
    )


def stray_engine_names(root: Path = SRC) -> list[str]:
    """`file:line: 'name'` for every engine-name string literal outside the allowed modules."""
    found = []
    for rel, tree in _modules(root):
        if rel.startswith(ALLOWED):
            continue
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value in NAMES
                and id(node) not in docs
            ):
                found.append(f"src/llmhost/{rel}:{node.lineno}: {node.value!r}")
    return found


def test_no_engine_name_is_spelled_outside_engine_ids_and_the_engines() -> None:
    stray = stray_engine_names()
    assert not stray, "use llmhost.engine_ids instead of these literals:\n" + "\n".join(stray)


def test_the_scan_finds_a_stray_name(tmp_path: Path) -> None:
    # The scan is only worth something if it sees a literal in code (not in a docstring) and names where.
    pkg = tmp_path / "plan"
    pkg.mkdir()
    (pkg / "x.py").write_text('"""Mentions vllm."""\n\n\ndef f(e):\n    """vllm"""\n    return e == "vllm"\n')
    (tmp_path / "engines").mkdir()
    (tmp_path / "engines" / "y.py").write_text('NAME = "mlx"\n')
    assert stray_engine_names(tmp_path) == ["src/llmhost/plan/x.py:6: 'vllm'"]


def test_the_one_source_agrees_with_itself() -> None:
    from llmhost import engine_ids as ids
    from llmhost.engines.registry import ENGINE_MODULES
    from llmhost.plan.options import OPTIONS_BY_ENGINE

    assert ids.ENGINE_IDS == (ids.LLAMACPP, ids.VLLM, ids.MLX)
    assert get_args(ids.Llamacpp) == (ids.LLAMACPP,) and get_args(ids.Vllm) == (ids.VLLM,)
    assert get_args(ids.Mlx) == (ids.MLX,)
    assert get_args(ids.LlamaCppRuntime) == (ids.LLAMA_SERVER, ids.LLAMA_CPP_PYTHON)
    assert set(ids.TITLES) == set(ids.ENGINE_IDS)
    # Every engine has its module and its options model; nothing else is registered.
    assert set(ENGINE_MODULES) == set(OPTIONS_BY_ENGINE) == set(ids.ENGINE_IDS)
    for engine, module in ENGINE_MODULES.items():
        assert (SRC / "engines" / f"{module.rsplit('.', 1)[1]}.py").is_file(), engine


def test_every_engine_module_names_itself_by_its_id() -> None:
    from llmhost.engines.registry import ENGINE_MODULES, get_engine

    for engine in ENGINE_MODULES:
        assert get_engine(engine).name == engine


# The rule (docs/architecture.md, "Rules of the house"): engine names are compared only where an engine is
# modelled or run. `engines/` launches, installs and reads each engine; `estimate/` and `plan/` model each
# one's memory and make its candidates (one module per engine); `engine_ids` spells them. Everything else
# (app/, cli/, supervise/, export/, gateway/, bench/, profiles, ...) asks the engine (`Engine` in
# engines/base.py), the candidate's typed options, or the registry, and may import from `engine_ids` only
# the types and the prose titles, never an id to compare with.
MODELLED_HERE = ("engine_ids.py", "engines/", "estimate/", "plan/")
# Names from `engine_ids` a module anywhere may use: types for fields and choices, the registry's list,
# and the titles for prose.
NOT_FOR_COMPARING = {
    "EngineName",
    "Llamacpp",
    "Vllm",
    "Mlx",
    "LlamaCppRuntime",
    "ENGINE_IDS",
    "TITLES",
    "title",
}
# Modules outside MODELLED_HERE allowed one of the ids anyway, each with why. (None today.)
EXCEPTIONS: dict[str, set[str]] = {}


def engine_id_uses(root: Path = SRC) -> list[str]:
    """`file:line: NAME` for every engine id taken from `llmhost.engine_ids` outside MODELLED_HERE:
    `from llmhost.engine_ids import VLLM`, or `engine_ids.VLLM` through the module."""
    found = []
    for rel, tree in _modules(root):
        if rel.startswith(MODELLED_HERE):
            continue
        allowed = NOT_FOR_COMPARING | EXCEPTIONS.get(rel, set())
        module_names = {"engine_ids"}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "llmhost.engine_ids":
                found += [
                    f"src/llmhost/{rel}:{node.lineno}: {a.name}" for a in node.names if a.name not in allowed
                ]
            elif isinstance(node, ast.ImportFrom) and node.module == "llmhost":
                module_names |= {a.asname or a.name for a in node.names if a.name == "engine_ids"}
            elif isinstance(node, ast.Import):
                module_names |= {a.asname for a in node.names if a.name == "llmhost.engine_ids" and a.asname}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr not in allowed
                and not node.attr.startswith("__")
                and (
                    (isinstance(node.value, ast.Name) and node.value.id in module_names)
                    or (isinstance(node.value, ast.Attribute) and node.value.attr == "engine_ids")
                )
            ):
                found.append(f"src/llmhost/{rel}:{node.lineno}: {node.attr}")
    return found


def test_only_the_stages_that_model_engines_take_an_engine_id_to_compare() -> None:
    uses = engine_id_uses()
    assert not uses, (
        "ask the engine (engines/base.py Engine, through engines.registry) or the candidate's options "
        "instead of comparing with these ids:\n" + "\n".join(uses)
    )


def test_every_exception_is_still_needed() -> None:
    for rel, names in EXCEPTIONS.items():
        assert (SRC / rel).is_file(), rel
        assert names - NOT_FOR_COMPARING, rel


def test_the_id_scan_finds_an_import_and_a_module_attribute(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "a.py").write_text(
        "from llmhost.engine_ids import TITLES, VLLM, Vllm\n"
        "from llmhost import engine_ids as ids\n"
        "import llmhost.engine_ids\n\n"
        "def f(c):\n"
        "    return c.engine == ids.MLX or llmhost.engine_ids.LLAMA_SERVER == c.runtime or ids.title(c)\n"
    )
    (tmp_path / "plan").mkdir()
    (tmp_path / "plan" / "b.py").write_text("from llmhost.engine_ids import VLLM\n")
    assert engine_id_uses(tmp_path) == [
        "src/llmhost/app/a.py:1: VLLM",
        "src/llmhost/app/a.py:6: MLX",
        "src/llmhost/app/a.py:6: LLAMA_SERVER",
    ]
