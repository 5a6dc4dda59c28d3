"""`llmhost gateway plan`: the real planner on each configured model, replayed through placement, on a
what-if two-GPU machine (nothing launches)."""

from __future__ import annotations

import json
from pathlib import Path

from support.serve_helpers import llmhost


def _config(tmp_path: Path, models: dict[str, Path], extra: str) -> Path:
    lines = ["models:"]
    lines += [f"  {name}: {{model: {path}, context: 512}}" for name, path in models.items()]
    path = tmp_path / "gw.yaml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def test_plan_on_two_gpus_shows_devices_needs_and_who_evicts_whom(tmp_path, tiny_models, llmhost_here):
    # In this process (tests/conftest.py): the plans are what is checked; the bad-file test below runs one.
    free = _config(tmp_path, tiny_models, "")
    proc = llmhost_here("gateway", "plan", "--config", str(free), "--hardware", "h100-80gb:2", "--json")
    assert proc.returncode == 0, proc.stderr
    roomy = json.loads(proc.stdout)
    assert [d["device"] for d in roomy["devices"]] == ["cpu", "cuda:0", "cuda:1"]
    assert roomy["all_fit"] and roomy["resident_together"] == ["small", "mid", "big"]
    needs = {m["name"]: sum(m["need"].values()) for m in roomy["models"]}
    assert needs["small"] < needs["mid"] < needs["big"]  # the planner saw three sizes
    assert all(m["need"].get("cuda:0") for m in roomy["models"])

    # A budget on the GPUs that holds any two of the models but not all three.
    per_gpu = {d: sorted(m["need"][d] for m in roomy["models"]) for d in ("cuda:0", "cuda:1")}
    budget = {d: v[1] + v[2] + v[0] // 2 for d, v in per_gpu.items()}
    tight = _config(
        tmp_path,
        tiny_models,
        f'memory_budget: {{"cuda:0": {budget["cuda:0"]}, "cuda:1": {budget["cuda:1"]}}}\n',
    )
    proc = llmhost_here("gateway", "plan", "--config", str(tight), "--hardware", "h100-80gb:2", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    rows = {m["name"]: m for m in plan["models"]}
    assert not plan["all_fit"] and rows["big"]["evicts"] == ["small"]
    assert plan["resident_together"] == ["mid", "big"]
    human = llmhost_here("gateway", "plan", "--config", str(tight), "--hardware", "h100-80gb:2")
    assert human.returncode == 0, human.stderr
    assert "cuda:1" in human.stdout and "budget" in human.stdout and "not all fit together" in human.stdout


def test_a_bad_models_file_is_one_line_naming_key_and_line(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text("models:\n  chat:\n    model: a.gguf\n    ttl: soon\n")
    proc = llmhost("gateway", "plan", "--config", str(path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{path}:4: models.chat.ttl" in proc.stderr


def test_a_model_that_cannot_be_planned_is_not_said_not_to_fit(tmp_path, tiny_models, llmhost_here):
    # A missing file was shown as "does not fit: No such file or directory: x.gguf."
    path = _config(tmp_path, {"gone": tmp_path / "gone.gguf", "small": tiny_models["small"]}, "")
    proc = llmhost_here("gateway", "plan", "--config", str(path))
    assert proc.returncode == 0, proc.stderr
    (line,) = [x for x in proc.stdout.splitlines() if x.lstrip().startswith("gone")]
    assert "cannot plan: No such file or directory" in line and "does not fit" not in line, proc.stdout


def test_a_budget_for_a_device_the_machine_lacks_is_warned_about(tmp_path, tiny_models, llmhost_here):
    # It was silently ignored: a typo'd or absent GPU left the real one without its budget.
    path = _config(tmp_path, {"small": tiny_models["small"]}, 'memory_budget: {"cuda:7": 10GiB}\n')
    proc = llmhost_here("gateway", "plan", "--config", str(path), "--hardware", "h100-80gb:2")
    assert proc.returncode == 0, proc.stderr
    assert "memory_budget" in proc.stderr and "cuda:7" in proc.stderr and "ignored" in proc.stderr, (
        proc.stderr
    )
