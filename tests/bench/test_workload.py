"""Workloads: lengths within the asked range, prompts unique unless a shared prefix is asked for,
the request body forcing the length."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmhost.bench.workload import FileWorkload, SyntheticWorkload, parse_range, request_body
from llmhost.errors import UsageError


def test_ranges() -> None:
    assert parse_range("128", what="x") == (128, 128)
    assert parse_range("64:256", what="x") == (64, 256)
    for bad in ("0", "abc", "9:3", "-1"):
        with pytest.raises(UsageError):
            parse_range(bad, what="x")


def test_prompts_are_unique_and_lengths_in_range() -> None:
    wl = SyntheticWorkload((20, 40), (5, 9), seed=3, api="completions")
    prompts = [wl.make() for _ in range(200)]
    texts = [p.text or "" for p in prompts]
    assert len(set(texts)) == 200
    assert len({t.split()[0] for t in texts}) > 50  # differ from the first token on: no cache flattery
    assert all(
        20 <= p.prompt_tokens <= 40 and len((p.text or "").split()) == p.prompt_tokens for p in prompts
    )
    assert {p.output_tokens for p in prompts} == set(range(5, 10))


def test_shared_prefix_on_request() -> None:
    wl = SyntheticWorkload((50, 50), (4, 4), seed=1, shared_prefix_tokens=30)
    a, b = wl.make(), wl.make()
    wa = a.messages[0]["content"].split()  # type: ignore[index]
    wb = b.messages[0]["content"].split()  # type: ignore[index]
    assert wa[:30] == wb[:30] and wa[30:] != wb[30:] and len(wa) == 50


def test_body_forces_the_length_both_ways() -> None:
    wl = SyntheticWorkload((8, 8), (16, 16), seed=1)
    body = request_body(wl.make(), model="m", api="chat", force_length=True)
    assert body["max_tokens"] == body["max_completion_tokens"] == body["min_tokens"] == 16
    assert body["ignore_eos"] is True and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    plain = request_body(wl.make(), model="m", api="chat", force_length=False)
    assert "ignore_eos" not in plain and "min_tokens" not in plain and plain["max_tokens"] == 16


def test_sharegpt_json_list(tmp_path: Path) -> None:
    path = tmp_path / "sg.json"
    path.write_text(json.dumps([{"conversations": [{"from": "human", "value": "hi there"}]}, {"junk": 1}]))
    wl = FileWorkload(path, output_tokens=(7, 7), api="completions")
    p = wl.make()
    assert p.text == "hi there" and p.output_tokens == 7
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(UsageError, match="not JSONL"):
        FileWorkload(bad, output_tokens=None)
