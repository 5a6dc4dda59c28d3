"""Serving profiles: YAML files describing a deployment, validated by a pydantic schema.

A profile sets what `llmhost serve` would otherwise take from flags (model, engine, quant, context,
concurrency, goal, extra engine args, env); flags given on the command line win. Files are read with
`yaml.safe_load` semantics (no arbitrary objects), and every error names the bad key and its line:

    profiles/x.yaml:4: contxt: Extra inputs are not permitted

A profile is a file a user may have been handed: reading one is bounded (regular files only, at most
`MAX_PROFILE_BYTES`, UTF-8) and so is its YAML (aliases expanded to at most `MAX_PROFILE_NODES` nodes,
nesting at most `MAX_PROFILE_DEPTH`, no key given twice), so no profile can hang or exhaust `serve`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from llmhost.contract import Contract, Count, MemoryShare, Port
from llmhost.engine_ids import Llamacpp, LlamaCppRuntime, Mlx, Vllm
from llmhost.errors import ProfileError, UsageError
from llmhost.inputs import check_text, decode_utf8, read_regular_file


def _profiles_dir() -> Path:
    """The shipped profiles: `profiles/` of a source checkout (editable install), else the copy a wheel
    installs under `<prefix>/share/llmhost/profiles` (pyproject's data-files)."""
    checkout = Path(__file__).resolve().parents[2] / "profiles"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "llmhost" / "profiles"


PROFILES_DIR = _profiles_dir()


# The shipped profiles are under 1 KiB; 1 MiB is far above any real one and stops a mistaken
# `--profile model.gguf` from being read whole.
MAX_PROFILE_BYTES = 1 << 20
# YAML nodes once aliases are expanded: a profile has a few dozen; a "billion laughs" document of nine
# nested aliases has 10^9 (and hung `serve --profile`).
MAX_PROFILE_NODES = 10_000
# A profile is two levels deep (env: {KEY: value}); PyYAML composes one recursion per level.
MAX_PROFILE_DEPTH = 32


# Engine flags for the bind address, port and API key (llama-server, llama-cpp-python, vLLM spellings).
_RESERVED_ARGS = frozenset({"--host", "--port", "--api-key", "--api_key", "--api-key-file"})


class Profile(Contract):
    description: str | None = None
    model: str | None = Field(default=None, description="Model reference, as `llmhost serve MODEL` takes it.")
    engine: Literal[Llamacpp, LlamaCppRuntime, Vllm, Mlx] | None = None
    quant: str | None = None
    kv_cache_dtype: str | None = None
    context: Count | None = None
    concurrency: Count | None = None
    goal: Literal["quality", "throughput", "latency"] | None = None
    host: str | None = None
    port: Port | None = None
    gpu_memory_utilization: MemoryShare | None = None
    tensor_parallel_size: Count | None = None
    data_parallel_size: Count | None = Field(
        default=None, description="vLLM --data-parallel-size: engine replicas on this node (serve --dp)."
    )
    enable_expert_parallel: bool | None = Field(
        default=None, description="vLLM --enable-expert-parallel: MoE experts split whole over TP x DP GPUs."
    )
    trust_remote_code: bool = False
    chat_template: str | None = Field(
        default=None,
        description="Chat template for a model without one (a base model's GGUF): a built-in name of the "
        "engine (llama.cpp: gemma, chatml, llama3, ...) or a Jinja file (a path ending in .jinja).",
    )
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

    @field_validator("env")
    @classmethod
    def _environment_can_hold_it(cls, value: dict[str, str]) -> dict[str, str]:
        # The engine would not start: os.environ refuses these only when the process is launched.
        for key, item in value.items():
            if not key or "=" in key or "\0" in key or "\0" in item:
                raise ValueError(f"{key!r}: an environment variable has a name without '=' or NUL")
        return value

    @field_validator("extra_args")
    @classmethod
    def _argv_can_hold_it(cls, value: list[str]) -> list[str]:
        for arg in value:
            if "\0" in arg:
                raise ValueError(f"{arg!r}: an argument cannot contain NUL")
        return value

    @field_validator("model", "quant", "kv_cache_dtype", "host", "chat_template")
    @classmethod
    def _meaningful_text(cls, value: str | None, info: Any) -> str | None:
        if value is not None:
            try:
                check_text(str(info.field_name), value)
            except UsageError as exc:  # pydantic reports ValueError with the key's line
                raise ValueError(exc.message.rstrip(".")) from None
        return value


def _is_template_file(template: str) -> bool:
    return template.endswith((".jinja", ".j2")) or "/" in template


def chat_template_args(template: str, engine: str, runtime: str) -> list[str]:
    """The engine flags that make `runtime` apply `template` (a profile's `chat_template:`).

    Each engine spells it differently and takes different things (llama-server both a built-in name and
    a file, llama-cpp-python's server only its own format names, vLLM only a template file): this checks
    that a file named is there, and asks the engine (`Engine.chat_template_args`)."""
    from llmhost.engines.registry import get_engine

    is_file = _is_template_file(template)
    if is_file and not Path(template).expanduser().is_file():
        raise ProfileError(
            f"chat_template: no template file {template}.",
            hint="Give an existing .jinja file, or a built-in name such as gemma.",
        )
    given = str(Path(template).expanduser()) if is_file else template
    return get_engine(engine).chat_template_args(given, is_file=is_file, runtime=runtime)


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML that no profile is: too many nodes, too deep, a key given twice."""


class _BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that counts nodes as aliases expand them, bounds nesting and refuses duplicate
    keys, while composing: the document is never expanded in memory, so a billion laughs costs nothing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._expanded: dict[int, int] = {}  # id(node) -> nodes under it once aliases are expanded

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        is_alias = self.check_event(yaml.AliasEvent)
        self._depth += 1
        try:
            if self._depth > MAX_PROFILE_DEPTH:
                raise _Refused(problem=f"nested deeper than {MAX_PROFILE_DEPTH} levels", problem_mark=mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is None:
            return None
        if is_alias:
            if id(node) not in self._expanded:  # `&a [*a]`: the anchor is still being composed
                raise _Refused(problem="an alias refers to itself", problem_mark=mark)
            return node
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value in seen:
                    raise _Refused(problem=f"{key_node.value}: given twice", problem_mark=key_node.start_mark)
                seen.add(str(key_node.value))
                children += [key_node, value_node]
        size = 1 + sum(self._expanded[id(child)] for child in children)
        if size > MAX_PROFILE_NODES:
            raise _Refused(
                problem=f"more than {MAX_PROFILE_NODES} values once aliases are expanded",
                problem_mark=mark,
            )
        self._expanded[id(node)] = size
        return node


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


def _compose(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The document's node tree (for line numbers) and its data, within the bounds above."""
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # the reader refuses unprintable characters here already
        root = loader.get_single_node()
        return root, (loader.construct_document(root) if root is not None else None)
    except _Refused as exc:
        where = f"{source}:{exc.problem_mark.line + 1}" if exc.problem_mark is not None else source
        raise ProfileError(
            f"{where}: {exc.problem}; a profile is a short mapping of keys to values.",
            hint="Fix the profile (see profiles/*.yaml for examples).",
        ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        # A ReaderError (NUL or another unprintable character) has no `problem`; its text spans lines.
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise ProfileError(f"{where}: invalid YAML: {problem}.", hint="Fix the YAML syntax.") from exc
    finally:
        if loader is not None:
            loader.dispose()


def located_errors(exc: ValidationError, root: yaml.Node | None, source: str) -> str:
    """`source:LINE: key.path: message` for every error of `exc`, joined by "; " (the line of the
    deepest key of the path that is written in the document)."""
    lines = _key_lines(root) if root is not None else {}
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
    text = "; ".join(messages)
    # A hint follows on the same line: end the message as a sentence.
    return text if text.endswith(".") else f"{text}."


def compose_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """A bounded YAML document (the profile rules: safe types, node, depth and duplicate-key limits):
    its node tree, for `located_errors`, and its data. Errors are `ProfileError`s naming the line."""
    return _compose(text, source)


def parse_profile(text: str, source: str = "<profile>") -> Profile:
    root, data = _compose(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProfileError(
            f"{source}:1: a profile must be a mapping of keys to values.",
            hint="Write one `key: value` per line (see profiles/*.yaml).",
        )
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        allowed = ", ".join(Profile.model_fields)
        raise ProfileError(
            located_errors(exc, root, source), hint=f"Profile keys: {allowed}; fix the line named."
        ) from exc


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long to exist (ENAMETOOLONG) is not a file either
        return False


def load_profile(path: str | Path) -> Profile:
    """Load a profile file, or a shipped profile by name (`laptop-chat` -> profiles/laptop-chat.yaml)."""
    file = Path(path).expanduser()
    # Shipped names may contain dots ("qwen2.5-7b-instruct"), so only a YAML suffix marks a path.
    shipped_file = PROFILES_DIR / f"{path}.yaml"
    if not _is_file(file) and file.suffix not in (".yaml", ".yml") and _is_file(shipped_file):
        file = shipped_file
    shipped = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))) or "none"
    data = read_regular_file(
        file,
        what="profile",
        limit=MAX_PROFILE_BYTES,
        error=ProfileError,
        missing=(f"No profile file {path}.", f"Pass a path, or a shipped profile: {shipped}."),
    )
    return parse_profile(decode_utf8(data, source=str(file), error=ProfileError), str(file))


def shipped_profiles() -> list[Path]:
    return sorted(PROFILES_DIR.glob("*.yaml"))
