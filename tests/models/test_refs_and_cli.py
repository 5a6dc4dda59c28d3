"""Reference syntax, and the `inspect` command over a real generated GGUF."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from llmhost.cli.inspect import register
from llmhost.errors import ModelError
from llmhost.models.refs import parse_ref
from llmhost.models.spec import ModelSpec
from support.model_makers import write_gguf


@pytest.mark.parametrize(
    ("ref", "kind", "repo", "rev", "tag"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", "hf_repo", "meta-llama/Llama-3.1-8B-Instruct", None, None),
        ("meta-llama/Llama-3.1-8B@v1.0", "hf_repo", "meta-llama/Llama-3.1-8B", "v1.0", None),
        ("bartowski/Qwen2.5-7B-GGUF:q4_k_m", "gguf_repo", "bartowski/Qwen2.5-7B-GGUF", None, "Q4_K_M"),
        ("hf.co/unsloth/Qwen3-8B-GGUF:Q8_0", "gguf_repo", "unsloth/Qwen3-8B-GGUF", None, "Q8_0"),
        ("unsloth/Qwen3-8B-GGUF", "gguf_repo", "unsloth/Qwen3-8B-GGUF", None, "Q4_K_M"),
        ("org/x-GGUF@abc123:Q6_K", "gguf_repo", "org/x-GGUF", "abc123", "Q6_K"),
        ("org/x-GGUF:UD-Q4_K_XL@main", "gguf_repo", "org/x-GGUF", "main", "UD-Q4_K_XL"),
        ("https://huggingface.co/org/name", "hf_repo", "org/name", None, None),
    ],
)  # fmt: skip
def test_parse_ref(ref: str, kind: str, repo: str, rev: str | None, tag: str | None) -> None:
    parsed = parse_ref(ref)
    assert (parsed.kind, parsed.repo_id, parsed.revision, parsed.tag) == (kind, repo, rev, tag)


def test_parse_ref_urls_and_bad_input() -> None:
    assert parse_ref("https://example.com/m/model-Q4_K_M.gguf").kind == "gguf_url"
    blob = parse_ref("https://huggingface.co/org/x-GGUF/blob/main/x-Q4_K_M.gguf")
    assert blob.url == "https://huggingface.co/org/x-GGUF/resolve/main/x-Q4_K_M.gguf"
    assert parse_ref("org/name", revision="dev").revision == "dev"
    with pytest.raises(ModelError, match=r"not point at a \.gguf"):
        parse_ref("https://example.com/page.html")
    with pytest.raises(ModelError, match="not a model reference"):
        parse_ref("just-a-word")
    with pytest.raises(ModelError, match="Empty"):
        parse_ref("  ")


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command("other")
    def other() -> None:  # a second command keeps Typer from collapsing the app into one command
        pass

    return app


def test_inspect_json_is_the_model_spec(tmp_path: Path) -> None:
    (path,) = write_gguf(tmp_path / "m.gguf", layers=3)
    result = CliRunner().invoke(_app(), ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    spec = ModelSpec.model_validate_json(result.stdout)
    assert spec.attention.num_layers == 3 and spec.kind == "local_gguf"


def test_inspect_human_output(tmp_path: Path) -> None:
    (path,) = write_gguf(tmp_path / "m.gguf", layers=4)
    result = CliRunner().invoke(_app(), ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert "full x4" in result.stdout and "F16" in result.stdout
