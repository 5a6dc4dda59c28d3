"""Hostile and broken model files (issue 13): every one is a one-line ModelError naming the file, the
field and what is wrong, never a Python exception, a hang or a memory blow-up."""

from __future__ import annotations

import json
import os
import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from llmhost.errors import ModelError
from llmhost.models import resolve
from llmhost.models.files import MAX_JSON_BYTES, MAX_JSON_DEPTH
from llmhost.models.safetensors_meta import MAX_SHARDS
from llmhost.models.spec import MAX_LAYERS
from support.hubserver import FakeHub, HubFile
from support.model_makers import (
    llama_tensors,
    safetensors_header,
    tiny_llama_config,
    write_gguf,
    write_safetensors,
)

pytestmark = pytest.mark.timeout(60)  # a regression here is a hang: fail it instead of the run

TINY: dict[str, Any] = tiny_llama_config()


def _config(tmp_path: Path, text: str) -> str:
    (tmp_path / "config.json").write_text(text)
    return str(tmp_path / "config.json")


def _refused(ref: str, *patterns: str) -> ModelError:
    with pytest.raises(ModelError) as err:
        resolve(ref)
    text = str(err.value)
    for pattern in patterns:
        assert pattern in text, text
    assert err.value.hint, text
    assert "\n" not in text
    return err.value


# --- config.json values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "field", "rule"),
    [
        ({"num_attention_heads": 0}, "num_attention_heads is 0", "positive integer"),  # ZeroDivisionError
        ({"num_hidden_layers": -2}, "num_hidden_layers is -2", "integer from 0"),
        ({"num_hidden_layers": 0}, "num_hidden_layers is 0", "positive integer"),
        (
            {"num_hidden_layers": 10**9},
            "num_hidden_layers is 1000000000",
            f"at most {MAX_LAYERS}",
        ),  # MemoryError
        ({"hidden_size": 0}, "hidden_size is 0", "positive integer"),
        ({"vocab_size": 2**63}, "vocab_size is 9223372036854775808", "integer from 0"),
        ({"hidden_size": 1e308}, "hidden_size is 1e+308", "integer from 0"),  # OverflowError in floats
        ({"intermediate_size": -1}, "intermediate_size is -1", "integer from 0"),
        ({"model_type": "jamba", "attn_layer_period": 0}, "attn_layer_period is 0", "positive"),
        ({"full_attention_interval": 0}, "full_attention_interval is 0", "positive"),
        (
            {"num_local_experts": 8, "num_experts_per_tok": 9},
            "num_experts_per_tok is 9",
            "at most the number of experts",
        ),
        (
            {"quantization_config": {"quant_method": "gptq", "bits": 0.001}},
            "quantization_config.bits is 0.001",
            "from 1 to 32",
        ),
        (
            {"model_type": "lfm2", "block_auto_adjust_ff_dim": True, "block_ffn_dim_multiplier": 1e308},
            "block_ffn_dim_multiplier is 1e+308",
            "at most 100",
        ),
    ],
)
def test_impossible_numbers_name_the_field(
    tmp_path: Path, edit: dict[str, Any], field: str, rule: str
) -> None:
    err = _refused(_config(tmp_path, json.dumps({**TINY, **edit})), "config.json: " + field, rule)
    assert "corrupt or unsupported config?" in err.message


def test_a_400_digit_number_is_shown_shortened(tmp_path: Path) -> None:
    text = json.dumps(TINY).replace('"vocab_size": 256', '"vocab_size": ' + "9" * 400)
    err = _refused(_config(tmp_path, text), "vocab_size is 99999")
    assert len(err.message) < 200


@pytest.mark.parametrize(
    "edit",
    [
        {"quantization_config": {"quant_method": "compressed-tensors", "config_groups": [1, 2]}},  # .values()
        {"model_type": "qwen3_moe", "num_experts": 4, "mlp_only_layers": 5},  # `in` an int
        {"model_type": "lfm2", "full_attn_idxs": 3},  # set(int)
        {"model_type": "lfm2", "full_attn_idxs": [[1], {"a": 1}]},  # unhashable
        {"thinker_config": {**TINY, "text_config": [1]}},  # .get on a list
    ],
)
def test_wrong_types_where_maps_and_lists_belong_are_ignored_like_absent_keys(
    tmp_path: Path, edit: dict[str, Any]
) -> None:
    spec = resolve(_config(tmp_path, json.dumps({**TINY, **edit})))
    assert spec.attention.num_layers == 2


# --- JSON syntax and size -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "message"),
    [("NaN", "NaN is not a JSON number"), ("-Infinity", "-Infinity"), ("1e999", "overflows a double")],
)
def test_non_finite_numbers_are_refused_at_parse(tmp_path: Path, literal: str, message: str) -> None:
    text = json.dumps(TINY).replace('"hidden_size": 64', f'"hidden_size": {literal}')
    _refused(_config(tmp_path, text), "is not valid JSON", message)


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    for depth in (MAX_JSON_DEPTH + 1, 100_000):  # past the limit; past Python's recursion limit
        deep = "[" * depth + "]" * depth
        text = json.dumps(TINY)[:-1] + f', "extra": {deep}}}'
        _refused(_config(tmp_path, text), f"nests deeper than {MAX_JSON_DEPTH} levels")


def test_depth_of_real_configs_is_accepted(tmp_path: Path) -> None:
    nested = {
        "quant_method": "compressed-tensors",
        "config_groups": {"group_0": {"weights": {"num_bits": 4}}},
    }
    spec = resolve(_config(tmp_path, json.dumps({**TINY, "quantization_config": nested})))
    assert spec.quantization.bits == 4


def test_lone_surrogate_escape_is_refused(tmp_path: Path) -> None:
    text = json.dumps({**TINY, "architectures": ["\ud800"]})  # json.dumps writes it as \ud800
    _refused(_config(tmp_path, text), "unpaired surrogate")
    emoji = json.dumps({**TINY, "architectures": ["Llama\U0001f600"]})  # a valid pair of escapes
    assert resolve(_config(tmp_path, emoji)).architecture == "Llama\U0001f600"


def test_huge_config_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    with path.open("wb") as fh:
        fh.truncate(2**30)  # 1 GiB, sparse
    _refused(str(path), f"a model's JSON file is at most {MAX_JSON_BYTES:,} bytes")


def test_json_that_is_not_an_object_names_its_type(tmp_path: Path) -> None:
    _refused(_config(tmp_path, "[1, 2]"), "holds a JSON array, not an object")


# --- special files ----------------------------------------------------------------------------------


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _with_watchdog(ref: str, *patterns: str) -> None:
    """Resolve in a thread: a regression blocks on the FIFO, and the test must fail, not hang."""
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: errors.append(_catch(ref)), daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), f"resolve({ref!r}) blocked"
    assert isinstance(errors[0], ModelError), errors
    for pattern in patterns:
        assert pattern in str(errors[0])


def _catch(ref: str) -> BaseException:
    try:
        resolve(ref)
    except BaseException as exc:
        return exc
    return AssertionError("accepted")


@pytest.mark.parametrize("name", ["config.json", "model.gguf", "model.safetensors", "weights.bin"])
def test_a_fifo_given_as_the_model_is_refused(tmp_path: Path, name: str) -> None:
    _with_watchdog(str(_fifo(tmp_path / name)), "is a FIFO (named pipe), not a regular file")


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "model.safetensors.index.json"])
def test_a_fifo_inside_a_model_directory_is_refused(tmp_path: Path, name: str) -> None:
    if name != "config.json":
        (tmp_path / "config.json").write_text(json.dumps(TINY))
    _fifo(tmp_path / name)
    _with_watchdog(str(tmp_path), name, "is a FIFO")


def test_a_fifo_gguf_in_a_directory_is_refused(tmp_path: Path) -> None:
    _fifo(tmp_path / "model.gguf")
    _with_watchdog(str(tmp_path), "model.gguf is a FIFO")


def test_a_character_device_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    (tmp_path / "model.safetensors").symlink_to("/dev/zero")
    _with_watchdog(str(tmp_path), "is a character device")


def test_directories_where_files_belong(tmp_path: Path) -> None:
    (tmp_path / "config.json").mkdir()
    _refused(str(tmp_path), "config.json is a directory, not a regular file")
    (tmp_path / "config.json").rmdir()
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    (tmp_path / "model.safetensors").mkdir()
    _refused(str(tmp_path), "model.safetensors is a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_config_names_the_file_and_the_check(tmp_path: Path) -> None:
    path = Path(_config(tmp_path, json.dumps(TINY)))
    path.chmod(0)
    err = _refused(str(path), "Cannot read", "Permission denied")
    assert "ls -l" in (err.hint or "")


def test_split_gguf_name_with_impossible_numbering(tmp_path: Path) -> None:
    write_gguf(tmp_path / "x.gguf")
    (tmp_path / "x.gguf").rename(tmp_path / "m-00001-of-00000.gguf")  # was IndexError: no shards
    _refused(str(tmp_path / "m-00001-of-00000.gguf"), "shard 1 of 0")


# --- safetensors headers and index -------------------------------------------------------------------


def _model_dir(tmp_path: Path) -> list[tuple[str, str, tuple[int, ...]]]:
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    return llama_tensors(TINY)


def _raw_shard(path: Path, table: dict[str, Any], data: int) -> None:
    raw = json.dumps(table).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(data))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"dtype": "BF16", "shape": [4, 4], "data_offsets": [0, 8]}, "has 8 bytes for shape [4, 4] of BF16"),
        ({"dtype": "BF16", "shape": [-4, -4], "data_offsets": [0, 32]}, "malformed shape"),
        ({"dtype": "BF16", "shape": [2**62, 2**62, 0], "data_offsets": [0, 0]}, "for shape"),
        ({"dtype": "BF16", "shape": [4], "data_offsets": [0, 2**70]}, "past any real checkpoint"),
        ({"dtype": "BF16", "shape": [1e300], "data_offsets": [0, 2]}, "malformed shape"),
        ({"dtype": "Q4", "shape": [4], "data_offsets": [0, 8]}, "unknown dtype 'Q4'"),
        (["BF16", [4], [0, 8]], "not an object"),
        ({"dtype": "BF16", "shape": [4], "data_offsets": "0-8"}, "malformed data_offsets"),
    ],
)
def test_safetensors_entries_must_match_their_bytes(tmp_path: Path, entry: Any, message: str) -> None:
    _model_dir(tmp_path)
    _raw_shard(tmp_path / "model.safetensors", {"w.weight": entry}, data=64)
    _refused(str(tmp_path), "model.safetensors", message)


def test_truncated_safetensors_data_is_refused(tmp_path: Path) -> None:
    tensors = _model_dir(tmp_path)
    write_safetensors(tmp_path / "model.safetensors", tensors)
    path = tmp_path / "model.safetensors"
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size - 1)  # the header still parses: was reported as fine
    _refused(str(tmp_path), "is truncated: tensor", "redo the download")


@pytest.mark.parametrize(
    ("index", "message"),
    [
        ({"weight_map": ["model.safetensors"]}, "has no weight_map object"),  # AttributeError: .values()
        ({"metadata": {}}, "has no weight_map object"),
        ({"weight_map": {"a": 3}}, "maps a tensor to 3"),
        ({"weight_map": {"a": "../../etc/passwd"}}, "not a file name inside the model"),
        ({"weight_map": {"a": "/etc/passwd"}}, "not a file name inside the model"),
        ({"weight_map": {"a": "x\x1b[31m.safetensors"}}, "not a file name inside the model"),
        ({"weight_map": {str(i): f"s{i}.safetensors" for i in range(MAX_SHARDS + 1)}}, "more than"),
    ],
)
def test_hostile_index_is_refused_before_any_shard_is_opened(
    tmp_path: Path, index: dict[str, Any], message: str
) -> None:
    _model_dir(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    _refused(str(tmp_path), "model.safetensors.index.json", message)


def test_hostile_remote_index_and_header(fake_hub: FakeHub) -> None:
    header, size = safetensors_header(llama_tensors(TINY))
    files: dict[str, HubFile | bytes] = {
        "config.json": json.dumps(TINY).encode(),
        "model.safetensors.index.json": b'{"weight_map": ["model.safetensors"]}',
        "model.safetensors": HubFile(header, size=len(header) + size, lfs=True),
    }
    fake_hub.add_repo("org/list-map", files)
    _refused("org/list-map", "org/list-map/model.safetensors.index.json has no weight_map object")
    fake_hub.add_repo("org/nan-config", {**files, "config.json": b'{"hidden_size": NaN}'})
    _refused("org/nan-config", "org/nan-config/config.json is not valid JSON: NaN")
    del files["model.safetensors.index.json"]
    fake_hub.add_repo(
        "org/short", {**files, "model.safetensors": HubFile(header, size=len(header) + 8, lfs=True)}
    )
    _refused("org/short", "org/short/model.safetensors is truncated")


# --- Hub references -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("org/name--x", "contains '--' or '..'"),
        ("org/name..x", "contains '--' or '..'"),
        ("org/-name", "cannot start or end"),
        ("org/name.", "cannot start or end"),
        ("org/name.git", "ends with '.git'"),
        ("org/" + "n" * 97, "longer than 96"),
        ("org/name@a..b", "not a valid revision"),
        ("org/name@-x", "not a valid revision"),
        ("org/name@" + "r" * 300, "not a valid revision"),
        ("org/name@x.lock", "not a valid revision"),
    ],
)
def test_repo_ids_and_revisions_the_hub_rejects(ref: str, message: str) -> None:
    _refused(ref, message)


def test_hub_validation_errors_are_translated_at_the_boundary() -> None:
    from huggingface_hub.errors import HFValidationError

    from llmhost.models import hub

    ctx = hub.HubContext(
        endpoint="http://127.0.0.1:9", token=None, cache_dir=Path("/nonexistent"), offline=False
    )
    with pytest.raises(ModelError, match="not a valid Hub reference") as err, hub.translate("a/b", "x", ctx):
        raise HFValidationError("Repo id must use alphanumeric chars")
    assert err.value.hint


def test_layer_cap_is_exact_and_keeps_plan_fast(tmp_path: Path) -> None:
    resolve(_config(tmp_path, json.dumps({**TINY, "num_hidden_layers": MAX_LAYERS})))
    _refused(
        _config(tmp_path, json.dumps({**TINY, "num_hidden_layers": MAX_LAYERS + 1})), f"at most {MAX_LAYERS}"
    )


def test_tensor_name_with_thousands_of_digits_is_not_a_layer_index(tmp_path: Path) -> None:
    tensors = _model_dir(tmp_path)
    odd = ("model.layers." + "9" * 5000 + ".mlp.weight", "BF16", (4,))  # int() of it raised ValueError
    write_safetensors(tmp_path / "model.safetensors", [*tensors, odd])
    spec = resolve(str(tmp_path))
    assert spec.other_bytes >= 8 and len(spec.layer_parameters) == 2
