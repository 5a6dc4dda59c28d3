"""The native llama-server build: flags per hardware, cache key, reuse of the cached build."""

from __future__ import annotations

import sys

import pytest

from llmhost.engines import llamacpp_build as b
from support.serve_helpers import llmhost


def test_gpu_flags_follow_the_hardware() -> None:
    if sys.platform != "darwin":
        assert b.gpu_flags(has_nvidia=False, is_apple=False, nvcc="/usr/bin/nvcc") == []
        assert b.gpu_flags(has_nvidia=True, is_apple=False, nvcc=None) == []  # no compiler, no CUDA build
        assert b.gpu_flags(has_nvidia=True, is_apple=False, nvcc="/x/nvcc")[0] == "-DGGML_CUDA=ON"
    assert b.gpu_flags(has_nvidia=False, is_apple=True, nvcc=None) == ["-DGGML_METAL=ON"]


def test_offline_build_flags_and_cache_key() -> None:
    flags = b.build_flags([])
    for needed in ("-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF"):
        assert needed in flags
    cpu = b.build_key("abc", flags)
    assert cpu == b.build_key("abc", list(flags))
    assert cpu != b.build_key("abd", flags)  # a new sdist never reuses an old binary
    assert cpu != b.build_key("abc", b.build_flags(["-DGGML_CUDA=ON"]))  # CPU and CUDA builds side by side


def test_install_reuses_the_cached_build() -> None:
    sdist = b.find_sdist()
    if sdist is None:
        pytest.skip("llama-cpp-python sdist not cached: run `llmhost engines install llama-server` first")
    key = b.build_key(
        b.sha256_file(sdist), b.build_flags(b.gpu_flags(has_nvidia=False, is_apple=False, nvcc=None))
    )
    if not b.installed_binary(key).is_file():
        pytest.skip("llama-server not built for this machine: run `llmhost engines install llama-server`")
    out = llmhost("engines", "install", "llama-server", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "already built" in out.stderr
    assert out.stdout.strip() == str(b.installed_binary(key))
