"""Serving profiles: YAML files describing a deployment, validated by a pydantic schema.

A profile sets what `llmhost serve` would otherwise take from flags (model, engine, quant, context,
concurrency, goal, extra engine args, env); flags given on the command line win. Files are read with
`yaml.safe_load` semantics (no arbitrary objects), and every error names the bad key and its line:

    profiles/x.yaml:4: contxt: Extra inputs are not permitted
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmhost.errors import ProfileError


def _profiles_dir() -> Path:
    """The shipped profiles: `profiles/` of a source checkout (editable install), else the copy a wheel
    installs under `<prefix>/share/llmhost/profiles` (pyproject's data-files)."""
    checkout = Path(__file__).resolve().parents[2] / "profiles"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "llmhost" / "profiles"


PROFILES_DIR = _profiles_dir()


# Engine flags for the bind address, port and API key (llama-server, llama-cpp-python, vLLM spellings).
_RESERVED_ARGS = frozenset({"--host", "--port", "--api-key", "--api_key", "--api-key-file"})


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = None
    model: str | None = Field(default=None, description="Model reference, as `llmhost serve MODEL` takes it.")
    engine: Literal["llamacpp", "llama-server", "llama-cpp-python", "vllm"] | None = None
    quant: str | None = None
    kv_cache_dtype: str | None = None
    context: int | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, gt=0)
    goal: Literal["quality", "throughput", "latency"] | None = None
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    tensor_parallel_size: int | None = Field(default=None, gt=0)
    trust_remote_code: bool = False
    extra_args: list[str] = Field(default_factory=list, description="Passed to the engine as they are.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the engine.")

    @field_validator("env", mode="before")
    @classmethod
    def _scalars_to_str(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: str(v).lower() if isinstance(v, bool) else v if isinstance(v, str) else str(v)
                    for k, v in value.items()}  # fmt: skip
        return value

    @field_validator("extra_args", mode="before")
    @classmethod
    def _args_to_str(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [str(v) for v in value]
        return value

    @field_validator("extra_args")
    @classmethod
    def _no_bind_or_key(cls, value: list[str]) -> list[str]:
        # Engines take the last flag given: these would move the bind past the API-key requirement (or put
        # a key in argv, visible in `ps`), and llmhost's readiness probe would not find the server.
        for arg in value:
            flag = arg.split("=", 1)[0]
            if flag in _RESERVED_ARGS:
                raise ValueError(
                    f"{flag} is set by llmhost; use the profile's host:/port: keys or --host/--port/--api-key"
                )
        return value

    @field_validator("env")
    @classmethod
    def _no_secrets(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if "API_KEY" in key.upper() or "TOKEN" in key.upper():
                raise ValueError(
                    f"{key}: secrets do not belong in profiles; pass --api-key or set it in the env"
                )
        return value


def _key_lines(node: yaml.Node, prefix: tuple[str | int, ...] = ()) -> dict[tuple[str | int, ...], int]:
    """Map each key path to the 1-based line where it is written."""
    lines: dict[tuple[str | int, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, str(key_node.value))
            lines[path] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, path))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*prefix, i)] = item.start_mark.line + 1
            lines.update(_key_lines(item, (*prefix, i)))
    return lines


def parse_profile(text: str, source: str = "<profile>") -> Profile:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProfileError(f"{where}: invalid YAML: {problem}.", hint="Fix the YAML syntax.") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProfileError(f"{source}:1: a profile must be a mapping of keys to values.")
    lines = _key_lines(root) if root is not None else {}
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        messages = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = None
            for n in range(len(loc), 0, -1):
                if loc[:n] in lines:
                    line = lines[loc[:n]]
                    break
            key = ".".join(str(p) for p in loc) or "(top level)"
            messages.append(f"{source}:{line or 1}: {key}: {err['msg']}")
        allowed = ", ".join(Profile.model_fields)
        text = "; ".join(messages)
        # The hint follows on the same line: end the message as a sentence.
        raise ProfileError(
            text if text.endswith(".") else f"{text}.", hint=f"Profile keys: {allowed}."
        ) from exc


def load_profile(path: str | Path) -> Profile:
    """Load a profile file, or a shipped profile by name (`laptop-chat` -> profiles/laptop-chat.yaml)."""
    file = Path(path).expanduser()
    # Shipped names may contain dots ("qwen2.5-7b-instruct"), so only a YAML suffix marks a path.
    shipped_file = PROFILES_DIR / f"{path}.yaml"
    if not file.is_file() and file.suffix not in (".yaml", ".yml") and shipped_file.is_file():
        file = shipped_file
    try:
        text = file.read_text()
    except FileNotFoundError:
        shipped = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))) or "none"
        raise ProfileError(
            f"No profile file {path}.", hint=f"Pass a path, or a shipped profile: {shipped}."
        ) from None
    except OSError as exc:
        raise ProfileError(f"Cannot read profile {path}: {exc.strerror}.") from exc
    return parse_profile(text, str(file))


def shipped_profiles() -> list[Path]:
    return sorted(PROFILES_DIR.glob("*.yaml"))
