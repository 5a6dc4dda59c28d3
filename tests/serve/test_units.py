"""Pure parts of serving: engine argv/env, failure classification and start-up parsing on recorded real
logs, API-key policy, profiles, state files, log rotation, Prometheus parsing."""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from pathlib import Path

import pytest

from llmhost.app.serve import decide_api_key, default_name, engine_choice
from llmhost.engines.base import ServeOptions
from llmhost.engines.llamacpp import ENGINE, LlamaCppEngine
from llmhost.errors import ProfileError, UsageError
from llmhost.net import is_loopback
from llmhost.plan.models import Candidate, MemoryBreakdown
from llmhost.profiles import PROFILES_DIR, load_profile, parse_profile, shipped_profiles
from llmhost.prometheus import parse_prometheus
from llmhost.supervise.logs import RotatingLog, follow, tail

DATA = Path(__file__).with_name("data")


def _candidate(path: str, **kw) -> Candidate:
    mem = MemoryBreakdown(weights_bytes=1, kv_cache_bytes=1, compute_bytes=1, overhead_bytes=1, total_bytes=4)
    base = dict(
        engine="llamacpp", quantization="Q4_K_M", kv_cache_dtype="f16", context_length=4096, concurrency=4,
        fits=True, memory=mem, kv_bytes_per_token=1, max_context=8192, max_concurrency=8,
        decode_tokens_per_s=None, model_source=path, gguf_file=path, gpu_layers=99,
        engine_options={"threads": 2, "n_batch": 1024, "n_ubatch": 256},
    )  # fmt: skip
    base.update(kw)
    return Candidate(**base)


def _options(**kw) -> ServeOptions:
    return ServeOptions(name="x", served_model_name="served", port=8123, **kw)


def test_llama_server_argv_from_the_plan(tmp_path: Path) -> None:
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    spec = ENGINE.build_launch(
        _candidate("/m.gguf", kv_cache_dtype="q8_0"),
        _options(engine_bin=str(binary), api_key_env="LLMHOST_API_KEY", extra_args=["--seed", "1"]),
    )
    argv = spec.argv
    assert argv[0] == str(binary) and spec.runtime == "llama-server"
    pairs = dict(itertools.pairwise(argv))
    assert pairs["-m"] == "/m.gguf" and pairs["--alias"] == "served" and pairs["--port"] == "8123"
    assert pairs["-c"] == str(4096 * 4) and pairs["-np"] == "4"  # total KV = context x slots
    assert pairs["-ngl"] == "99" and pairs["-t"] == "2" and pairs["-b"] == "1024" and pairs["-ub"] == "256"
    assert (
        pairs["-ctk"] == "q8_0" and pairs["-ctv"] == "q8_0" and pairs["-fa"] == "on"
    )  # quantized V needs FA
    assert argv[-2:] == ["--seed", "1"]
    assert spec.secret_env == {"LLAMA_API_KEY": "LLMHOST_API_KEY"} and "--api-key" not in argv
    assert "LLAMA_ARG_*" in spec.env_remove
    assert spec.health_path == "/health" and spec.metrics_path == "/metrics"
    assert spec.base_url == "http://127.0.0.1:8123/v1"


def test_llama_cpp_python_argv_is_safe_for_concurrent_clients() -> None:
    pytest.importorskip("llama_cpp")
    spec = ENGINE.build_launch(_candidate("/m.gguf"), _options(runtime="llama-cpp-python", api_key_env="K"))
    argv = spec.argv
    assert argv[:3] == [sys.executable, "-m", "llama_cpp.server"]
    assert argv[argv.index("--interrupt_requests") + 1] == "False"
    assert argv[argv.index("--n_ctx") + 1] == "4096" and argv[argv.index("--model_alias") + 1] == "served"
    assert "--type_k" not in argv  # f16 is the default: not passed
    assert (
        spec.env["PORT"] == "8123" and spec.env["HOST"] == "127.0.0.1"
    )  # its __main__ prefers env over flags
    assert spec.secret_env == {"API_KEY": "K"} and "API_KEY" in spec.env_remove
    assert spec.health_path == spec.models_path == "/v1/models"


def test_no_repack_reaches_both_runtimes(tmp_path: Path) -> None:
    """A plan without llama.cpp's extra CPU buffer types (an AMX host) turns them off in either runtime:
    llama-server by its flag, llama-cpp-python through llmhost's wrapper module (its server has none)."""
    pytest.importorskip("llama_cpp")
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    cand = _candidate("/m.gguf", engine_options={"threads": 2, "repack": False})
    native = ENGINE.build_launch(cand, _options(engine_bin=str(binary))).argv
    assert "--no-repack" in native
    python = ENGINE.build_launch(cand, _options(runtime="llama-cpp-python")).argv
    assert python[:3] == [sys.executable, "-m", "llmhost.engines._llama_cpp_python_server"]
    assert "--no-repack" in python and python[python.index("--n_ctx") + 1] == "4096"
    default = ENGINE.build_launch(_candidate("/m.gguf"), _options(runtime="llama-cpp-python")).argv
    assert "--no-repack" not in default and default[2] == "llama_cpp.server"


def test_no_repack_wrapper_clears_use_extra_bufts() -> None:
    from llmhost.engines._llama_cpp_python_server import disable_extra_buffer_types

    class Params:
        use_extra_bufts = True
        n_gpu_layers = 0

    class Bindings:
        @staticmethod
        def llama_model_default_params() -> Params:
            return Params()

    disable_extra_buffer_types(Bindings)
    params = Bindings.llama_model_default_params()
    assert params.use_extra_bufts is False and params.n_gpu_layers == 0


def test_unknown_runtime_and_bad_engine_bin_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="runtime"):
        ENGINE.build_launch(_candidate("/m.gguf"), _options(runtime="nope"))
    with pytest.raises(UsageError, match="not an executable"):
        ENGINE.build_launch(_candidate("/m.gguf"), _options(engine_bin=str(tmp_path / "missing")))


@pytest.mark.parametrize(
    ("line", "cause"),
    [
        ("ggml_backend_cuda_buffer_type_alloc_buffer: allocating 8192.00 MiB on device 0: cudaMalloc failed: "
         "out of memory", "out_of_memory"),
        ("llama_init_from_model: failed to allocate compute buffers", "out_of_memory"),
        # ggml_init's malloc failing (seen under `ulimit -v`): an abort, not an "out of memory" line.
        ("llama.cpp/ggml/src/ggml.c:1644: GGML_ASSERT(ctx->mem_buffer != NULL) failed", "out_of_memory"),
        ("ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', 8000): "
         "address already in use", "port_in_use"),
        ("srv  operator(): couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 8080", "port_in_use"),
        ("llama-server: error while loading shared libraries: libcuda.so.1: cannot open shared object file",
         "missing_library"),
        ("ModuleNotFoundError: No module named 'uvicorn'", "missing_library"),
        ("error: invalid argument: --bogus", "bad_argument"),
        ("everything is fine", None),
    ],
)  # fmt: skip
def test_classify_failure(line: str, cause: str | None) -> None:
    assert ENGINE.classify_failure(f"some line\n{line}\nanother") == cause


def test_classify_recorded_invalid_gguf() -> None:
    assert ENGINE.classify_failure((DATA / "llama_cpp_python_bad_gguf.log").read_text()) == "model_invalid"


def test_parse_startup_recorded_llama_cpp_python_log() -> None:
    report = LlamaCppEngine().parse_startup((DATA / "llama_cpp_python_startup.log").read_text())
    mib = 1024 * 1024
    assert report.weights_bytes == 2 * mib
    assert report.kv_cache_tokens == 2048
    assert report.kv_cache_bytes == 2 * mib  # 4 layers x 2 KV heads x 32 dims x f16 x 2 (K and V) x 2048
    assert report.compute_bytes is not None and report.compute_bytes > 0
    assert report.raw["n_ctx"] == "2048"


def test_api_key_policy() -> None:
    assert decide_api_key("127.0.0.1", None, False) == (None, False)
    assert decide_api_key("::1", None, False) == (None, False)
    key, generated = decide_api_key("0.0.0.0", None, False)
    assert generated and key is not None and len(key) >= 32
    assert decide_api_key("0.0.0.0", None, True) == (None, False)
    assert decide_api_key("10.0.0.5", "given-key-123", False) == ("given-key-123", False)
    with pytest.raises(UsageError, match="too short"):
        decide_api_key("127.0.0.1", "abc", False)
    assert is_loopback("localhost") and not is_loopback("example.com")


def test_names_and_engine_aliases() -> None:
    assert default_name("Meta-Llama-3.1-8B-Instruct Q4_K_M") == "meta-llama-3.1-8b-instruct-q4_k_m"
    assert engine_choice("llama-server") == ("llamacpp", "llama-server")
    with pytest.raises(UsageError, match="Unknown engine"):
        engine_choice("tgi")


def test_shipped_profiles_are_valid() -> None:
    names = {p.stem for p in shipped_profiles()}
    assert {"laptop-chat", "long-context", "throughput", "tiny-demo"} <= names
    for path in shipped_profiles():
        load_profile(path)
    assert load_profile("laptop-chat").quant == "Q4_K_M"
    # Names with dots load by name too, as the "No profile file" hint lists them.
    for name in names:
        assert load_profile(name) == load_profile(PROFILES_DIR / f"{name}.yaml")
    assert load_profile("qwen2.5-7b-instruct").model == "Qwen/Qwen2.5-7B-Instruct"


def test_profile_errors_name_the_key_and_line() -> None:
    text = "engine: llamacpp\ncontext: 4096\ncontxt: 8192\nconcurrency: 0\n"
    with pytest.raises(ProfileError) as err:
        parse_profile(text, "p.yaml")
    msg = str(err.value)
    assert "p.yaml:3: contxt: Extra inputs are not permitted" in msg
    assert "p.yaml:4: concurrency" in msg
    assert ". Profile keys: description, model," in msg  # message and hint read as two sentences
    with pytest.raises(ProfileError, match=r"p.yaml:\d: invalid YAML"):
        parse_profile("a: 1\nb: [1\nc: 2\n", "p.yaml")
    with pytest.raises(ProfileError, match="secrets do not belong"):
        parse_profile("env:\n  OPENAI_API_KEY: x\n", "p.yaml")
    with pytest.raises(ProfileError, match="No profile file"):
        load_profile("/no/such/profile.yaml")
    # yaml.safe_load semantics: no Python objects.
    with pytest.raises(ProfileError):
        parse_profile("model: !!python/object/apply:os.system ['true']\n", "p.yaml")


def _nested_aliases(levels: int) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        (_nested_aliases(9), r"p.yaml:\d+: more than 10000 values once aliases are expanded"),  # hung serve
        ("a: &a [*a]\n", r"p.yaml:1: an alias refers to itself"),
        ("[" * 5000, r"p.yaml:1: nested deeper than 32 levels"),  # a RecursionError past ~1000
        ("context: 1024\ncontext: 2048\n", r"p.yaml:2: context: given twice"),  # the last one silently won
        ('extra_args: ["--temp", "0.5\\0"]\n', r"p.yaml:1: extra_args: .*cannot contain NUL"),
        ('env: {"A=B": "1"}\n', r"p.yaml:1: env: .*without '=' or NUL"),
        ('host: ""\n', r"p.yaml:1: host: .*host is empty"),
    ],
)
def test_profile_yaml_is_bounded_and_unambiguous(text: str, refusal: str) -> None:
    with pytest.raises(ProfileError, match=refusal):
        parse_profile(text, "p.yaml")


def test_a_profile_may_still_use_aliases() -> None:
    profile = parse_profile("description: &m org/tiny\nmodel: *m\nextra_args: &a [--temp, '0.5']\n", "p.yaml")
    assert profile.model == "org/tiny" and profile.extra_args == ["--temp", "0.5"]


@pytest.mark.timeout(10)
def test_profile_files_are_read_bounded(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "fifo.yaml")  # hung `serve --profile` waiting for a writer
    with pytest.raises(ProfileError, match=r"is a FIFO \(named pipe\), not a file"):
        load_profile(tmp_path / "fifo.yaml")
    with pytest.raises(ProfileError, match="is a directory, not a file"):
        load_profile(tmp_path)
    with pytest.raises(ProfileError, match="is a character device, not a file"):
        load_profile("/dev/zero")
    (tmp_path / "bin.yaml").write_bytes(b"context: 1\n\xff\xfe")  # was UnicodeDecodeError
    with pytest.raises(ProfileError, match=r"bin.yaml:2: not UTF-8 text \(byte 0xff at offset 11\)"):
        load_profile(tmp_path / "bin.yaml")
    (tmp_path / "big.yaml").write_text("description: " + "x" * (1 << 20) + "\n")
    with pytest.raises(ProfileError, match="larger than 1 MiB"):
        load_profile(tmp_path / "big.yaml")
    with pytest.raises(ProfileError, match="File name too long"):  # was OSError out of Path.is_file
        load_profile(tmp_path / ("x" * 300 + ".yaml"))
    (tmp_path / "file").write_text("")
    with pytest.raises(ProfileError, match="Not a directory"):
        load_profile(tmp_path / "file" / "p.yaml")


def test_ps_skips_folders_llmhost_would_not_have_named(state_dir: Path, capsys) -> None:
    from llmhost.cli import main

    # A folder someone made by hand in the state dir stopped `ps` with "Invalid deployment name".
    (state_dir / "deployments" / "UPPER").mkdir(parents=True)
    (state_dir / "deployments" / "UPPER" / "deployment.json").write_text("{}")
    assert main(["ps"]) == 0
    assert "no deployments" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["web\n", "../web", "a/b", "a\x00b", "", "a" * 64, "Web"])
def test_deployment_names_that_cannot_be_a_file_name_are_refused(name: str) -> None:
    from llmhost.supervise.paths import state_file, validate_name

    with pytest.raises(UsageError, match="Invalid deployment name"):
        validate_name(name)
    with pytest.raises(UsageError):  # before any path is built
        state_file(name)
    assert validate_name("web-1.q4_k_m") == "web-1.q4_k_m"


@pytest.mark.parametrize(
    "args",
    [["--host", "0.0.0.0"], ["--host=0.0.0.0"], ["--api-key", "k" * 12], ["--api_key", "k"], ["--port", "1"]],
)
def test_profile_extra_args_cannot_override_bind_or_key(args: list[str]) -> None:
    # llama-server takes the last --host: a profile's extra_args bound 0.0.0.0 with no API key, past the
    # key requirement (and a key there would sit in argv, visible in `ps`).
    text = f"engine: llama-server\ncontext: 2048\nextra_args: {json.dumps(args)}\n"
    with pytest.raises(ProfileError, match=r"p.yaml:3: extra_args: .*set by llmhost"):
        parse_profile(text, "p.yaml")
    assert (
        parse_profile('extra_args: ["--hostile-flag", "--temp", "0.5"]\n').extra_args[0] == "--hostile-flag"
    )


def test_rotating_log_and_tail(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "engine.log", max_bytes=1000, backups=2)
    for i in range(100):
        log.write(f"line {i:04d} {'x' * 40}\n".encode())
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["engine.log", "engine.log.1", "engine.log.2"]
    assert all((tmp_path / f).stat().st_size <= 1000 for f in files)
    assert (tmp_path / "engine.log").stat().st_mode & 0o777 == 0o600
    assert tail(tmp_path / "engine.log", 2)[-1].startswith("line 0099")
    # Asking for more lines than the current file holds continues into the rotated one, in order.
    many = tail(tmp_path / "engine.log", 30)
    assert len(many) == 30 and many[-1].startswith("line 0099") and many[0].startswith("line 0070")


def test_follow_survives_rotation(tmp_path: Path) -> None:
    path = tmp_path / "engine.log"
    log = RotatingLog(path, max_bytes=200, backups=1)
    stop = threading.Event()
    seen: list[str] = []

    def reader() -> None:
        for line in follow(path, poll_s=0.02, stop=stop):
            seen.append(line)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    time.sleep(0.2)
    for i in range(20):
        log.write(f"entry {i:02d} {'y' * 20}\n".encode())
        time.sleep(0.03)
    time.sleep(0.3)
    stop.set()
    thread.join(2)
    log.close()
    assert [s.split()[1] for s in seen][-3:] == ["17", "18", "19"]
    assert len(seen) >= 15


def test_prometheus_parsing_sums_labelled_samples() -> None:
    text = (
        "# HELP vllm:request_success_total x\n"
        'vllm:request_success_total{finished_reason="stop"} 3\n'
        'vllm:request_success_total{finished_reason="length"} 4\n'
        "llamacpp:tokens_predicted_total 120\n"
    )
    samples = parse_prometheus(text)
    assert samples["vllm:request_success_total"] == 7
    assert samples["llamacpp:tokens_predicted_total"] == 120


def test_parse_startup_recorded_llama_server_log() -> None:
    # llama-server at -lv 4, 2 slots of 1024 tokens each, non-unified KV (one stream per slot).
    report = ENGINE.parse_startup((DATA / "llama_server_startup.log").read_text())
    mib = 1024 * 1024
    assert report.weights_bytes == 2 * mib
    assert report.kv_cache_tokens == 2048
    assert report.kv_cache_bytes == 2 * mib
    assert report.compute_bytes == int(4.26 * mib)
    assert report.raw["n_seq_max"] == "2"


def test_parse_startup_counts_a_cpu_repack_copy_once() -> None:
    # Gemma 3 270M Q4_K_M under llama-server (AVX2): the mapped file spans the Q4_K tensors that the CPU
    # backend also copies into CPU_REPACK; resident weights are the mapping. Without mmap the CPU buffer
    # leaves the repacked tensors out, so both buffers count.
    mib = 1024 * 1024
    mapped = ENGINE.parse_startup(
        "load_tensors:   CPU_Mapped model buffer size =   235.16 MiB\n"
        "load_tensors:   CPU_REPACK model buffer size =    12.66 MiB\n"
    )
    assert mapped.weights_bytes == int(235.16 * mib) and mapped.raw["cpu_repack_mib"] == "12.66"
    loaded = ENGINE.parse_startup(
        "load_tensors:          CPU model buffer size =   222.50 MiB\n"
        "load_tensors:   CPU_REPACK model buffer size =    12.66 MiB\n"
    )
    assert loaded.weights_bytes == int((222.50 + 12.66) * mib)


def test_parse_startup_takes_the_context_from_the_full_attention_cache() -> None:
    # Gemma 3 270M under `make demo` (-c 4096 -np 2): the SWA cache (window 512 + ubatch 512 per slot)
    # comes last and is smaller; the context the slots hold is the non-SWA cache's.
    report = ENGINE.parse_startup(
        "llama_kv_cache: size =    6.00 MiB (  2048 cells,   3 layers,  2/2 seqs), K (f16): 3.00 MiB\n"
        "llama_kv_cache: size =   15.00 MiB (  1024 cells,  15 layers,  2/2 seqs), K (f16): 7.50 MiB\n"
    )
    assert report.kv_cache_tokens == 4096
    assert "2048 cells" in report.raw["kv_cache"]


def test_ready_snippets_paste_for_any_served_name() -> None:
    # A served name comes from the file name: "my model's.gguf" must not break the printed curl/Python.
    import ast
    import io
    import json
    import shlex

    from rich.console import Console

    from llmhost.cli.serve import _print_ready

    served = 'my model\'s "v2" [q4]'
    buf = io.StringIO()
    _print_ready(Console(file=buf, width=300, no_color=True), "x", "http://127.0.0.1:8000/v1", served, True)
    text = buf.getvalue()
    curl = text[text.index("curl ") : text.index("python - <<")].replace("\\\n", " ")
    argv = shlex.split(curl)
    assert json.loads(argv[argv.index("-d") + 1])["model"] == served
    script = text[text.index("<<'EOF'\n") + 8 : text.index("\nEOF")]
    models = [
        kw.value.value for node in ast.walk(ast.parse(script)) if isinstance(node, ast.Call)
        for kw in node.keywords if kw.arg == "model" and isinstance(kw.value, ast.Constant)
    ]  # fmt: skip
    assert models == [served]


def test_a_native_server_built_from_the_sdist_names_its_sources(tmp_path: Path, monkeypatch) -> None:
    # The sdist has no git data, so llama-server says "0.5.0-dev (build 0, commit unknown)"; the build
    # llmhost made knows which sdist it came from (BUILD_INFO) and `engines` says that instead.
    from llmhost.engines import llamacpp
    from llmhost.hardware import detect

    binary = tmp_path / "llama-server-x" / "bin" / "llama-server"
    binary.parent.mkdir(parents=True)
    binary.write_text('#!/bin/sh\necho "version: 0.5.0-dev (build 0, commit unknown)" >&2\n')
    binary.chmod(0o755)
    monkeypatch.setattr(llamacpp, "find_llama_server", lambda: binary)
    native = next(s for s in LlamaCppEngine().status(detect()) if s.runtime == "llama-server")
    assert native.version == "0.5.0-dev (build 0, commit unknown)"  # not built by llmhost: as printed
    (binary.parent.parent / "BUILD_INFO").write_text("sdist=llama_cpp_python-0.3.36.tar.gz\nflags=\n")
    native = next(s for s in LlamaCppEngine().status(detect()) if s.runtime == "llama-server")
    assert native.version == "0.5.0-dev (llama.cpp vendored in llama-cpp-python 0.3.36)"
