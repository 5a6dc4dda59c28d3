"""Parse the memory lines llama.cpp prints while it loads a model and creates a context.

The formats are those of the llama.cpp vendored in llama-cpp-python 0.3.36:
  src/llama-model.cpp    "load_tensors: %12s model buffer size = %8.2f MiB"
  src/llama-context.cpp  "llama_context: %10s  output buffer size = %8.2f MiB"
                         "sched_reserve: %10s compute buffer size = %8.2f MiB"
                         "llama_context: n_ctx = 4096" (one setting per line)
  src/llama-kv-cache.cpp "llama_kv_cache: %10s KV buffer size = %8.2f MiB"
                         "llama_kv_cache: size = %7.2f MiB (%6u cells, %3d layers, %2u/%u seqs),
                          K (%s): %7.2f MiB, V (%s): %7.2f MiB"
Values are printed in MiB with two decimals, so a figure is known to +-0.005 MiB.
"""

from __future__ import annotations

import re
from typing import Any

MIB = 1024 * 1024
RESOLUTION_MIB = 0.005

MODEL_BUFFER = re.compile(r"^(?P<fn>\w+):\s+(?P<buf>\S+) model buffer size =\s+(?P<mib>[\d.]+) MiB$")
OUTPUT_BUFFER = re.compile(r"^(?P<fn>\w+):\s+(?P<buf>\S+)\s+output buffer size =\s+(?P<mib>[\d.]+) MiB$")
COMPUTE_BUFFER = re.compile(r"^(?P<fn>\w+):\s+(?P<buf>\S+) compute buffer size =\s+(?P<mib>[\d.]+) MiB$")
KV_BUFFER = re.compile(r"^(?P<fn>\w+):\s+(?P<buf>\S+) KV buffer size =\s+(?P<mib>[\d.]+) MiB$")
KV_SIZE = re.compile(
    r"^(?P<fn>\w+): size =\s+(?P<mib>[\d.]+) MiB \(\s*(?P<cells>\d+) cells,\s+(?P<layers>\d+) layers,"
    r"\s+(?P<seqs>\d+)/(?P<streams>\d+) seqs\), K \((?P<k_type>\w+)\):\s+(?P<k_mib>[\d.]+) MiB,"
    r" V \((?P<v_type>\w+)\):\s+(?P<v_mib>[\d.]+) MiB$"
)
CONTEXT_SETTING = re.compile(r"^llama_context: (?P<key>\w+)\s+= (?P<value>\S+)$")
# With flash_attn "auto", llama.cpp probes the backend and says what it chose (src/llama-context.cpp).
FLASH_ATTN_RESOLVED = re.compile(r"^\w+: Flash Attention (?P<state>enabled|not supported, set to disabled)")

# Lines kept next to the memory lines: the settings llama.cpp resolved and how it split the SWA cache.
CONTEXT_PREFIXES = ("llama_context: ", "llama_kv_cache_iswa: ", "resolve_fused_ops: ")

# Every line any of the patterns above matches; a recorded line that matches none is a parser defect.
MEMORY_LINE = re.compile(r"(model|output|compute|KV) buffer size =|^\w+: size = .* cells")


def parse_lines(lines: list[str]) -> dict[str, Any]:
    """Collect every memory figure in `lines` (in MiB, as printed) plus the context settings."""
    out: dict[str, Any] = {
        "model_buffers": {},
        "output_buffers": {},
        "compute_buffers": {},
        "kv_buffers": [],
        "kv_caches": [],
        "context": {},
    }
    for raw in lines:
        line = raw.rstrip("\n")
        if m := MODEL_BUFFER.match(line):
            out["model_buffers"][m["buf"]] = float(m["mib"])
        elif m := OUTPUT_BUFFER.match(line):
            out["output_buffers"][m["buf"]] = float(m["mib"])
        elif m := COMPUTE_BUFFER.match(line):
            out["compute_buffers"][m["buf"]] = float(m["mib"])
        elif m := KV_BUFFER.match(line):
            out["kv_buffers"].append({"buffer": m["buf"], "mib": float(m["mib"])})
        elif m := KV_SIZE.match(line):
            out["kv_caches"].append(
                {
                    "mib": float(m["mib"]),
                    "cells": int(m["cells"]),
                    "layers": int(m["layers"]),
                    "seqs": int(m["seqs"]),
                    "streams": int(m["streams"]),
                    "k_type": m["k_type"],
                    "k_mib": float(m["k_mib"]),
                    "v_type": m["v_type"],
                    "v_mib": float(m["v_mib"]),
                }
            )
        elif m := CONTEXT_SETTING.match(line):
            out["context"][m["key"]] = m["value"]
        elif m := FLASH_ATTN_RESOLVED.match(line):
            out["context"]["flash_attn"] = "enabled" if m["state"] == "enabled" else "disabled"
    return out


def is_memory_line(line: str) -> bool:
    return bool(MEMORY_LINE.search(line))


def totals_mib(parsed: dict[str, Any]) -> dict[str, float]:
    """Per-component totals in MiB: model, kv, compute, output and their sum."""
    model = sum(parsed["model_buffers"].values())
    kv = sum(b["mib"] for b in parsed["kv_buffers"])
    compute = sum(parsed["compute_buffers"].values())
    output = sum(parsed["output_buffers"].values())
    return {
        "model": model,
        "kv": kv,
        "compute": compute,
        "output": output,
        "total": model + kv + compute + output,
    }
