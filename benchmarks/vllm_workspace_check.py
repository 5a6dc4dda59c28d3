"""The fused-MoE workspace term (estimate/vllm_workspace.py) on the MoE / FP8 / MXFP4 vLLM records, by half.

    PYTHONPATH=src python benchmarks/vllm_workspace_check.py

Prints, for every record of benchmarks/data/vllm_startup_logs*.json whose model is a mixture of experts or
quantized and whose GPU total and pool vLLM printed, the KV pool llmhost predicts without and with the
term (the term at the record's own vLLM version), split as benchmarks/data/README.md fixes. The term is
derived from vLLM's code, not fitted; docs/accuracy.md holds today's output.
"""

from __future__ import annotations

import json
import pathlib
import re
import tempfile
from typing import Any

from llmhost import estimate as est
from llmhost.estimate.vllm_workspace import moe_quant_workspace_bytes
from llmhost.models import resolve

GIB = 1024**3
DATA = pathlib.Path(__file__).resolve().parent / "data"


def spec_of(cfg: dict[str, Any]) -> Any:
    d = pathlib.Path(tempfile.mkdtemp())
    (d / "config.json").write_text(json.dumps(cfg))
    return resolve(str(d / "config.json"))


def main() -> None:
    readme = (DATA / "README.md").read_text()
    cal_first = set()
    for line in readme.splitlines():
        if line.startswith("- calibration:"):
            cal_first = set(re.findall(r"`([^`]+)` \(calibration\)", line))
    rows = []
    for f in [DATA / "vllm_startup_logs.json", DATA / "vllm_startup_logs_more.json"]:
        d = json.loads(f.read_text())
        for r in d["records"]:
            cfg = d["configs"].get(r["model"])
            fl = r.get("flags") or {}
            if (
                cfg is None
                or r["printed"].get("available_kv_gib") is None
                or not r["gpu"].get("total_gib")
                or fl.get("gpu_memory_utilization") is None
            ):
                continue
            s = spec_of(cfg)
            q = s.quantization.method
            if s.moe is None and q == "none" and not fl.get("quantization"):
                continue
            split = r.get("split") or ("calibration" if r["id"] in cal_first else "validation")
            tp = fl.get("tensor_parallel_size") or 1
            total = int(r["gpu"]["total_gib"] * GIB)
            mnbt = fl.get("max_num_batched_tokens") or est.vllm.default_max_num_batched_tokens(
                total, r["gpu"]["name"]
            )
            st = est.VllmSettings(
                gpu_memory_utilization=fl["gpu_memory_utilization"],
                max_num_seqs=fl.get("max_num_seqs") or 256,
                max_num_batched_tokens=mnbt,
                tensor_parallel_size=tp,
                pipeline_parallel_size=fl.get("pipeline_parallel_size") or 1,
            )
            lay = est.weights_layout(s, est.own_quantization(s))
            m = est.vllm_gpu_memory(s, lay, st, total)
            ws = moe_quant_workspace_bytes(s, lay.quantization, tp, mnbt, r["vllm_version"].split()[0])
            # with = model as wired but version-aware; without = held bytes removed
            act_without = est.activation_peak_bytes(s, st)
            act_with = est.activation_peak_bytes(s, st, held_bytes=ws)
            base = m.kv_cache_bytes + m.activation_bytes
            kv_without = (base - act_without) / GIB
            kv_with = (base - act_with) / GIB
            p = r["printed"]["available_kv_gib"]
            rows.append((split, r["id"], r["vllm_version"], q, tp, p, kv_without, kv_with))
    for split in ("calibration", "validation"):
        print("##", split)
        for row in rows:
            if row[0] != split:
                continue
            _, i, v, q, tp, p, a, b = row
            print(
                f"| `{i[:58]}` | {v} | {q} | {tp} | {p:.2f} | {a:.2f} ({(a - p) / p:+.1%}) "
                f"| {b:.2f} ({(b - p) / p:+.1%}) |"
            )


if __name__ == "__main__":
    main()
