"""Serve falls back to llama.cpp when the plan picked vLLM but vLLM cannot run here (unless forced)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmhost.app.serve import runnable_candidate
from llmhost.engines import vllm_env
from llmhost.errors import EngineError
from llmhost.hardware.models import CPU, Hardware
from llmhost.plan.models import Plan, PlanModel
from llmhost.plan.reasons import ReasonCode

HARDWARE = Hardware(
    os="linux",
    cpu=CPU(model_name="test cpu", architecture="x86_64", logical_cores=2),
    ram_total_bytes=24 * 1024**3,
    ram_available_bytes=20 * 1024**3,
)


@pytest.fixture
def no_vllm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine where vLLM is not installed (llama-cpp-python, in llmhost's env, is)."""
    monkeypatch.setenv("LLMHOST_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LLMHOST_VLLM_PYTHON", raising=False)
    monkeypatch.setattr(vllm_env, "_current_interpreter_runtime", lambda: None)


def _plan(make_cpu_candidate, tmp_path: Path) -> Plan:
    vllm = make_cpu_candidate(str(tmp_path))
    gguf = tmp_path / "model.gguf"
    llama = make_cpu_candidate(
        str(gguf), engine="llamacpp", quantization="Q8_0", kv_cache_dtype="f16", gguf_file=str(gguf),
        engine_options={},  # the fixture's knobs are vLLM's; typed options refuse them on llama.cpp
    )  # fmt: skip
    model = PlanModel(
        ref="m", name="m", architecture="llama", parameters=1, active_parameters=1, max_context=2048,
        quantization="bf16", weights_bytes=1,
    )  # fmt: skip
    return Plan(model=model, hardware=HARDWARE, candidates=[vllm, llama], chosen=0)


def test_falls_back_to_llamacpp_and_says_why(no_vllm: None, make_cpu_candidate, tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    plan = _plan(make_cpu_candidate, tmp_path)
    chosen = runnable_candidate(plan, plan.candidates[0], HARDWARE, forced=False, dry_run=False)
    assert chosen.engine == "llamacpp"
    assert "vllm cannot run here" in chosen.reasons[0] and "llmhost engines install vllm" in chosen.reasons[0]
    fallback = chosen.reasons_detail[0]
    assert fallback.code == ReasonCode.ENGINE_FALLBACK and fallback.level == "warning"
    assert (fallback.fields["engine"], fallback.fields["fallback"]) == ("vllm", "llamacpp")


def test_forced_vllm_fails_with_the_install_command(
    no_vllm: None, make_cpu_candidate, tmp_path: Path
) -> None:
    plan = _plan(make_cpu_candidate, tmp_path)
    with pytest.raises(EngineError, match="llmhost engines install vllm"):
        runnable_candidate(plan, plan.candidates[0], HARDWARE, forced=True, dry_run=False)
    # A dry run still prints the forced command.
    forced = runnable_candidate(plan, plan.candidates[0], HARDWARE, forced=True, dry_run=True)
    assert forced.engine == "vllm"


def test_installed_vllm_is_kept(make_cpu_candidate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    python = tmp_path / "python"
    python.write_text("")
    monkeypatch.setenv("LLMHOST_VLLM_PYTHON", str(python))  # "a python that has vLLM"
    plan = _plan(make_cpu_candidate, tmp_path)
    assert (
        runnable_candidate(plan, plan.candidates[0], HARDWARE, forced=False, dry_run=False).engine == "vllm"
    )
