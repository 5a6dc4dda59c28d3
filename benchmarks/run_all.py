"""`make bench`: run every benchmark in this folder, one after the other, and print their figures.

Benchmarks print measured figures and ratios side by side in one run; they assert nothing about speed
(these machines are noisy). A benchmark that needs something missing (an engine, a GPU) says so and
is skipped; the exit code is non-zero only when a benchmark crashed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    names = argv or sorted(
        p.stem for p in HERE.glob("*.py") if not p.name.startswith("_") and p.name != "run_all.py"
    )
    failed: list[str] = []
    for name in names:
        script = HERE / f"{name}.py"
        print(f"\n=== {name} ===", flush=True)
        started = time.monotonic()
        rc = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(f"--- {name}: exit {rc} in {time.monotonic() - started:.1f} s", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
