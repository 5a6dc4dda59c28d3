"""Engine names come from one source (issue 9): `llmhost.engine_ids`, and the engines' own modules.

Eight modules kept lists of engine names of their own; a string "vllm" written anywhere else is a ninth
that a new engine (or a renamed runtime) would silently miss. This scans the source for them.
"""

from __future__ import annotations

import ast
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


def stray_engine_names(root: Path = SRC) -> list[str]:
    """`file:line: 'name'` for every engine-name string literal outside the allowed modules."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(ALLOWED):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
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
