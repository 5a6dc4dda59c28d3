"""The MLX LM engine module without starting it: argv from a real plan, loopback only, no API key it
cannot enforce, failure causes read from real mlx_lm output, and the engine env's package choice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmhost.engines import mlx_env
from llmhost.engines.base import ServeOptions
from llmhost.engines.mlx import ENGINE, classify_failure, parse_startup
from llmhost.errors import EngineError, ProfileError, UsageError
from llmhost.hardware.detect import detect
from llmhost.models import resolve
from llmhost.plan import PlanRequest, make_plan
from llmhost.plan.models import Candidate
from llmhost.profiles import chat_template_args

LOGS = Path(__file__).parent / "logs"


def planned(model: Path, **request: object) -> Candidate:
    """The best MLX candidate for this (Linux) machine, forced with engine="mlx"."""
    plan = make_plan(resolve(str(model)), detect(), PlanRequest(engine="mlx", **request))  # type: ignore[arg-type]
    return plan.chosen_candidate or plan.candidates[0]


def options(**overrides: object) -> ServeOptions:
    fields: dict[str, object] = {"name": "t", "served_model_name": "tiny", "port": 18123}
    fields.update(overrides)
    return ServeOptions(**fields)  # type: ignore[arg-type]


def test_argv_carries_the_plan(tiny_checkpoint: Path) -> None:
    candidate = planned(tiny_checkpoint, context=300, concurrency=12)
    launch = ENGINE.build_launch(candidate, options(extra_args=["--temp", "0.7"]))
    argv = launch.argv
    assert argv[1:4] == ["-m", "mlx_lm", "server"]

    def flag(name: str) -> str:
        return argv[argv.index(name) + 1]

    assert flag("--model") == str(tiny_checkpoint.resolve()) and flag("--host") == "127.0.0.1"
    assert flag("--port") == "18123"
    assert flag("--decode-concurrency") == "12" and flag("--prompt-concurrency") == "8"
    assert int(flag("--prompt-cache-bytes")) == candidate.memory.kv_cache_bytes > 0
    assert flag("--max-tokens") == "300"  # never above the planned context (mlx_lm's default is 512)
    assert "--trust-remote-code" not in argv and argv[-2:] == ["--temp", "0.7"]
    # Clients name the model by the path mlx_lm lists in /v1/models; readiness waits for it.
    assert launch.served_model_name == str(tiny_checkpoint.resolve()) and launch.api_key_env is None
    assert launch.env["HF_HUB_OFFLINE"] == "1" and Path(launch.env["HF_HUB_CACHE"]).is_dir()
    assert "HF_HUB_OFFLINE" in launch.env_remove and launch.completion_probe_interval_s
    trusting = ENGINE.build_launch(candidate, options(trust_remote_code=True))
    assert "--trust-remote-code" in trusting.argv


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.5", "example.com"])
def test_non_loopback_hosts_are_refused(tiny_checkpoint: Path, host: str) -> None:
    with pytest.raises(UsageError, match="never binds it beyond loopback") as err:
        ENGINE.build_launch(planned(tiny_checkpoint), options(host=host))
    assert err.value.exit_code == 2 and "gateway" in (err.value.hint or "")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_hosts_are_served(tiny_checkpoint: Path, host: str) -> None:
    launch = ENGINE.build_launch(planned(tiny_checkpoint), options(host=host))
    assert launch.argv[launch.argv.index("--host") + 1] == host


def test_an_api_key_it_cannot_enforce_is_refused(tiny_checkpoint: Path) -> None:
    with pytest.raises(UsageError, match="cannot check an API key"):
        ENGINE.build_launch(planned(tiny_checkpoint), options(api_key_env="LLMHOST_API_KEY"))


def test_a_hub_id_or_an_unconverted_option_is_refused_with_what_to_do(tiny_checkpoint: Path) -> None:
    hub = planned(tiny_checkpoint).model_copy(update={"model_source": "mlx-community/Qwen3-0.6B-4bit"})
    with pytest.raises(UsageError, match="local checkpoint directory") as err:
        ENGINE.build_launch(hub, options())
    assert "--local-dir" in (err.value.hint or "")
    four = planned(tiny_checkpoint, quantization="mlx-4bit")
    with pytest.raises(UsageError, match="MLX conversion") as err:
        ENGINE.build_launch(four, options())
    assert "mlx_lm.convert" in (err.value.hint or "") and "--q-bits 4" in (err.value.hint or "")


def test_serve_refuses_a_public_host_in_one_line(tiny_checkpoint: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LLMHOST_API_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "llmhost", "serve", str(tiny_checkpoint), "--engine", "mlx",
         "--host", "0.0.0.0", "--dry-run"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: MLX LM's server has no API key")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("log", "cause"),
    [
        ("no_safetensors.log", "model_invalid"),
        ("missing_model_dir.log", "model_invalid"),
        ("port_in_use.log", "port_in_use"),
        ("unrecognized_argument.log", "bad_argument"),
        ("healthy_start.log", None),
    ],
)
def test_failure_causes_from_real_mlx_lm_output(log: str, cause: str | None) -> None:
    # Recorded from mlx-lm 0.32.2 on mlx-cpu: a directory without weights, a path that does not exist
    # (offline, mlx_lm takes it for a repo id), a port another server holds, a flag mlx_lm lacks.
    assert classify_failure((LOGS / log).read_text()) == cause


def test_fixes_name_the_next_step(tiny_checkpoint: Path) -> None:
    launch = ENGINE.build_launch(planned(tiny_checkpoint), options())
    invalid = ENGINE.suggest_fix("model_invalid", "No safetensors found", launch, None) or ""
    assert str(tiny_checkpoint.resolve()) in invalid and "--engine llamacpp" in invalid
    assert "iogpu.wired_limit_mb" in (
        ENGINE.suggest_fix("out_of_memory", "[metal::malloc]", launch, None) or ""
    )
    assert ENGINE.suggest_fix("port_in_use", "Address already in use", launch, None) is None


def test_a_profile_can_name_the_mlx_engine() -> None:
    from llmhost.profiles import parse_profile

    assert parse_profile("model: ./tiny\nengine: mlx\n").engine == "mlx"


def test_parse_startup_reads_where_it_listens() -> None:
    report = parse_startup((LOGS / "healthy_start.log").read_text())
    assert report.raw == {"listening": "127.0.0.1:18997"} and report.kv_cache_bytes is None


def test_status_without_the_env_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMHOST_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(mlx_env.PYTHON_OVERRIDE_ENV, raising=False)
    (status,) = ENGINE.status(detect())
    assert not status.installed and "llmhost engines install mlx" in (status.reason or "")
    assert "mlx-cpu==" in (status.reason or "")


def test_packages_per_platform_are_pinned() -> None:
    mac = mlx_env.choose_package("darwin", "arm64")
    assert mac.device == "metal" and f"mlx-metal=={mlx_env.MLX_VERSION}" in mac.requirements
    linux = mlx_env.choose_package("linux", "x86_64")
    assert linux.device == "cpu" and f"mlx-cpu=={mlx_env.MLX_VERSION}" in linux.requirements
    assert all("==" in r for r in (*mac.requirements, *linux.requirements))
    assert mlx_env.MLX_LM_VERSION in linux.key and linux.key != mac.key
    with pytest.raises(EngineError, match="Apple Silicon"):
        mlx_env.choose_package("darwin", "x86_64")
    with pytest.raises(EngineError, match="no build"):
        mlx_env.choose_package("win32", "amd64")


def test_profile_chat_template_for_mlx_is_the_file_text(tmp_path: Path) -> None:
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert chat_template_args(str(template), "mlx", "mlx-lm") == ["--chat-template", template.read_text()]
    with pytest.raises(ProfileError, match="no built-in template"):
        chat_template_args("gemma", "mlx", "mlx-lm")
