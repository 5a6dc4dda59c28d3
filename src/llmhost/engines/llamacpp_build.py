"""Build the native `llama-server` from the llama.cpp sources vendored in the llama-cpp-python sdist.

Why the sdist: it is on PyPI (the only registry every machine reaches), it pins a llama.cpp commit that
matches the llama-cpp-python runtime we also ship, and `pip download` resumes/caches like any package.

The result is cached under `$LLMHOST_CACHE_DIR/engines/llama-server-<key>/bin/llama-server`, where the
key hashes the sdist's sha256 together with the cmake flags (so a CUDA build and a CPU build of the
same sources live side by side, and a new sdist never reuses an old binary).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from llmhost.atomic import write_atomic
from llmhost.cache import cache_dir, engines_dir
from llmhost.errors import EngineError

LLAMA_CPP_PYTHON_VERSION = "0.3.36"

# Options that keep the build small and offline: no tests/examples, no HTTPS client (no -hf downloads:
# llmhost downloads models itself), no prebuilt web UI fetched from the network at configure time.
BASE_CMAKE_FLAGS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
)


def gpu_flags(*, has_nvidia: bool, is_apple: bool, nvcc: str | None) -> list[str]:
    """GPU backend flags for the detected hardware: CUDA needs both an NVIDIA GPU and nvcc; Metal on macOS."""
    if is_apple or sys.platform == "darwin":
        return ["-DGGML_METAL=ON"]
    if has_nvidia and nvcc:
        return ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_COMPILER={nvcc}"]
    return []


def build_flags(extra: list[str]) -> list[str]:
    return [*BASE_CMAKE_FLAGS, *extra]


def build_key(sdist_sha256: str, flags: list[str]) -> str:
    digest = hashlib.sha256("\n".join([sdist_sha256, platform.machine(), *flags]).encode()).hexdigest()
    return digest[:16]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_sdist(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path | None:
    candidate = cache_dir() / "sdist" / f"llama_cpp_python-{version}.tar.gz"
    return candidate if candidate.is_file() else None


def download_sdist(version: str = LLAMA_CPP_PYTHON_VERSION, *, log: Callable[[str], None] = print) -> Path:
    """Reuse the cached sdist, else fetch it from PyPI with pip (the one registry client we rely on)."""
    cached = find_sdist(version)
    if cached is not None:
        return cached
    dest = cache_dir() / "sdist"
    dest.mkdir(parents=True, exist_ok=True)
    log(f"downloading llama-cpp-python {version} sources with pip into {dest}")
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-binary",
        ":all:",
        "--no-deps",
        "-d",
        str(dest),
        f"llama-cpp-python=={version}",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    found = find_sdist(version)
    if proc.returncode != 0 or found is None:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise EngineError(
            f"Could not download the llama-cpp-python {version} sources: {tail}",
            hint="Check that PyPI is reachable, then rerun `llmhost engines install llama-server`.",
        )
    return found


def installed_binary(key: str) -> Path:
    return engines_dir() / f"llama-server-{key}" / "bin" / "llama-server"


def find_cached_binary() -> Path | None:
    """Any cached llama-server build (the newest), without hashing the sdist: cheap for `engines`/`serve`."""
    root = engines_dir()
    if not root.is_dir():
        return None
    builds = [p / "bin" / "llama-server" for p in root.glob("llama-server-*")]
    usable = [b for b in builds if b.is_file() and os.access(b, os.X_OK)]
    if not usable:
        return None
    return max(usable, key=lambda p: p.stat().st_mtime)


def build_llama_server(
    *,
    has_nvidia: bool = False,
    is_apple: bool = False,
    jobs: int | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Build (or reuse the cached) `llama-server` and return its path."""
    for tool in ("cmake",):
        if shutil.which(tool) is None:
            raise EngineError(
                f"`{tool}` is not installed; it is needed to build llama-server.",
                hint="Install cmake and a C++ compiler (e.g. `apt-get install cmake g++`), then rerun "
                "`llmhost engines install llama-server`.",
            )
    sdist = download_sdist(log=log)
    flags = build_flags(gpu_flags(has_nvidia=has_nvidia, is_apple=is_apple, nvcc=shutil.which("nvcc")))
    key = build_key(sha256_file(sdist), flags)
    target = installed_binary(key)
    if target.is_file() and not force:
        log(f"llama-server already built: {target}")
        return target

    work = engines_dir() / "build" / key
    src_root = work / "src"
    build_dir = work / "build"
    if not (src_root / "vendor" / "llama.cpp" / "CMakeLists.txt").is_file():
        log(f"unpacking {sdist.name}")
        shutil.rmtree(src_root, ignore_errors=True)
        src_root.mkdir(parents=True)
        _extract_vendor(sdist, src_root)
    llama_src = src_root / "vendor" / "llama.cpp"
    jobs = jobs or os.cpu_count() or 2
    log_file = work / "build.log"
    log(f"building llama-server ({' '.join(flags)}) with {jobs} jobs; log: {log_file}")
    with log_file.open("a") as out:
        for argv in (
            ["cmake", "-S", str(llama_src), "-B", str(build_dir), *flags],
            ["cmake", "--build", str(build_dir), "--target", "llama-server", "-j", str(jobs)],
        ):
            out.write(f"$ {' '.join(argv)}\n")
            out.flush()
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
            if proc.returncode != 0:
                tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
                raise EngineError(
                    f"Building llama-server failed (exit {proc.returncode}); end of {log_file}:\n{tail}",
                    hint="Fix the problem shown above, then rerun `llmhost engines install llama-server`.",
                )
    built = build_dir / "bin" / "llama-server"
    if not built.is_file():
        raise EngineError(f"The build finished but {built} is missing.", hint=f"See {log_file}.")
    write_atomic(target, lambda tmp: shutil.copy2(built, tmp), mode=0o755, make_parents=True)
    (target.parent.parent / "BUILD_INFO").write_text(
        f"sdist={sdist.name}\nsdist_sha256={sha256_file(sdist)}\nflags={' '.join(flags)}\n"
    )
    log(f"llama-server built: {target}")
    return target


def _extract_vendor(sdist: Path, dest: Path) -> None:
    """Extract only `vendor/llama.cpp` from the sdist, refusing paths that escape `dest`."""
    with tarfile.open(sdist, "r:gz") as tar, tempfile.TemporaryDirectory(dir=dest) as tmp:
        members = [
            m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name or m.name.endswith("/vendor")
        ]
        tar.extractall(tmp, members=members, filter="data")
        roots = list(Path(tmp).iterdir())
        if len(roots) != 1:
            raise EngineError(f"Unexpected layout of {sdist.name}.", hint="Delete it and rerun the install.")
        (roots[0] / "vendor").rename(dest / "vendor")
