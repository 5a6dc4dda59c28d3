"""Start-up guard: what `llmhost` loads before it does anything, and what `plan` loads per input.

Issue 3 wants `plan` on a local file or a cached repo in under 1 s; most of that second is imports
(benchmarks/plan_speed.py measures it). These tests pin the lazy imports that keep it there: each heavy
module below is loaded only by the code path that needs it. They check which modules get imported,
not timings. (tests/test_cli.py already guards torch, vllm, llama_cpp, transformers and matplotlib.)

Each check runs in a fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parent / "fixtures" / "configs"

# Third-party packages that `import llmhost.cli` must not load, and why each is deferred.
HEAVY_THIRD_PARTY = [
    "numpy",  # nothing at start-up needs it (GGUF headers are read without it)
    "gguf",
    "huggingface_hub",  # only Hub references
    "httpx",  # huggingface_hub's HTTP client
    "psutil",  # only hardware detection
    "yaml",  # the accelerator catalog, read on first lookup
    "pynvml",  # only NVIDIA detection
]
# llmhost's own modules that pull those in, or that belong to commands other than the one run.
HEAVY_OWN = [
    "llmhost.hardware.cpu",
    "llmhost.hardware.catalog",
    "llmhost.hardware.nvidia",
    "llmhost.hardware.amd",
    "llmhost.hardware.apple",
    "llmhost.models.gguf_header",
    "llmhost.models.hub",
    "llmhost.models.remote",
    "llmhost.models.local",
    "llmhost.estimate",
    "llmhost.plan.planner",
    "llmhost.bench",
    "llmhost.supervise",
    "llmhost.engines.registry",
    "llmhost.engines.vllm",
    "llmhost.engines.llamacpp",
]

# Runs `llmhost` in-process with the given argv (if any), then lists the loaded modules on stdout.
_PROBE = """
import json, sys
argv = json.loads(sys.argv[1])
import llmhost.cli
if argv:
    import contextlib, io
    with contextlib.redirect_stdout(io.StringIO()):
        code = llmhost.cli.main(argv)
    assert code in (0, 3), code
print(json.dumps(sorted(sys.modules)))
"""


def loaded_modules(argv: list[str] | None = None) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argv or [])],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def loaded(modules: set[str], names: list[str]) -> list[str]:
    """The names (packages included: `llmhost.bench` covers `llmhost.bench.runner`) that are loaded."""
    return [n for n in names if any(m == n or m.startswith(n + ".") for m in modules)]


# The command modules: each is loaded only when one of its commands runs or `--help` lists them.
COMMAND_MODULES = [
    f"llmhost.cli.{m}" for m in ("hw", "inspect", "plan", "serve", "bench", "export", "engines")
]
# What no command listing needs (beside the lists above): engine installers, Rich's tables and live view.
NOT_FOR_HELP = ["llmhost.engines.vllm_env", "llmhost.engines.mlx_env", "rich.table", "rich.live"]


def test_importing_the_cli_loads_no_heavy_module() -> None:
    modules = loaded_modules()
    assert "llmhost.cli" in modules and "typer" in modules  # the probe did import the CLI
    assert loaded(modules, HEAVY_THIRD_PARTY) == []
    assert loaded(modules, HEAVY_OWN) == []
    # No command module, so none of their stacks: no pydantic model is built, no Rich is loaded.
    assert loaded(modules, COMMAND_MODULES) == []
    assert loaded(modules, ["pydantic", "pydantic_core", "rich", "llmhost.cli._output"]) == []


def test_the_command_table_is_what_the_modules_register() -> None:
    """`COMMANDS` (what the root group loads lazily) names every command each module registers, in the
    order an eager registration of all of them lists in `--help`: a command added to a module but not to
    the table (or put in the wrong module) fails here."""
    import typer

    from llmhost.cli import COMMANDS, module_commands

    eager = typer.Typer(rich_markup_mode=None)
    for module in dict.fromkeys(COMMANDS.values()):  # the table's module order, each once
        importlib.import_module(f"llmhost.cli.{module}").register(eager)
    group = typer.main.get_command(eager)
    names = group.list_commands(typer.Context(group))  # type: ignore[attr-defined]
    assert names == list(COMMANDS)
    for name, module in COMMANDS.items():
        assert name in module_commands(module)
    assert sorted(n for m in set(COMMANDS.values()) for n in module_commands(m)) == sorted(COMMANDS)


def test_help_lists_every_command_without_their_library_stacks() -> None:
    modules = loaded_modules(["--help"])
    assert loaded(modules, COMMAND_MODULES) == COMMAND_MODULES  # listing a command loads its module
    assert loaded(modules, HEAVY_THIRD_PARTY) == []
    assert loaded(modules, HEAVY_OWN) == []
    assert loaded(modules, NOT_FOR_HELP) == []


def test_a_command_s_help_loads_only_its_module() -> None:
    for argv, module in ((["plan", "--help"], "plan"), (["engines", "install", "--help"], "engines")):
        modules = loaded_modules(argv)
        assert loaded(modules, COMMAND_MODULES) == [f"llmhost.cli.{module}"], argv
        assert loaded(modules, HEAVY_OWN + NOT_FOR_HELP) == [], argv


def test_version_is_read_on_first_use() -> None:
    probe = (
        "import sys, llmhost; assert 'importlib.metadata' not in sys.modules; "
        "from importlib.metadata import version; assert llmhost.__version__ == version('llmhost'); "
        "print(llmhost.__version__)"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    import llmhost

    with pytest.raises(AttributeError):
        _ = llmhost.no_such_attribute  # type: ignore[attr-defined]


def test_plan_on_a_local_config_reads_neither_gguf_nor_the_hub(tmp_path: Path) -> None:
    model_dir = tmp_path / "Llama-3.2-1B-Instruct"
    model_dir.mkdir()
    shutil.copy(CONFIGS / "meta-llama--Llama-3.2-1B-Instruct.json", model_dir / "config.json")
    modules = loaded_modules(["plan", str(model_dir), "--json"])
    assert "llmhost.plan.planner" in modules and "psutil" in modules  # it planned, for this machine
    assert loaded(modules, ["numpy", "gguf", "huggingface_hub", "httpx"]) == []
    assert loaded(modules, ["llmhost.models.gguf_header", "llmhost.models.hub", "llmhost.bench"]) == []


def test_plan_on_a_local_gguf_does_not_load_the_hub_client(tmp_path: Path) -> None:
    from llmhost.demo_model import write_llama_gguf

    gguf_path = write_llama_gguf(
        tmp_path / "tiny.gguf", n_layer=2, n_embd=64, n_head=2, n_head_kv=1, n_ff=128, n_vocab=300
    )
    modules = loaded_modules(["plan", str(gguf_path), "--json"])
    assert "llmhost.models.gguf_header" in modules  # it parsed the header: in plain Python (issue 14)
    assert loaded(modules, ["gguf", "numpy"]) == []
    assert loaded(modules, ["huggingface_hub", "httpx", "llmhost.models.hub", "llmhost.supervise"]) == []
    # Only `plan`'s own command module, and no Rich at all: `--json` prints through no console.
    assert loaded(modules, COMMAND_MODULES) == ["llmhost.cli.plan"]
    assert loaded(modules, ["rich", "llmhost.engines.registry", "llmhost.bench"]) == []


def test_the_header_readers_type_tables_equal_gguf_s_own() -> None:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

    from llmhost.models.ggml_types import FILE_TYPES, GGML_TYPES

    assert GGML_TYPES == {int(t): (t.name, *GGML_QUANT_SIZES[t]) for t in GGMLQuantizationType}
    assert FILE_TYPES == {
        int(t): t.name.removeprefix("MOSTLY_").removeprefix("ALL_")
        for t in LlamaFileType
        if t.name != "GUESSED"
    }


def test_ggml_sizes_read_without_the_gguf_package_equal_gguf_s_own_table() -> None:
    probe = (
        "import json, sys; from llmhost.estimate.dtypes import ggml_blocks; table = ggml_blocks(); "
        "assert 'gguf' not in sys.modules and 'numpy' not in sys.modules, 'gguf package was imported'; "
        "print(json.dumps(table))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    from gguf.constants import GGML_QUANT_SIZES

    expected = {qtype.name.upper(): list(sizes) for qtype, sizes in GGML_QUANT_SIZES.items()}
    assert json.loads(proc.stdout) == expected
    assert expected["Q4_K"] == [256, 144]  # llama.cpp: 256 weights in 144 bytes (4.5 bits)
