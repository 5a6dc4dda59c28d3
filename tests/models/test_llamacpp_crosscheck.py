"""Our GGUF byte and parameter counts against llama.cpp's own (llama_model_size / llama_model_n_params).

The tiny demo model is quantized by llama.cpp's quantizer (the code behind `llama-quantize`), which
keeps some tensors in other types (Q4_K_M: Q5_0/Q8_0 for some, F32 norms), then loaded by llama.cpp.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmhost.models import resolve

llama_cpp = pytest.importorskip("llama_cpp")


def _llama_cpp_counts(path: Path) -> tuple[int, int]:
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    assert model, f"llama.cpp could not load {path}"
    try:
        return int(llama_cpp.llama_model_size(model)), int(llama_cpp.llama_model_n_params(model))
    finally:
        llama_cpp.llama_model_free(model)


@pytest.mark.parametrize("ftype", ["F16", "Q8_0", "Q4_K_M", "Q6_K"])
def test_weights_and_parameters_match_llama_cpp(tiny_gguf: Path, tmp_path: Path, ftype: str) -> None:
    path = tiny_gguf
    if ftype != "F16":
        path = tmp_path / f"tiny-{ftype}.gguf"
        qparams = llama_cpp.llama_model_quantize_default_params()
        qparams.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
        qparams.nthread = 1
        assert llama_cpp.llama_model_quantize(str(tiny_gguf).encode(), str(path).encode(), qparams) == 0
    spec = resolve(str(path))
    size, n_params = _llama_cpp_counts(path)
    assert spec.weights_bytes == size
    assert spec.parameters == n_params
    if ftype != "F16":
        assert spec.quantization.gguf_file_type == ftype
