"""Quant tags grouped from real GGUF repo layouts (tests/fixtures/hub/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmhost.models.gguf_tags import pick, tag_of, variants

HUB = Path(__file__).resolve().parents[1] / "fixtures" / "hub"


def _listing(name: str) -> list[tuple[str, int]]:
    data = json.loads((HUB / f"{name}.json").read_text())
    return [(p, s) for p, s in data["files"]]


def test_bartowski_layout() -> None:
    found = {v.tag: v for v in variants(_listing("bartowski--Qwen2.5-7B-Instruct-GGUF"))}
    assert len(found) == 21
    assert {"Q4_K_M", "Q4_K_L", "Q6_K_L", "Q3_K_XL", "IQ4_XS", "IQ3_M", "IQ2_M", "F16", "Q2_K_L"} <= set(
        found
    )
    assert found["Q4_K_M"].files[0].path == "Qwen2.5-7B-Instruct-Q4_K_M.gguf"
    assert found["Q4_K_L"].size_bytes > found["Q4_K_M"].size_bytes  # Q8_0 embed/output


def test_unsloth_layout_with_split_subfolder() -> None:
    vs = variants(_listing("unsloth--Qwen3-30B-A3B-GGUF"))
    found = {v.tag: v for v in vs}
    assert set(found) == {"UD-Q4_K_XL", "Q4_K_M", "Q8_0", "UD-IQ1_S", "Q4_0", "IQ4_NL", "BF16"}
    assert [f.path for f in found["BF16"].files] == [
        "BF16/Qwen3-30B-A3B-BF16-00001-of-00002.gguf",
        "BF16/Qwen3-30B-A3B-BF16-00002-of-00002.gguf",
    ]
    assert found["BF16"].size_bytes == 49_900_000_000 + 11_180_000_000
    assert [v.size_bytes for v in vs] == sorted(v.size_bytes for v in vs)
    assert pick(vs, "ud-q4_k_xl", explicit=True) is found["UD-Q4_K_XL"]
    assert pick(vs, "Q2_K", explicit=True) is None
    assert pick(vs, "Q4_K_M", explicit=False) is found["Q4_K_M"]


@pytest.mark.parametrize(
    ("path", "tag"),
    [
        ("model-q4_k_m.gguf", "Q4_K_M"),
        ("Q8_0/Model-Q8_0-00001-of-00003.gguf", "Q8_0"),
        ("Q5_K_M/model-00001-of-00002.gguf", "Q5_K_M"),  # tag only in the folder
        ("gpt-oss-20b-MXFP4.gguf", "MXFP4"),
        ("model.gguf", None),
    ],
)
def test_tag_of(path: str, tag: str | None) -> None:
    assert tag_of(path) == tag
