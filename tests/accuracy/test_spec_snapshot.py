"""The recorded specs are what llmhost's resolver makes of the measured GGUFs today.

`benchmarks/data/llamacpp_specs.json` lets the accuracy tests skip parsing 150k-token vocabularies
(the gguf reader needs ~10 s for one). This test re-resolves the smaller-vocabulary models from
header-exact replicas and fails when the snapshot is stale; regenerate it with
`python benchmarks/accuracy_llamacpp.py compare`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import _accuracy_compare as acc
import _gguf_shapes as shapes
import gguf
import pytest

from llmhost.models import resolve

DATA = acc.load(acc.LLAMACPP_DATA)
# Small vocabularies parse in about a second; the large ones are covered by the benchmark.
QUICK = sorted(name for name, m in DATA["models"].items() if m["shape"]["n_vocab"] <= 32064)


def test_every_measured_model_has_a_snapshot(llamacpp_specs: dict[str, Any]) -> None:
    assert set(llamacpp_specs) == set(DATA["models"])


@pytest.mark.parametrize("name", QUICK)
def test_snapshot_matches_a_fresh_resolve(name: str, llamacpp_specs: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / f"{name}.gguf"
    shapes.write_replica(DATA["models"][name]["gguf"], path)
    fresh = resolve(str(path))
    assert acc.spec_facts(fresh) == acc.spec_facts(llamacpp_specs[name])


def test_replica_header_equals_the_recorded_header(tmp_path: Path) -> None:
    """The replica is faithful: same metadata, tensor types, shapes and sizes as the measured file."""
    name = QUICK[0]
    record = DATA["models"][name]["gguf"]
    path = tmp_path / "replica.gguf"
    shapes.write_replica(record, path)
    # The gguf package (llama.cpp's Python reader) reads it back: one read serves both checks.
    reader = gguf.GGUFReader(str(path))
    described = shapes.describe_gguf(path, reader)
    assert described["tensors"] == record["tensors"]
    assert json.dumps(described["metadata"], sort_keys=True) == json.dumps(record["metadata"], sort_keys=True)
    assert described["file_bytes"] == record["file_bytes"]
    assert len(reader.tensors) == len(record["tensors"])
