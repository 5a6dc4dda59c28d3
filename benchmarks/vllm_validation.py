"""vLLM accuracy: llmhost's predictions against real vLLM start-up figures.

    python benchmarks/vllm_validation.py          # print the table, update docs/accuracy.md
    python benchmarks/vllm_validation.py --write-known-misses   # and record today's misses for the tests

The validation set (benchmarks/data/vllm_startup_logs.json) holds 37 real start-ups: figures quoted in
public vLLM issues/PRs (with their verbatim lines), and the llm-d-planner v0.19.0 sweep on H100 80GB.
For each, llmhost resolves the model's config.json facts and predicts, per tensor-parallel rank:
weights (target: within 2%), the KV cache pool vLLM will allocate (target: median error within 10%;
only where the GPU's total memory is known), and, given vLLM's own pool, how many tokens fit (a check
of the KV bytes per token, including vLLM's 16-token blocks and TP head split).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _accuracy_compare as acc  # noqa: E402
import _vllm_heldout as heldout  # noqa: E402


def summary_markdown(summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    def line(key: str, label: str, target: str) -> str:
        s = summary[key]
        if not s["n"]:
            return f"| {label} | 0 | – | – | {target} |"
        return f"| {label} | {s['n']} | {s['median_abs_error']:.1%} | {s['max_abs_error']:.1%} | {target} |"

    weights = summary["weights_gib"]
    misses = [
        f"`{r['id']}` {r['error']['weights_gib']:+.1%}"
        for r in rows
        if "weights_gib" in r["error"] and not acc.weights_ok(r)
    ]
    lines = [
        f"{summary['records']} start-ups. Weights within 2% on {weights['pass']}/{weights['n']} records.",
        "",
        "| figure | records | median abs error | max abs error | target |",
        "|---|---|---|---|---|",
        line("weights_gib", "weights per rank", "each within 2%"),
        line("available_kv_gib", "KV cache pool (GiB)", "median within 10%"),
        line("kv_tokens", "KV tokens for vLLM's pool", "(check of bytes/token)"),
        line("kv_needed_gib", "KV needed for max_model_len", "(start-up error)"),
        line("estimated_max_model_len", "vLLM's suggested max_model_len", "(start-up error)"),
    ]
    if misses:
        lines += ["", "Weights outside 2%: " + ", ".join(misses) + "."]
    return "\n".join(lines)


def main() -> int:
    started = time.monotonic()
    data = acc.load(acc.VLLM_DATA)
    rows = acc.score_vllm(data)
    summary = acc.vllm_summary(rows)
    table = acc.vllm_table(rows)
    text = summary_markdown(summary, rows)
    print(table)
    print(text)
    print(f"(validated {len(rows)} records in {time.monotonic() - started:.1f} s)")
    if acc.replace_block(acc.ACCURACY_DOC, "vllm", text + "\n\n" + table):
        print(f"updated {acc.ACCURACY_DOC}")
    acc.replace_block(acc.ESTIMATOR_DOC, "accuracy-vllm", text)
    rows2 = heldout.score()
    fits = heldout.fit_early_v1(rows2)
    reserved = heldout.reserved_fit(rows2)
    held = (
        "Scored from llmhost's own predicted pool (`python benchmarks/vllm_validation.py`); "
        "constants fitted on "
        f"calibration only: torch-reserved median {reserved['calibration']['median_gib']} GiB "
        f"(validation pairs: {reserved['validation']['values']}), early-V1 MoE factors "
        f"{[round(f, 2) for _, f in fits['moe_activation_factor']]}, early-V1 graph factor "
        f"{[round(f, 2) for _, f in fits['cudagraph_factor']]}.\n\n"
        + heldout.summary_markdown(rows2)
        + "\n### Calibration half\n\n"
        + heldout.table(rows2, "calibration")
        + "\n### Validation half\n\n"
        + heldout.table(rows2, "validation")
    )
    print(held)
    acc.replace_block(acc.ACCURACY_DOC, "vllm-heldout", held)
    if "--write-known-misses" in sys.argv[1:]:
        print(f"known misses written: {acc.write_known_misses()}")
        known = json.loads(acc.KNOWN_MISSES.read_text())
        known["vllm_heldout"] = heldout.known_misses(rows2)
        acc.KNOWN_MISSES.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n")
        print(f"validation-half misses written: {len(known['vllm_heldout'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
