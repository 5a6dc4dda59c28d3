"""Build llama-cpp-python's wheel for what llmhost runs: text generation, libllama + ggml only.

`pip install llama-cpp-python` compiles three things from its vendored llama.cpp: the libraries the
bindings load (libllama, libggml*), libmtmd (images and audio, loaded only by its multimodal chat
handlers) and llama.cpp's `common` library, which its CMakeLists forces on
(`set(LLAMA_BUILD_COMMON ON CACHE BOOL ... FORCE)`) although nothing in the Python package loads it.
Measured on this 2-core machine (ninja's log of a stock 0.3.36 build): `common` took 515 CPU-seconds
and mtmd about 250 of some 1,300 — over half the build, which dominates a first `make demo` and a
fresh CI run. llmhost serves text models, so its wheel is built without both: `LLAVA_BUILD=OFF`
through CMAKE_ARGS, and the forced `common` switch turned off in an extracted copy of the sdist (the
one line is checked, so a new sdist that moves it fails loudly instead of building everything).
The bindings, server and every text code path are llama-cpp-python's own, unchanged.

Stdlib only, so the Makefile can run it before llmhost is installed:
`PYTHONPATH=src python3 -m llmhost.engines.llamacpp_wheel --out DIR` prints the wheel's path.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from llmhost.engines.llamacpp_build import LLAMA_CPP_PYTHON_VERSION, download_sdist
from llmhost.errors import EngineError

FORCED_COMMON = 'set(LLAMA_BUILD_COMMON ON CACHE BOOL "Build llama.cpp common library" FORCE)'
TEXT_ONLY_COMMON = 'set(LLAMA_BUILD_COMMON OFF CACHE BOOL "Build llama.cpp common library" FORCE)'
CMAKE_ARGS = ("-DLLAVA_BUILD=OFF",)
# What the bindings load (llama_cpp/llama_cpp.py, _ctypes_extensions.py): checked in the built wheel.
REQUIRED_LIBS = ("libllama.so", "libggml.so", "libggml-base.so", "libggml-cpu.so")
LEFT_OUT_LIBS = ("libmtmd.so", "libllama-common.so")


def text_only_sources(sdist: Path, dest: Path) -> Path:
    """Extract the sdist under `dest` and switch off the forced `common` build; return the source root."""
    with tarfile.open(sdist, "r:gz") as tar:
        tar.extractall(dest, filter="data")
    (root,) = [p for p in dest.iterdir() if p.is_dir()]
    cmake = root / "CMakeLists.txt"
    text = cmake.read_text()
    if text.count(FORCED_COMMON) != 1:
        raise EngineError(
            f"{sdist.name}: its CMakeLists.txt does not force the common library as this build expects.",
            hint="Update llmhost/engines/llamacpp_wheel.py for this llama-cpp-python version.",
        )
    cmake.write_text(text.replace(FORCED_COMMON, TEXT_ONLY_COMMON))
    return root


def check_wheel(wheel: Path) -> None:
    """The libraries the bindings load are in the wheel, the two left out are not."""
    names = {Path(n).name for n in zipfile.ZipFile(wheel).namelist()}
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
    sdist = download_sdist(version, log=lambda m: print(m, file=sys.stderr))
    out.mkdir(parents=True, exist_ok=True)
    # Beside the cache so the finished wheel is renamed into place (atomic: no half-written wheel).
    with tempfile.TemporaryDirectory(prefix=".build-", dir=out) as tmp:
        root = text_only_sources(sdist, Path(tmp))
        env = {
            **os.environ,
            "CMAKE_ARGS": " ".join([os.environ.get("CMAKE_ARGS", ""), *CMAKE_ARGS]).strip(),
            "CMAKE_BUILD_PARALLEL_LEVEL": str(jobs or os.cpu_count() or 1),
        }
        dist = Path(tmp) / "dist"
        argv = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(root)]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise EngineError(
                f"Building llama-cpp-python {version} failed:\n{tail}",
                hint="It needs cmake and a C++ compiler (e.g. `apt-get install cmake g++`).",
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
