"""Build llama-cpp-python's wheel for what llmhost runs: text generation, libllama + ggml only.

`pip install llama-cpp-python` compiles three things from its vendored llama.cpp: the libraries the
bindings load (libllama, libggml*), libmtmd (images and audio, loaded only by its multimodal chat
handlers) and llama.cpp's `common` library, which its CMakeLists forces on
(`set(LLAMA_BUILD_COMMON ON CACHE BOOL ... FORCE)`) although nothing in the Python package loads it.
On this 2-core machine those two are 104 of the 178 objects a stock 0.3.36 build compiles (ninja's
log: `common` alone took 515 CPU-seconds), and the build dominates a first `make demo` and a fresh CI
run. llmhost serves text models, so its wheel is built without both, through CMake's own hooks and no
edited source: `LLAVA_BUILD=OFF`, and `CMAKE_PROJECT_llama.cpp_INCLUDE`, a file CMake runs right after
the vendored `project("llama.cpp")` call (so after the parent's forced ON) that turns `common` off
again. If a new release renames the project the hook stops running; `check_wheel` then finds
`libllama-common.so` in the wheel and the build fails loudly. The bindings, server and every text code
path are llama-cpp-python's own, unchanged.

Stdlib only, so the Makefile can run it before llmhost is installed:
`PYTHONPATH=src python3 -m llmhost.engines.llamacpp_wheel --out DIR` prints the wheel's path.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from llmhost.engines.llamacpp_build import LLAMA_CPP_PYTHON_VERSION
from llmhost.errors import EngineError

# Runs inside the vendored llama.cpp's project() call, after llama-cpp-python forced `common` on.
TEXT_ONLY_HOOK = 'set(LLAMA_BUILD_COMMON OFF CACHE BOOL "not loaded by the Python bindings" FORCE)\n'
HOOK_VARIABLE = "CMAKE_PROJECT_llama.cpp_INCLUDE"
CMAKE_ARGS = ("-DLLAVA_BUILD=OFF",)
# What the bindings load (llama_cpp/llama_cpp.py, _ctypes_extensions.py): checked in the built wheel.
REQUIRED_LIBS = ("libllama.so", "libggml.so", "libggml-base.so", "libggml-cpu.so")
LEFT_OUT_LIBS = ("libmtmd.so", "libllama-common.so")


def cmake_args(hook: Path) -> str:
    """CMAKE_ARGS for a text-only build: the user's own first, then mtmd off and the `common` hook."""
    own = os.environ.get("CMAKE_ARGS", "")
    return " ".join([own, *CMAKE_ARGS, f"-D{HOOK_VARIABLE}={hook}"]).strip()


def check_wheel(wheel: Path) -> None:
    """The libraries the bindings load are in the wheel, the two left out are not."""
    with zipfile.ZipFile(wheel) as archive:
        names = {Path(n).name for n in archive.namelist()}
    missing = [lib for lib in REQUIRED_LIBS if lib not in names]
    extra = [lib for lib in LEFT_OUT_LIBS if lib in names]
    if missing or extra:
        raise EngineError(
            f"{wheel.name}: missing {missing}, unexpected {extra}.", hint="Delete it and rebuild."
        )


def build_wheel(out: Path, version: str = LLAMA_CPP_PYTHON_VERSION, *, jobs: int | None = None) -> Path:
    existing = sorted(out.glob(f"llama_cpp_python-{version}-*.whl"))
    if existing:
        return existing[-1]
    out.mkdir(parents=True, exist_ok=True)
    # Beside the cache so the finished wheel is renamed into place (atomic: no half-written wheel).
    with tempfile.TemporaryDirectory(prefix=".build-", dir=out) as tmp:
        hook = Path(tmp) / "text_only.cmake"
        hook.write_text(TEXT_ONLY_HOOK)
        env = {
            **os.environ,
            "CMAKE_ARGS": cmake_args(hook),
            "CMAKE_BUILD_PARALLEL_LEVEL": str(jobs or os.cpu_count() or 1),
        }
        dist = Path(tmp) / "dist"
        argv = [
            sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-binary", "llama-cpp-python",
            "-w", str(dist), f"llama-cpp-python=={version}",
        ]  # fmt: skip
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise EngineError(
                f"Building llama-cpp-python {version} failed:\n{tail}",
                hint="It needs cmake and a C++ compiler (e.g. `apt-get install cmake g++`) and PyPI.",
            )
        (wheel,) = dist.glob("llama_cpp_python-*.whl")
        check_wheel(wheel)
        final = out / wheel.name
        os.replace(wheel, final)
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory that holds (or gets) the wheel")
    parser.add_argument("--version", default=LLAMA_CPP_PYTHON_VERSION)
    args = parser.parse_args(argv)
    try:
        print(build_wheel(args.out, args.version))
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
