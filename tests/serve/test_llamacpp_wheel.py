"""llama-cpp-python's text-only wheel: the one-line CMake switch, its loud failure, the wheel check."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from llmhost.engines import llamacpp_build, llamacpp_wheel
from llmhost.errors import EngineError


def _sdist(tmp_path: Path, cmake: str) -> Path:
    path = tmp_path / "llama_cpp_python-0.0.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        data = cmake.encode()
        info = tarfile.TarInfo("llama_cpp_python-0.0.0/CMakeLists.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_the_forced_common_library_is_switched_off(tmp_path: Path) -> None:
    cmake = f"project(llama_cpp)\n    {llamacpp_wheel.FORCED_COMMON}\nadd_subdirectory(vendor/llama.cpp)\n"
    root = llamacpp_wheel.text_only_sources(_sdist(tmp_path, cmake), tmp_path / "src")
    text = (root / "CMakeLists.txt").read_text()
    assert llamacpp_wheel.TEXT_ONLY_COMMON in text and llamacpp_wheel.FORCED_COMMON not in text
    assert text.startswith("project(llama_cpp)\n") and text.endswith("add_subdirectory(vendor/llama.cpp)\n")


def test_an_sdist_that_moved_the_switch_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="does not force the common library"):
        llamacpp_wheel.text_only_sources(_sdist(tmp_path, "project(llama_cpp)\n"), tmp_path / "src")


def test_the_pinned_sdist_has_the_line_we_switch() -> None:
    sdist = llamacpp_build.find_sdist()
    if sdist is None:
        pytest.skip("llama-cpp-python sdist not cached: `make venv` downloads it")
    with tarfile.open(sdist, "r:gz") as tar:
        top = [m for m in tar.getmembers() if m.name.count("/") == 1]
        (member,) = [m for m in top if m.name.endswith("/CMakeLists.txt")]
        handle = tar.extractfile(member)
        assert handle is not None
        text = handle.read().decode()
    assert text.count(llamacpp_wheel.FORCED_COMMON) == 1
    assert "option(LLAVA_BUILD" in text  # what CMAKE_ARGS -DLLAVA_BUILD=OFF turns off


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
