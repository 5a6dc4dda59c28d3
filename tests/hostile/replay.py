"""The quick half of a fuzz target, for `make test`: replay its saved corpus, and run generated cases.

Both call the target's own `check`, so a case passes exactly when the long run (scripts/fuzz.py) would
count it as ok or refused: `check` returns, or raises an LlmhostError with exit code 2.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from types import ModuleType

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmhost.errors import ExitCode, LlmhostError

HERE = Path(__file__).parent


def corpus(name: str) -> list[Path]:
    folder = HERE / "corpus" / name
    return sorted(folder.iterdir()) if folder.is_dir() else []


def run_check(target: ModuleType, data: bytes, workdir: Path) -> None:
    case = workdir / "case"
    case.mkdir(exist_ok=True)
    try:
        target.check(data, case)
    except LlmhostError as exc:
        assert exc.exit_code == ExitCode.BAD_INPUT, f"{type(exc).__name__} (exit {exc.exit_code}): {exc}"
    finally:
        for p in case.iterdir():
            p.unlink()


def generated(target: ModuleType, examples: int):
    """A test running `examples` mutated cases, deterministic (derandomize) so CI never flakes.

    Seeds are built on the first case, not at collection, in directories removed at exit.
    `make test-fast` sets LLMHOST_QUICK_FUZZ_SCALE (0.1: a tenth of the cases); `make test` runs all."""
    examples = max(20, round(examples * float(os.environ.get("LLMHOST_QUICK_FUZZ_SCALE", "1"))))
    state: dict[str, object] = {}

    def prepared() -> tuple[list[bytes], Path]:
        if not state:
            dirs = tempfile.TemporaryDirectory(prefix="llmhost-fuzz-")
            root = Path(dirs.name)
            state.update(dirs=dirs, seeds=target.seeds(root / "seeds"), work=root / "work")
            (root / "work").mkdir()
        return state["seeds"], state["work"]  # type: ignore[return-value]

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(index=st.integers(0, 2**16), rng_seed=st.integers(0, 2**32 - 1))
    def test(index: int, rng_seed: int) -> None:
        seeds, work = prepared()
        run_check(target, target.mutate(seeds[index % len(seeds)], random.Random(rng_seed)), work)

    return test
