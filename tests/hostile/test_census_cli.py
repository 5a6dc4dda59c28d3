"""Census, CLI area: every command's options, paths, names, profiles and demo-model outputs.

Each case is one distinct mistake a user (or someone handing them a file) can make, with the exit code
`llmhost --help` documents for it; `census.run_case` checks the one-line error, its next step and that
nothing is left behind. Cases that need a valid model copy the tiny demo GGUF into their directory;
`serve` cases use --dry-run (nothing is started) unless the refusal comes before any launch.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from .census import BadInput, ids, run_case

_demo: list[Path] = []


def _demo_model() -> Path:
    """The demo GGUF, generated once per test process (about 2 MB, a fraction of a second)."""
    if not _demo:
        from llmhost.demo_model import ensure_demo_model

        folder = Path(tempfile.mkdtemp(prefix="llmhost-census-cli-"))
        _demo.append(ensure_demo_model(folder))
    return _demo[0]


@pytest.fixture(scope="module", autouse=True)
def _remove_demo_model():
    yield
    if _demo:
        shutil.rmtree(_demo.pop().parent, ignore_errors=True)


def model(work: Path) -> None:
    shutil.copyfile(_demo_model(), work / "m.gguf")


def writes(name: str, content: bytes | str, *, with_model: bool = True) -> Callable[[Path], None]:
    """A `make` that writes one file (a profile, a dataset...) and, by default, the demo model."""

    def make(work: Path) -> None:
        if with_model:
            model(work)
        data = content.encode() if isinstance(content, str) else content
        (work / name).write_bytes(data)

    return make


def fifo(name: str) -> Callable[[Path], None]:
    def make(work: Path) -> None:
        model(work)
        os.mkfifo(work / name)

    return make


def a_file(work: Path) -> None:
    model(work)
    (work / "f").write_text("not a directory\n")


def dangling(work: Path) -> None:
    model(work)
    (work / "link").symlink_to(work / "nowhere")


def laughs() -> str:
    """A "billion laughs": nine levels of nine aliases each, 9^9 values once expanded."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


M = "{tmp}/m.gguf"
SERVE = ["serve", M, "--dry-run"]
PLAN = ["plan", M]
BENCH = ["bench", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "-n", "1", "--warmup", "0"]
LONG = "x" * 300  # longer than NAME_MAX (255): ENAMETOOLONG

CASES: list[BadInput] = [
    # -- hw / doctor: --hardware and the catalog
    BadInput("cli-hw-hardware-empty", ["hw", "--hardware", ""], 2),
    BadInput("cli-hw-hardware-blank", ["hw", "--hardware", "   "], 2),
    BadInput("cli-hw-hardware-newline", ["hw", "--hardware", "h100-80gb\n"], 2),
    BadInput("cli-hw-hardware-overlong", ["hw", "--hardware", "h" * 5000], 2),
    BadInput("cli-hw-hardware-unknown", ["hw", "--hardware", "nosuchgpu"], 2),
    BadInput("cli-hw-hardware-zero-gpus", ["hw", "--hardware", "h100-80gb:0"], 2),
    BadInput("cli-hw-hardware-too-many-gpus", ["hw", "--hardware", "h100-80gb:100000"], 2),
    BadInput("cli-hw-list-catalog-with-hardware", ["hw", "--list-catalog", "--hardware", "h100-80gb"], 2),
    BadInput("cli-hw-unknown-option", ["hw", "--gpus", "2"], 2),
    BadInput("cli-doctor-hardware-empty", ["doctor", "--hardware", ""], 2),
    BadInput("cli-doctor-hardware-bad-ram", ["doctor", "--hardware", "h100-80gb,ram=lots"], 2),
    BadInput("cli-doctor-extra-argument", ["doctor", "now"], 2),
    # -- inspect: references and paths
    BadInput("cli-inspect-no-model", ["inspect"], 2),
    BadInput("cli-inspect-empty-ref", ["inspect", ""], 2),
    BadInput("cli-inspect-path-through-file", ["inspect", "{tmp}/f/m.gguf"], 2, make=a_file),
    BadInput("cli-inspect-dangling-symlink", ["inspect", "{tmp}/link"], 2, make=dangling),
    BadInput("cli-inspect-proc-file", ["inspect", "/proc/self/status"], 2),
    BadInput("cli-inspect-unknown-option", ["inspect", M, "--deep"], 2, make=model),
    # -- plan: every knob out of range, empty, or contradicting the hardware
    BadInput("cli-plan-tp-beyond-this-machine", [*PLAN, "--tp", "1000"], 2, make=model),
    BadInput(
        "cli-plan-tp-beyond-catalog-gpus", [*PLAN, "--hardware", "h100-80gb", "--tp", "2"], 2, make=model
    ),
    BadInput("cli-plan-tp-zero", [*PLAN, "--tp", "0"], 2, make=model),
    BadInput("cli-plan-context-zero", [*PLAN, "--context", "0"], 2, make=model),
    BadInput("cli-plan-context-astronomical", [*PLAN, "--context", str(10**12)], 2, make=model),
    BadInput("cli-plan-context-not-a-number", [*PLAN, "--context", "4k"], 2, make=model),
    BadInput("cli-plan-concurrency-zero", [*PLAN, "--concurrency", "0"], 2, make=model),
    BadInput("cli-plan-concurrency-negative", [*PLAN, "--concurrency", "-4"], 2, make=model),
    BadInput("cli-plan-gpu-util-zero", [*PLAN, "--gpu-memory-utilization", "0"], 2, make=model),
    BadInput("cli-plan-gpu-util-above-one", [*PLAN, "--gpu-memory-utilization", "1.5"], 2, make=model),
    BadInput("cli-plan-gpu-util-nan", [*PLAN, "--gpu-memory-utilization", "nan"], 2, make=model),
    BadInput("cli-plan-kv-dtype-unknown", [*PLAN, "--kv-cache-dtype", "foo"], 2, make=model),
    BadInput("cli-plan-kv-dtype-empty", [*PLAN, "--kv-cache-dtype", ""], 2, make=model),
    BadInput("cli-plan-quant-empty", [*PLAN, "--quant", ""], 2, make=model),
    BadInput("cli-plan-quant-unknown", [*PLAN, "--quant", "Q9_Z"], 2, make=model),
    BadInput("cli-plan-goal-unknown", [*PLAN, "--goal", "fastest"], 2, make=model),
    BadInput("cli-plan-engine-unknown", [*PLAN, "--engine", "tgi"], 2, make=model),
    BadInput("cli-plan-hardware-empty", [*PLAN, "--hardware", ""], 2, make=model),
    # -- serve: bind, names, engine binary, ports, keys, combinations
    BadInput("cli-serve-no-model", ["serve", "--dry-run"], 2),
    BadInput("cli-serve-host-empty", [*SERVE, "--host", ""], 2, make=model),
    BadInput("cli-serve-host-whitespace", [*SERVE, "--host", " "], 2, make=model),
    BadInput("cli-serve-host-unresolvable", [*SERVE, "--host", "bad..host"], 2, make=model),
    BadInput("cli-serve-name-empty", [*SERVE, "--name", ""], 2, make=model),
    BadInput("cli-serve-name-traversal", [*SERVE, "--name", "../../etc/x"], 2, make=model),
    BadInput("cli-serve-name-slash", [*SERVE, "--name", "a/b"], 2, make=model),
    BadInput("cli-serve-name-trailing-newline", [*SERVE, "--name", "web\n"], 2, make=model),
    BadInput("cli-serve-name-nul", [*SERVE, "--name", "a\x00b"], 2, make=model),
    BadInput("cli-serve-name-overlong", [*SERVE, "--name", "a" * 201], 2, make=model),
    BadInput("cli-serve-name-dot-dot", [*SERVE, "--name", ".."], 2, make=model),
    BadInput("cli-serve-engine-bin-empty", [*SERVE, "--engine-bin", ""], 2, make=model),
    BadInput("cli-serve-engine-bin-missing", [*SERVE, "--engine-bin", "{tmp}/llama-server"], 2, make=model),
    BadInput("cli-serve-engine-bin-directory", [*SERVE, "--engine-bin", "{tmp}"], 2, make=model),
    BadInput(
        "cli-serve-engine-bin-with-llama-cpp-python",
        [*SERVE, "--engine", "llama-cpp-python", "--engine-bin", "/bin/true"],
        2,
        make=model,
    ),
    BadInput("cli-serve-engine-unknown", [*SERVE, "--engine", "tgi"], 2, make=model),
    BadInput("cli-serve-engine-empty", [*SERVE, "--engine", ""], 2, make=model),
    BadInput("cli-serve-port-zero", [*SERVE, "--port", "0"], 2, make=model),
    BadInput("cli-serve-port-above-65535", [*SERVE, "--port", "70000"], 2, make=model),
    BadInput("cli-serve-port-not-a-number", [*SERVE, "--port", "http"], 2, make=model),
    BadInput("cli-serve-api-key-empty", [*SERVE, "--api-key", ""], 2, make=model),
    BadInput("cli-serve-api-key-short", [*SERVE, "--api-key", "abc"], 2, make=model),
    BadInput("cli-serve-quant-empty", [*SERVE, "--quant", ""], 2, make=model),
    BadInput("cli-serve-context-astronomical", [*SERVE, "--context", str(10**12)], 2, make=model),
    BadInput("cli-serve-concurrency-zero", [*SERVE, "--concurrency", "0"], 2, make=model),
    BadInput("cli-serve-hardware-without-dry-run", ["serve", M, "--hardware", "h100-80gb"], 2, make=model),
    # -- serve --profile: the file, then its YAML, then its values
    BadInput("cli-profile-empty-name", [*SERVE, "--profile", ""], 2, make=model),
    BadInput("cli-profile-missing", [*SERVE, "--profile", "{tmp}/p.yaml"], 2, make=model),
    BadInput("cli-profile-directory", [*SERVE, "--profile", "{tmp}"], 2, make=model),
    BadInput("cli-profile-fifo", [*SERVE, "--profile", "{tmp}/p.yaml"], 2, make=fifo("p.yaml")),
    BadInput("cli-profile-device", [*SERVE, "--profile", "/dev/zero"], 2, make=model),
    BadInput("cli-profile-path-through-file", [*SERVE, "--profile", "{tmp}/f/p.yaml"], 2, make=a_file),
    BadInput("cli-profile-overlong-name", [*SERVE, "--profile", f"{{tmp}}/{LONG}.yaml"], 2, make=model),
    BadInput("cli-profile-proc-binary", [*SERVE, "--profile", "/proc/self/environ"], 2, make=model),
    BadInput(
        "cli-profile-binary",
        [*SERVE, "--profile", "{tmp}/p.yaml"],
        2,
        make=writes("p.yaml", b"\xff\xfe\x00bin"),
    ),
    BadInput(
        "cli-profile-huge",
        [*SERVE, "--profile", "{tmp}/p.yaml"],
        2,
        make=writes("p.yaml", "a: " + "x" * 2**21),
    ),
    BadInput(
        "cli-profile-billion-laughs",
        [*SERVE, "--profile", "{tmp}/p.yaml"],
        2,
        make=writes("p.yaml", laughs()),
    ),
    BadInput(
        "cli-profile-recursive-alias",
        [*SERVE, "--profile", "{tmp}/p.yaml"],
        2,
        make=writes("p.yaml", "a: &a [*a]\n"),
    ),
    BadInput(
        "cli-profile-deep-nesting",
        [*SERVE, "--profile", "{tmp}/p.yaml"],
        2,
        make=writes("p.yaml", "[" * 50000),
    ),
    BadInput(
        "cli-profile-list", [*SERVE, "--profile", "{tmp}/p.yaml"], 2, make=writes("p.yaml", "- context\n")
    ),
    BadInput("cli-profile-scalar", [*SERVE, "--profile", "{tmp}/p.yaml"], 2, make=writes("p.yaml", "fast\n")),
    BadInput(
        "cli-profile-duplicate-key",
        [*SERVE, "--profile", "{tmp}/p.yaml"],
        2,
        make=writes("p.yaml", "context: 1024\ncontext: 2048\n"),
    ),
    BadInput(
        "cli-profile-tab", [*SERVE, "--profile", "{tmp}/p.yaml"], 2, make=writes("p.yaml", "context:\t512\n")
    ),
    BadInput(
        "cli-profile-unknown-key",
        [*SERVE, "--profile", "{tmp}/p.yaml"],
        2,
        make=writes("p.yaml", "contxt: 1\n"),
    ),
    BadInput(
        "cli-profile-two-documents",
        [*SERVE, "--profile", "{tmp}/p.yaml"],
        2,
        make=writes("p.yaml", "a: 1\n---\nb: 2\n"),
    ),
    BadInput(
        "cli-profile-python-tag",
        [*SERVE, "--profile", "{tmp}/p.yaml"],
        2,
        make=writes("p.yaml", "model: !!python/object/apply:os.system ['true']\n"),
    ),
    BadInput(
        "cli-profile-host-empty",
        [*SERVE, "--profile", "{tmp}/p.yaml"],
        2,
        make=writes("p.yaml", 'host: ""\n'),
    ),
    BadInput(
        "cli-profile-model-blank",
        ["serve", "--dry-run", "--profile", "{tmp}/p.yaml"],
        2,
        make=writes("p.yaml", 'model: " "\n'),
    ),
    BadInput(
        "cli-profile-nul-in-extra-args",
        [*SERVE, "--profile", "{tmp}/p.yaml"],
        2,
        make=writes("p.yaml", 'extra_args: ["--temp", "0.5\\0"]\n'),
    ),
    BadInput(
        "cli-profile-env-name-with-equals",
        [*SERVE, "--profile", "{tmp}/p.yaml"],
        2,
        make=writes("p.yaml", 'env: {"A=B": "1"}\n'),
    ),
    BadInput(
        "cli-profile-tp-beyond-gpus",
        [*SERVE, "--profile", "{tmp}/p.yaml"],
        2,
        make=writes("p.yaml", "tensor_parallel_size: 1000\n"),
    ),
    BadInput(
        "cli-profile-port-out-of-range",
        [*SERVE, "--profile", "{tmp}/p.yaml"],
        2,
        make=writes("p.yaml", "port: 0\n"),
    ),
    BadInput(
        "cli-profile-context-float",
        [*SERVE, "--profile", "{tmp}/p.yaml"],
        2,
        make=writes("p.yaml", "context: .inf\n"),
    ),
    # -- stop / logs / ps: names become paths under the state dir
    BadInput("cli-stop-traversal", ["stop", "../../etc/passwd"], 2),
    BadInput("cli-stop-absolute-path", ["stop", "/etc/passwd"], 2),
    BadInput("cli-stop-empty-name", ["stop", ""], 2),
    BadInput("cli-stop-newline-name", ["stop", "web\n"], 2),
    BadInput("cli-stop-unknown", ["stop", "nosuch"], 5),
    BadInput("cli-stop-name-and-all", ["stop", "web", "--all"], 2),
    BadInput("cli-stop-nothing", ["stop"], 2),
    BadInput("cli-logs-traversal", ["logs", "../x"], 2),
    BadInput("cli-logs-nul-name", ["logs", "a\x00b"], 2),
    BadInput("cli-logs-unknown", ["logs", "nosuch"], 5),
    BadInput("cli-logs-unknown-supervisor", ["logs", "nosuch", "--supervisor"], 5),
    BadInput("cli-logs-negative-lines", ["logs", "web", "-n", "-1"], 2),
    BadInput("cli-logs-lines-not-a-number", ["logs", "web", "-n", "all"], 2),
    BadInput("cli-logs-no-name", ["logs"], 2),
    BadInput("cli-ps-extra-argument", ["ps", "web"], 2),
    BadInput("cli-ps-state-dir-through-a-device", ["ps"], 2, env={"LLMHOST_STATE_DIR": "/dev/null/state"}),
    BadInput(
        "cli-stop-all-state-dir-through-a-device",
        ["stop", "--all"],
        2,
        env={"LLMHOST_STATE_DIR": "/dev/null/s"},
    ),
    # -- engines
    BadInput("cli-engines-install-unknown", ["engines", "install", "nosuch"], 2),
    BadInput("cli-engines-install-empty", ["engines", "install", ""], 2),
    BadInput("cli-engines-install-no-name", ["engines", "install"], 2),
    BadInput("cli-engines-unknown-subcommand", ["engines", "remove", "vllm"], 2),
    # -- demo-model -o: every way the directory cannot take the file
    BadInput("cli-demo-output-empty", ["demo-model", "-o", ""], 2),
    BadInput("cli-demo-output-is-a-file", ["demo-model", "-o", "{tmp}/f"], 2, make=a_file),
    BadInput("cli-demo-output-through-a-file", ["demo-model", "-o", "{tmp}/f/models"], 2, make=a_file),
    BadInput("cli-demo-output-dangling-symlink", ["demo-model", "-o", "{tmp}/link"], 2, make=dangling),
    BadInput("cli-demo-output-under-proc", ["demo-model", "-o", "/proc/llmhost-demo"], 2),
    BadInput("cli-demo-output-proc-itself", ["demo-model", "-o", "/proc/self"], 2),
    BadInput("cli-demo-output-overlong-component", ["demo-model", "-o", f"{{tmp}}/new/{LONG}"], 2),
    BadInput("cli-demo-output-nul", ["demo-model", "-o", "{tmp}/a\x00b"], 2),
    # -- bench: options only (what a server answers is the output area's census)
    BadInput("cli-bench-nothing-to-bench", ["bench"], 2),
    BadInput("cli-bench-two-names", ["bench", "a", "b"], 2),
    BadInput("cli-bench-deployment-traversal", ["bench", "../x"], 2),
    BadInput("cli-bench-name-and-base-url", ["bench", "web", "--base-url", "http://127.0.0.1:9/v1"], 2),
    BadInput("cli-bench-base-url-no-host", ["bench", "--base-url", "http://", "--model", "m"], 2),
    BadInput(
        "cli-bench-base-url-bad-port", ["bench", "--base-url", "http://127.0.0.1:99999/v1", "--model", "m"], 2
    ),
    BadInput("cli-bench-base-url-not-http", ["bench", "--base-url", "ftp://host/v1", "--model", "m"], 2),
    BadInput(
        "cli-bench-base-url-unclosed-ipv6", ["bench", "--base-url", "http://[::1/v1", "--model", "m"], 2
    ),
    BadInput("cli-bench-model-empty", ["bench", "--base-url", "http://127.0.0.1:9/v1", "--model", ""], 2),
    BadInput("cli-bench-api-key-empty", [*BENCH, "--api-key", ""], 2),
    BadInput("cli-bench-api-unknown", [*BENCH, "--api", "embeddings"], 2),
    BadInput("cli-bench-concurrency-huge", [*BENCH, "-c", str(10**9)], 2),
    BadInput("cli-bench-num-requests-huge", [*BENCH, "-n", str(10**12)], 2),
    BadInput("cli-bench-num-requests-zero", [*BENCH, "-n", "0"], 2),
    BadInput("cli-bench-duration-nan", [*BENCH, "--duration", "nan"], 2),
    BadInput("cli-bench-duration-inf", [*BENCH, "--duration", "inf"], 2),
    BadInput("cli-bench-rate-nan", [*BENCH, "--rate", "nan"], 2),
    BadInput("cli-bench-rate-negative", [*BENCH, "--rate", "-2"], 2),
    BadInput("cli-bench-burstiness-nan", [*BENCH, "--rate", "1", "--burstiness", "nan"], 2),
    BadInput("cli-bench-burstiness-without-rate", [*BENCH, "--burstiness", "0.5"], 2),
    BadInput("cli-bench-timeout-inf", [*BENCH, "--timeout", "inf"], 2),
    BadInput("cli-bench-timeout-zero", [*BENCH, "--timeout", "0"], 2),
    BadInput("cli-bench-warmup-negative", [*BENCH, "--warmup", "-1"], 2),
    BadInput("cli-bench-warmup-huge", [*BENCH, "--warmup", str(10**9)], 2),
    BadInput("cli-bench-sweep-max-huge", [*BENCH, "--sweep", "--sweep-max", str(10**9)], 2),
    BadInput("cli-bench-sweep-with-concurrency", [*BENCH, "--sweep", "-c", "4"], 2),
    BadInput("cli-bench-input-tokens-huge", [*BENCH, "--input-tokens", str(10**10)], 2),
    BadInput("cli-bench-input-tokens-empty", [*BENCH, "--input-tokens", ""], 2),
    BadInput("cli-bench-output-tokens-reversed", [*BENCH, "--output-tokens", "256:64"], 2),
    BadInput("cli-bench-shared-prefix-negative", [*BENCH, "--shared-prefix", "-1"], 2),
    BadInput("cli-bench-slo-nan", [*BENCH, "--slo", "ttft=nan"], 2),
    BadInput("cli-bench-slo-unknown-metric", [*BENCH, "--slo", "speed=3"], 2),
    BadInput("cli-bench-slo-empty", [*BENCH, "--slo", ""], 2),
    BadInput("cli-bench-tokenizer-empty", [*BENCH, "--tokenizer", ""], 2),
    BadInput("cli-bench-hardware-empty", [*BENCH, "--hardware", ""], 2),
    BadInput("cli-bench-dataset-missing", [*BENCH, "--dataset", "{tmp}/d.jsonl"], 2),
    BadInput("cli-bench-dataset-fifo", [*BENCH, "--dataset", "{tmp}/d.jsonl"], 2, make=fifo("d.jsonl")),
    BadInput("cli-bench-dataset-directory", [*BENCH, "--dataset", "{tmp}"], 2),
    BadInput(
        "cli-bench-dataset-binary",
        [*BENCH, "--dataset", "{tmp}/d.jsonl"],
        2,
        make=writes("d.jsonl", b"\x80\x81\n"),
    ),
    BadInput(
        "cli-bench-dataset-deep-json",
        [*BENCH, "--dataset", "{tmp}/d.jsonl"],
        2,
        make=writes("d.jsonl", "[" * 100_000, with_model=False),
    ),
    BadInput("cli-bench-output-empty", [*BENCH, "-o", ""], 2),
    # refused before the run (port 9 answers nothing: a run would end in exit 7, not 2)
    BadInput("cli-bench-output-missing-directory", [*BENCH, "-o", "{tmp}/no/such/r.json"], 2),
    BadInput("cli-bench-output-is-a-directory", [*BENCH, "-o", "{tmp}"], 2),
    BadInput("cli-bench-csv-through-a-file", [*BENCH, "--csv", "{tmp}/f/r.csv"], 2, make=a_file),
    BadInput("cli-bench-plot-dangling-symlink", [*BENCH, "--plot", "{tmp}/link"], 2, make=dangling),
    BadInput("cli-bench-output-and-csv-one-file", [*BENCH, "-o", "{tmp}/r.json", "--csv", "{tmp}/r.json"], 2),
    BadInput("cli-bench-compare-one-file", ["bench", "compare", "{tmp}/m.gguf"], 2, make=model),
    BadInput(
        "cli-bench-compare-fifo", ["bench", "compare", "{tmp}/r.json", "{tmp}/r.json"], 2, make=fifo("r.json")
    ),
    BadInput(
        "cli-bench-compare-not-a-result", ["bench", "compare", "{tmp}/m.gguf", "{tmp}/m.gguf"], 2, make=model
    ),
    # -- the app itself
    BadInput("cli-unknown-command", ["deploy", "x"], 2),
    BadInput("cli-unknown-root-option", ["--verbose", "hw"], 2),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_bad_input(case, tmp_path, capsys, monkeypatch):
    run_case(case, tmp_path, capsys, monkeypatch)
