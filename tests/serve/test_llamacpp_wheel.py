"""llama-cpp-python's text-only wheel: the CMake hook on the real sources, the wheel check, the cache."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from llmhost.engines import llamacpp_build, llamacpp_wheel
from llmhost.errors import EngineError


def test_cmake_args_keep_the_users_own_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hook = tmp_path / "text_only.cmake"
    monkeypatch.setenv("CMAKE_ARGS", "-DGGML_CUDA=ON")
    args = llamacpp_wheel.cmake_args(hook).split()
    assert args == ["-DGGML_CUDA=ON", "-DLLAVA_BUILD=OFF", f"-DCMAKE_PROJECT_llama.cpp_INCLUDE={hook}"]
    monkeypatch.delenv("CMAKE_ARGS")
    assert llamacpp_wheel.cmake_args(hook).split()[0] == "-DLLAVA_BUILD=OFF"


def _configure(root: Path, build: Path, args: list[str]) -> str:
    proc = subprocess.run(
        ["cmake", "-S", str(root), "-B", str(build), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return (build / "CMakeCache.txt").read_text()


@pytest.mark.skipif(shutil.which("cmake") is None, reason="no cmake")
def test_the_hook_turns_common_off_in_the_pinned_sources(tmp_path: Path) -> None:
    """CMake configures the real 0.3.36 sources: with the hook (and LLAVA_BUILD=OFF) neither the common
    library nor mtmd is part of the build; without it llama-cpp-python's forced ON holds."""
    sdist = llamacpp_build.find_sdist()
    if sdist is None:
        pytest.skip("llama-cpp-python sdist not cached: `llmhost engines install llama-server` downloads it")
    with tarfile.open(sdist, "r:gz") as tar:
        tar.extractall(tmp_path / "src", filter="data")
    (root,) = (tmp_path / "src").iterdir()
    hook = tmp_path / "text_only.cmake"
    hook.write_text(llamacpp_wheel.TEXT_ONLY_HOOK)
    # The two configures are independent (own build dirs) and mostly wait on the compiler checks they
    # spawn: run side by side.
    with ThreadPoolExecutor(2) as pool:
        text_job = pool.submit(_configure, root, tmp_path / "text", llamacpp_wheel.cmake_args(hook).split())
        stock_job = pool.submit(_configure, root, tmp_path / "stock", [])
        text_only, stock = text_job.result(), stock_job.result()
    assert "LLAMA_BUILD_COMMON:BOOL=OFF" in text_only and "LLAVA_BUILD:BOOL=OFF" in text_only
    assert not (tmp_path / "text" / "vendor" / "llama.cpp" / "common").exists()
    assert not (tmp_path / "text" / "vendor" / "llama.cpp" / "tools" / "mtmd").exists()
    assert "LLAMA_BUILD_COMMON:BOOL=ON" in stock
    assert (tmp_path / "stock" / "vendor" / "llama.cpp" / "common").is_dir()


def _wheel(tmp_path: Path, libs: list[str]) -> Path:
    path = tmp_path / "llama_cpp_python-0.0.0-py3-none-linux_x86_64.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("llama_cpp/__init__.py", "")
        for lib in libs:
            z.writestr(f"llama_cpp/lib/{lib}", b"\x7fELF")
    return path


def test_the_wheel_check(tmp_path: Path) -> None:
    llamacpp_wheel.check_wheel(_wheel(tmp_path, list(llamacpp_wheel.REQUIRED_LIBS)))
    with pytest.raises(EngineError, match="missing"):
        llamacpp_wheel.check_wheel(_wheel(tmp_path, ["libllama.so"]))
    with pytest.raises(EngineError, match="libmtmd"):
        llamacpp_wheel.check_wheel(_wheel(tmp_path, [*llamacpp_wheel.REQUIRED_LIBS, "libmtmd.so"]))


def test_a_cached_wheel_is_reused(tmp_path: Path) -> None:
    cached = _wheel(tmp_path, [])
    assert llamacpp_wheel.build_wheel(tmp_path, "0.0.0") == cached  # no download, no compile
