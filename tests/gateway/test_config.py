"""The models file and the keys file: validation that names the key and the line, 0600, re-read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmhost.errors import ProfileError, UsageError
from llmhost.gateway.config import (
    DEFAULT_PORT,
    Keys,
    check_listen,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
)

EXAMPLE = """\
models:
  chat:   {model: org/Model-GGUF:Q4_K_M, context: 8192, concurrency: 4, ttl: 30m, aliases: [gpt-4o-mini]}
  coder:  {model: ./coder.gguf, profile: throughput}
  big:    {model: org/Big-70B-Instruct, engine: vllm, pin: false}
  embed:  {model: org/embedder-GGUF:Q8_0, embeddings: true, pin: true}
memory_budget: {cpu: 12GiB, "cuda:0": 70GiB}
default_ttl: 15m
"""


def test_the_issue_example_parses_with_every_unit():
    cfg = parse_config(EXAMPLE)
    assert cfg.models["chat"].ttl == 1800 and cfg.ttl_of("coder") == 900
    assert cfg.models["chat"].context == 8192 and cfg.models["coder"].profile == "throughput"
    assert cfg.memory_budget == {"cpu": 12 << 30, "cuda:0": 70 << 30}
    assert cfg.names()["gpt-4o-mini"] == "chat" and cfg.names()["embed"] == "embed"
    assert cfg.port == DEFAULT_PORT and cfg.host == "127.0.0.1"


def test_every_profile_field_is_allowed_per_model():
    cfg = parse_config(
        "models:\n  m:\n    model: x.gguf\n    quant: Q4_K_M\n    kv_cache_dtype: q8_0\n    goal: latency\n"
        "    extra_args: [--no-mmap]\n    env: {OMP_NUM_THREADS: 2}\n    chat_template: chatml\n"
    )
    entry = cfg.models["m"]
    assert entry.extra_args == ["--no-mmap"] and entry.env == {"OMP_NUM_THREADS": "2"}
    assert entry.kv_cache_dtype == "q8_0" and entry.chat_template == "chatml"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("models:\n  chat:\n    model: a.gguf\n    contxt: 10\n", "gw.yaml:4: models.chat.contxt"),
        ("models:\n  chat: {model: a.gguf}\nmemory_budget: {cpu: lots}\n", "gw.yaml:3: memory_budget"),
        ("models:\n  chat: {model: a.gguf, ttl: soon}\n", "gw.yaml:2: models.chat.ttl"),
        ("models:\n  chat: {model: a.gguf, host: 0.0.0.0}\n", "gw.yaml:2: models.chat.host"),
        (
            "models:\n  chat: {model: a.gguf, extra_args: [--port, '9']}\n",
            "gw.yaml:2: models.chat.extra_args",
        ),
        ("port: 70000\n", "gw.yaml:1: port"),
    ],
)
def test_errors_name_the_key_and_its_line(text, where):
    with pytest.raises(ProfileError) as err:
        parse_config(text, "gw.yaml")
    assert where in err.value.message, err.value.message


def test_names_and_aliases_are_unique_and_well_formed():
    with pytest.raises(ProfileError, match="'chat' is also used by"):
        parse_config("models:\n  chat: {model: a.gguf}\n  other: {model: b.gguf, aliases: [chat]}\n")
    with pytest.raises(ProfileError, match="lowercase"):
        parse_config("models:\n  Chat Model: {model: a.gguf}\n")
    with pytest.raises(ProfileError, match="give model:"):
        parse_config("models:\n  chat: {ttl: 5m}\n")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            "models:\n  chat: {model: a.gguf}\n\n  Chat Model: {model: b.gguf}\n",
            "gw.yaml:4: models.Chat Model:",
        ),
        ("models:\n  chat:\n    model: a.gguf\n  coder:\n    ttl: 5m\n", "gw.yaml:4: models.coder:"),
        (
            "models:\n  chat:\n    model: a.gguf\n  coder:\n    model: b.gguf\n    aliases: [x, chat]\n",
            "gw.yaml:6: models.coder.aliases.1:",
        ),
    ],
)
def test_name_and_alias_errors_name_the_models_key_and_line_not_the_top(text, where):
    # These checks span models (a name, an alias clash); they used to say `gw.yaml:1: (top level)`.
    with pytest.raises(ProfileError) as err:
        parse_config(text, "gw.yaml")
    assert where in err.value.message and "(top level)" not in err.value.message, err.value.message


def test_yaml_is_safe_and_bounded():
    with pytest.raises(ProfileError, match="invalid YAML"):
        parse_config("models: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ProfileError, match="given twice"):
        parse_config("models: {}\nport: 1\nport: 2\n")


def test_durations_and_sizes():
    assert [parse_duration(v) for v in (90, "90s", "30m", "1h30m", "1.5h", "never", "0")] == [
        90, 90, 1800, 5400, 5400, 0, 0,
    ]  # fmt: skip
    assert parse_size("512MiB") == 512 << 20 and parse_size("12g") == 12 << 30 and parse_size(1000) == 1000
    for bad in ("-1s", "soon", True):
        with pytest.raises(ValueError):
            parse_duration(bad)
    for bad in ("0", "lots", -5):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_the_default_file_lives_under_xdg_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    cfg, path = load_config()
    assert path == tmp_path / "llmhost" / "gateway.yaml" and cfg.models == {}
    path.parent.mkdir()
    path.write_text("models:\n  m: {model: a.gguf}\n")
    assert list(load_config()[0].models) == ["m"]
    with pytest.raises(ProfileError, match="No models file"):
        load_config(tmp_path / "missing.yaml")


def _keys_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_keys_are_named_0600_and_re_read_when_the_file_changes(tmp_path):
    path = _keys_file(tmp_path / "keys.yaml", "alice: alice-key-0123\nbob: bob-key-01234\n")
    keys = Keys(path)
    assert keys.enabled and keys.match("alice-key-0123") == "alice" and keys.match("bob-key-01234") == "bob"
    assert keys.match("wrong-key-000") is None and keys.match(None) is None
    # Revoke bob, add carol: no restart. (The size changes, so the stamp does even within one mtime tick.)
    _keys_file(path, "alice: alice-key-0123\ncarol: carol-key-0123456\n")
    keys.reload()
    assert keys.match("bob-key-01234") is None and keys.match("carol-key-0123456") == "carol"
    os.chmod(path, 0o644)
    path.write_text("alice: alice-key-0123\n")  # a change, and now readable by others
    with pytest.raises(UsageError, match="readable by others") as err:
        keys.reload()
    assert "alice-key" not in str(err.value)


def test_a_keys_file_made_readable_by_others_is_refused_though_its_content_did_not_change(tmp_path):
    # `chmod 644` changes neither the inode, nor the size, nor the mtime: the re-read must see the mode.
    path = _keys_file(tmp_path / "keys.yaml", "alice: alice-key-0123\n")
    keys = Keys(path)
    assert keys.match("alice-key-0123") == "alice"
    os.chmod(path, 0o644)
    with pytest.raises(UsageError, match="readable by others"):
        keys.reload()
    with pytest.raises(UsageError, match="readable by others"):
        keys.reload()  # and keeps refusing
    os.chmod(path, 0o600)
    keys.reload()
    assert keys.match("alice-key-0123") == "alice"


def test_bad_keys_never_echo_the_key(tmp_path):
    with pytest.raises(UsageError, match="at least 8") as err:
        Keys(_keys_file(tmp_path / "k.yaml", "alice: short\n"))
    assert "short" not in err.value.message
    with pytest.raises(UsageError, match="not a mapping"):
        Keys(_keys_file(tmp_path / "k2.yaml", "- a\n- b\n"))


def test_env_key_and_the_listen_rule(tmp_path):
    keys = Keys(None, env_key="env-key-012345")
    assert keys.match("env-key-012345") == "env"
    check_listen("0.0.0.0", keys, insecure_no_auth=False)  # a key: fine
    none = Keys(None)
    check_listen("127.0.0.1", none, insecure_no_auth=False)
    with pytest.raises(UsageError, match="no API key"):
        check_listen("0.0.0.0", none, insecure_no_auth=False)
    check_listen("0.0.0.0", none, insecure_no_auth=True)
