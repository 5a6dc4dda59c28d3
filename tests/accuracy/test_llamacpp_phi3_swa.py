"""Phi-3's sliding window is ignored by llama.cpp: the KV cache holds the whole context on every layer.

The GGUF carries `phi3.attention.sliding_window` (2047 here, as Phi-3-mini's converter writes it), but
llama.cpp disables SWA for Phi-3 (llama.cpp PR #13676; src/models/phi3.cpp sets `swa_type` NONE). The
figures are llama.cpp's own log lines for a synthetic Phi-3 GGUF (benchmarks/accuracy_llamacpp.py,
`phimini-swa2047-v32k-mha-hd96-L4-f16`): one KV cache of n_ctx cells, not an SWA cache of 2560.
"""

from __future__ import annotations

from typing import Any

import _accuracy_compare as acc

from llmhost.estimate.llamacpp import llamacpp_sliding_window

MODEL = "phimini-swa2047-v32k-mha-hd96-L4-f16"


def _case(data: dict[str, Any], n_ctx: int, n_seq: int) -> dict[str, Any]:
    return next(
        c
        for c in data["cases"]
        if c["model"] == MODEL
        and c["settings"]["n_ctx"] == n_ctx
        and c["settings"]["n_seq"] == n_seq
        and c["settings"]["type_k"] == "f16"
        and "measured_mib" in c
    )


def test_llama_cpp_keeps_the_whole_context_for_phi3(
    llamacpp_data: dict[str, Any], llamacpp_specs: dict[str, Any]
) -> None:
    spec = llamacpp_specs[MODEL]
    assert spec.attention.sliding_window == 2047  # in the file
    assert llamacpp_sliding_window(spec) is None  # not used by llama.cpp
    case = _case(llamacpp_data, 32768, 1)
    [cache] = case["measured_mib"]["kv_caches"]
    assert (cache["cells"], cache["layers"], cache["mib"]) == (32768, 4, 192.0)
    row = acc.score_llamacpp_case(spec, case, None)
    # 4 layers x 32768 cells x 2 x 384 x f16 = 192 MiB; with the 2047 window it was 15 MiB (2560 cells).
    assert row["predicted"]["kv"] == 192.0


def test_other_sliding_window_models_keep_their_window(llamacpp_specs: dict[str, Any]) -> None:
    gemma2 = llamacpp_specs["gemma2-swa256-v64k-gqa2-hd256-L6-f16"]
    assert llamacpp_sliding_window(gemma2) == gemma2.attention.sliding_window == 256
