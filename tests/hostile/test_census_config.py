"""Census, area `config`: bad config.json files, safetensors headers and indexes, model directories,
special files and Hub references, through `inspect`, `plan`, `plan --json` and `serve --dry-run`.

Each case is a different class of mistake; every one must end as one `error:` line, exit 2, with a next
step, and leave nothing behind. None reaches the network: references are refused before any fetch.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .census import BadInput, ids, run_case

# A real config (Llama 3.2 1B); each case breaks one thing in it or next to it.
TINY: dict[str, Any] = json.loads(
    (
        Path(__file__).resolve().parents[1]
        / "fixtures"
        / "configs"
        / "meta-llama--Llama-3.2-1B-Instruct.json"
    ).read_text()
)
HW = ["--hardware", "h100-80gb"]  # plan for catalog hardware: the same answer on every machine


def config(text: str | dict[str, Any], name: str = "config.json") -> Callable[[Path], None]:
    def make(d: Path) -> None:
        (d / name).write_text(text if isinstance(text, str) else json.dumps(text))

    return make


def edited(**edit: Any) -> Callable[[Path], None]:
    return config({**TINY, **edit})


def replaced(old: str, new: str) -> Callable[[Path], None]:
    return config(json.dumps(TINY).replace(old, new))


def with_files(*makers: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        for m in makers:
            m(d)

    return make


def fifo(name: str) -> Callable[[Path], None]:
    return lambda d: os.mkfifo(d / name)


def directory(name: str) -> Callable[[Path], None]:
    return lambda d: (d / name).mkdir()


def empty(*names: str) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        for n in names:
            (d / n).write_bytes(b"")

    return make


def shard(table: dict[str, Any], data: int = 0, name: str = "model.safetensors") -> Callable[[Path], None]:
    def make(d: Path) -> None:
        raw = json.dumps(table).encode()
        (d / name).write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(data))

    return make


def raw(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda d: (d / name).write_bytes(data)


def index(weight_map: Any) -> Callable[[Path], None]:
    return config({"weight_map": weight_map}, "model.safetensors.index.json")


def sparse(name: str, size: int) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        with (d / name).open("wb") as fh:
            fh.truncate(size)

    return make


def unreadable(d: Path) -> None:
    config(TINY)(d)
    (d / "config.json").chmod(0)


W = {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}
GOOD = config(TINY)
DIR = "{tmp}"
CFG = "{tmp}/config.json"

CASES: list[BadInput] = [
    # config.json values
    BadInput("config-zero-heads", ["inspect", DIR], 2, edited(num_attention_heads=0)),
    BadInput("config-negative-layers", ["plan", DIR, "--json", *HW], 2, edited(num_hidden_layers=-3)),
    BadInput("config-billion-layers", ["serve", DIR, "--dry-run", *HW], 2, edited(num_hidden_layers=10**9)),
    BadInput("config-int-past-2-63", ["inspect", CFG], 2, edited(vocab_size=2**64 + 1)),
    BadInput("config-zero-hidden", ["plan", CFG, *HW], 2, edited(hidden_size=0)),
    BadInput(
        "config-zero-attn-period", ["plan", DIR, *HW], 2, edited(model_type="jamba", attn_layer_period=0)
    ),
    BadInput(
        "config-more-active-experts-than-experts",
        ["inspect", DIR, "--json"],
        2,
        edited(num_local_experts=4, num_experts_per_tok=6),
    ),
    BadInput(
        "config-quant-bits-zero",
        ["plan", DIR, "--json", *HW],
        2,
        edited(quantization_config={"quant_method": "gptq", "bits": 0.001}),
    ),
    BadInput(
        "config-ff-multiplier-huge",
        ["inspect", DIR],
        2,
        edited(model_type="lfm2", block_auto_adjust_ff_dim=True, block_ffn_dim_multiplier=1e308),
    ),
    BadInput("config-missing-hidden-size", ["inspect", DIR], 2, config({"model_type": "llama"})),
    # config.json syntax and size
    BadInput(
        "config-nan-literal", ["inspect", CFG], 2, replaced('"hidden_size": 2048', '"hidden_size": NaN')
    ),
    BadInput(
        "config-float-overflow",
        ["plan", DIR, *HW],
        2,
        replaced('"hidden_size": 2048', '"hidden_size": 1e999'),
    ),
    BadInput(
        "config-4301-digit-int",
        ["inspect", DIR],
        2,
        replaced('"vocab_size": 128256', '"vocab_size": ' + "9" * 4301),
    ),
    BadInput(
        "config-deep-nesting",
        ["inspect", DIR],
        2,
        config(json.dumps(TINY)[:-1] + ', "x": ' + "[" * 50000 + "]" * 50000 + "}"),
    ),
    BadInput("config-array-not-object", ["plan", DIR, "--json", *HW], 2, config("[1, 2, 3]")),
    BadInput("config-not-utf8", ["inspect", DIR], 2, raw("config.json", b'{"model_type": "\xff\xfe"}')),
    BadInput("config-truncated-json", ["serve", DIR, "--dry-run", *HW], 2, config(json.dumps(TINY)[:40])),
    BadInput("config-lone-surrogate", ["inspect", DIR, "--json"], 2, replaced('"llama"', '"\\ud800"')),
    BadInput("config-one-gib", ["inspect", DIR], 2, sparse("config.json", 2**30)),
    BadInput(
        "config-bare-json-with-other-name", ["inspect", "{tmp}/model.json"], 2, config("null", "model.json")
    ),
    # special files and directories where files belong
    BadInput("config-fifo-as-config", ["inspect", CFG], 2, fifo("config.json")),
    BadInput("config-fifo-config-in-dir", ["plan", DIR, *HW], 2, fifo("config.json")),
    BadInput(
        "config-fifo-shard", ["serve", DIR, "--dry-run", *HW], 2, with_files(GOOD, fifo("model.safetensors"))
    ),
    BadInput(
        "config-fifo-index", ["inspect", DIR], 2, with_files(GOOD, fifo("model.safetensors.index.json"))
    ),
    BadInput("config-fifo-gguf-in-dir", ["inspect", DIR], 2, fifo("model.gguf")),
    BadInput("config-fifo-unknown-extension", ["inspect", "{tmp}/weights"], 2, fifo("weights")),
    BadInput("config-dir-as-config", ["inspect", DIR], 2, directory("config.json")),
    BadInput("config-dir-as-shard", ["plan", DIR, *HW], 2, with_files(GOOD, directory("model.safetensors"))),
    BadInput(
        "config-chardev-shard",
        ["inspect", DIR],
        2,
        with_files(GOOD, lambda d: (d / "model.safetensors").symlink_to("/dev/zero")),
    ),
    BadInput("config-empty-dir", ["inspect", DIR], 2),
    BadInput("config-several-ggufs", ["plan", DIR, *HW], 2, empty("a.gguf", "b.gguf")),
    BadInput(
        "config-not-a-model-file", ["inspect", "{tmp}/weights.bin"], 2, raw("weights.bin", b"PK\x03\x04zip")
    ),
    BadInput(
        "config-split-gguf-numbering",
        ["inspect", "{tmp}/m-00001-of-00000.gguf"],
        2,
        empty("m-00001-of-00000.gguf"),
    ),
    BadInput(
        "config-split-gguf-missing-shard",
        ["plan", "{tmp}/m-00001-of-00003.gguf", *HW],
        2,
        empty("m-00001-of-00003.gguf"),
    ),
    # safetensors index
    BadInput(
        "config-index-weight-map-list", ["inspect", DIR], 2, with_files(GOOD, index(["model.safetensors"]))
    ),
    BadInput(
        "config-index-escapes-dir",
        ["plan", DIR, "--json", *HW],
        2,
        with_files(GOOD, index({"w": "../../etc/passwd"})),
    ),
    BadInput(
        "config-index-shard-not-string",
        ["serve", DIR, "--dry-run", *HW],
        2,
        with_files(GOOD, index({"w": 7})),
    ),
    BadInput(
        "config-index-missing-shard",
        ["inspect", DIR],
        2,
        with_files(GOOD, index({"w": "model-00001-of-00002.safetensors"})),
    ),
    BadInput(
        "config-index-too-many-shards",
        ["inspect", DIR],
        2,
        with_files(GOOD, index({str(i): f"s{i}.safetensors" for i in range(5000)})),
    ),
    BadInput(
        "config-index-name-too-long",
        ["inspect", DIR],
        2,
        with_files(GOOD, index({"w": "x" * 300 + ".safetensors"})),
    ),
    # safetensors headers
    BadInput(
        "config-st-bytes-mismatch",
        ["inspect", DIR],
        2,
        with_files(GOOD, shard({"w": {**W, "shape": [400]}}, 8)),
    ),
    BadInput("config-st-data-truncated", ["plan", DIR, *HW], 2, with_files(GOOD, shard({"w": W}, 4))),
    BadInput(
        "config-st-header-length-huge",
        ["inspect", DIR],
        2,
        with_files(GOOD, raw("model.safetensors", struct.pack("<Q", 2**63) + b"{}")),
    ),
    BadInput(
        "config-st-unknown-dtype",
        ["serve", DIR, "--dry-run", *HW],
        2,
        with_files(GOOD, shard({"w": {**W, "dtype": "Q4_K"}}, 8)),
    ),
    BadInput(
        "config-st-shorter-than-8-bytes",
        ["plan", DIR, "--json", *HW],
        2,
        with_files(GOOD, raw("model.safetensors", b"\x01\x02")),
    ),
    BadInput(
        "config-st-negative-dims",
        ["inspect", DIR],
        2,
        with_files(GOOD, shard({"w": {**W, "shape": [-2, -2]}}, 8)),
    ),
    BadInput("config-st-header-not-object", ["inspect", DIR], 2, with_files(GOOD, shard([1, 2], 0))),  # type: ignore[arg-type]
    # Hub references (refused before any request)
    BadInput("config-repo-double-dash", ["inspect", "org/name--x"], 2),
    BadInput("config-repo-too-many-parts", ["plan", "a/b/c/d", *HW], 2),
    BadInput("config-repo-dot-git", ["serve", "org/name.git", "--dry-run", *HW], 2),
    BadInput("config-repo-name-too-long", ["inspect", "org/" + "n" * 97], 2),
    BadInput("config-repo-ends-with-dot", ["plan", "org/name.", "--json", *HW], 2),
    BadInput("config-revision-dotdot", ["plan", "org/name@a..b", *HW], 2),
    BadInput("config-revision-lock-suffix", ["inspect", "org/name@x.lock", "--json"], 2),
    BadInput("config-revision-too-long", ["serve", "org/name@" + "r" * 300, "--dry-run", *HW], 2),
    BadInput("config-gguf-tag-revision-bad", ["inspect", "org/x-GGUF:Q4_K_M@-dev"], 2),
    # Names the OS cannot look up (ENAMETOOLONG) were "internal error: OSError" in parse_ref.
    BadInput("config-path-component-too-long", ["inspect", "{tmp}/" + "a" * 300 + ".gguf"], 2),
    BadInput("config-path-too-long", ["plan", "./" + "b/" * 3000 + "x", *HW], 2),
]
if os.geteuid() != 0:  # root reads files whatever their mode
    CASES.append(BadInput("config-unreadable-config", ["inspect", DIR], 2, unreadable))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_bad_input(
    case: BadInput, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_case(case, tmp_path, capsys, monkeypatch)
