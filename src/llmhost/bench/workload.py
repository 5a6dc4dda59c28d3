"""Workloads: what to send. Synthetic prompts of known length, or prompts from a JSONL/ShareGPT file.

Synthetic prompts are random common English words (one BPE token each for the usual tokenizers,
with a leading space), drawn afresh for every request so a prefix cache cannot flatter the result;
`--shared-prefix N` makes the first N tokens identical on purpose. With a tokenizer the prompt is
cut to exactly the requested token count; without one the server's `usage.prompt_tokens` tells.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmhost.bench.models import Api
from llmhost.errors import UsageError
from llmhost.inputs import decode_utf8, read_regular_file

# A prompt or output length: the longest context of any open model is 10M tokens (Llama 4 Scout); a
# synthetic prompt past that would be built in memory for nothing.
MAX_TOKENS = 10_000_000
# A --dataset is read whole into memory: ShareGPT, the largest in common use, is about 0.7 GB.
MAX_DATASET_BYTES = 4 * 2**30

_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "his",
    "her",
    "are",
    "were",
    "which",
    "this",
    "have",
    "be",
    "not",
    "but",
    "had",
    "they",
    "one",
    "all",
    "their",
    "has",
    "been",
    "its",
    "new",
    "more",
    "first",
    "who",
    "also",
    "after",
    "two",
    "time",
    "other",
    "when",
    "into",
    "year",
    "only",
    "over",
    "can",
    "most",
    "some",
    "people",
    "city",
    "there",
    "where",
    "would",
    "made",
    "up",
    "out",
    "may",
    "about",
    "world",
    "state",
    "three",
    "later",
    "between",
    "so",
    "many",
    "then",
    "during",
    "under",
    "than",
    "before",
    "part",
    "such",
    "both",
    "team",
    "these",
    "through",
    "used",
    "game",
    "known",
    "while",
    "where",
    "well",
    "being",
    "called",
    "since",
    "film",
    "book",
    "early",
    "life",
    "house",
    "music",
    "river",
    "school",
    "water",
    "work",
    "place",
    "name",
    "day",
    "war",
    "end",
    "small",
    "area",
    "land",
    "high",
    "long",
    "old",
    "great",
    "little",
    "light",
    "night",
    "power",
    "point",
    "road",
    "side",
    "sound",
    "story",
    "town",
    "way",
    "word",
    "black",
    "blue",
    "green",
    "red",
    "white",
    "cold",
    "hot",
    "open",
    "close",
    "north",
    "south",
    "east",
    "west",
    "city",
    "field",
    "forest",
    "garden",
    "hill",
    "island",
    "lake",
    "mountain",
    "ocean",
    "park",
    "sea",
    "sky",
    "stone",
    "tree",
    "wind",
    "bird",
    "dog",
    "fish",
    "horse",
    "king",
    "queen",
    "bank",
    "board",
    "car",
    "door",
    "floor",
    "glass",
    "paper",
    "table",
    "window",
]

Tokenizer = Callable[[str], int]


def _token_hint(value: object) -> int | None:
    """A row's output length (`output_tokens`/`max_tokens`) when it is a count; other values are ignored."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value <= MAX_TOKENS:
        return None  # NaN fails the comparison too
    return int(value)


def parse_range(text: str, *, what: str) -> tuple[int, int]:
    """`"128"` -> (128, 128); `"64:256"` -> (64, 256)."""
    try:
        if ":" in text:
            lo_s, hi_s = text.split(":", 1)
            lo, hi = int(lo_s), int(hi_s)
        else:
            lo = hi = int(text)
    except ValueError as exc:
        raise UsageError(
            f"{what} {text!r} is not a token count.",
            hint=f"Use a number like 128 or a range like 64:256 for {what}.",
        ) from exc
    if lo < 1 or hi < lo:
        raise UsageError(f"{what} {text!r} is not a valid range.", hint="Use LOW:HIGH with 1 <= LOW <= HIGH.")
    if hi > MAX_TOKENS:
        raise UsageError(
            f"{what} {text!r} is more than {MAX_TOKENS:,} tokens, longer than any model's context.",
            hint=f"Pick a count of at most {MAX_TOKENS:,} for {what}.",
        )
    return lo, hi


@dataclass
class Prompt:
    """One request's content before it becomes a JSON body."""

    text: str | None
    messages: list[dict[str, Any]] | None
    prompt_tokens: int
    output_tokens: int | None


def gguf_tokenizer_available() -> bool:
    """A GGUF's own vocabulary is read with llama-cpp-python (the `llamacpp` extra)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def _gguf_tokenizer(path: Path) -> tuple[Callable[[str], list[int]], Callable[[list[int]], str]]:
    """Encode/decode with a GGUF's own vocabulary: llama-cpp-python loads the vocabulary only (no
    weights, no context: its `Llama(vocab_only=True)` would make a context and print about it)."""
    import llama_cpp
    from llama_cpp._internals import LlamaModel

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = LlamaModel(path_model=str(path), params=params, verbose=False)

    def encode(text: str) -> list[int]:
        return list(model.tokenize(text.encode("utf-8"), False, False))

    def decode(ids: list[int]) -> str:
        return bytes(model.detokenize(ids)).decode("utf-8", "replace")

    return encode, decode


class TokenizerAdapter:
    """A loaded tokenizer: count tokens and cut text to a token count. Loaded lazily (heavy imports)."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        path = Path(ref)
        self._encode: Callable[[str], list[int]]
        self._decode: Callable[[list[int]], str]
        try:
            if path.is_file() and path.suffix.lower() == ".gguf":
                self._encode, self._decode = _gguf_tokenizer(path)
            elif path.is_file() or (path / "tokenizer.json").is_file():
                from tokenizers import Tokenizer

                tok = Tokenizer.from_file(str(path if path.is_file() else path / "tokenizer.json"))
                self._encode = lambda s: tok.encode(s, add_special_tokens=False).ids
                self._decode = tok.decode
            else:
                from transformers import AutoTokenizer

                hf = AutoTokenizer.from_pretrained(ref, local_files_only=True)
                self._encode = lambda s: list(hf.encode(s, add_special_tokens=False))
                self._decode = lambda ids: str(hf.decode(ids))
        except Exception as exc:
            raise UsageError(
                f"cannot load the tokenizer {ref!r}: {exc}",
                hint="Pass --tokenizer a tokenizer.json, a GGUF, a model folder, or a repo in the HF cache.",
            ) from exc

    def count(self, text: str) -> int:
        return len(self._encode(text))

    def cut(self, text: str, n: int) -> str:
        return self._decode(self._encode(text)[:n])


class SyntheticWorkload:
    """Random-word prompts of fixed or uniformly distributed lengths."""

    def __init__(
        self,
        input_tokens: tuple[int, int],
        output_tokens: tuple[int, int],
        *,
        seed: int = 0,
        shared_prefix_tokens: int = 0,
        tokenizer: TokenizerAdapter | None = None,
        api: Api = "chat",
    ) -> None:
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        # Seeded per run from the wall clock by the caller unless the user fixes it: a repeated
        # seed would hit a warm prefix cache on the second run.
        self.rng = random.Random(seed)
        self.tokenizer = tokenizer
        self.api = api
        self.prefix = " ".join(random.Random(1234).choices(_WORDS, k=shared_prefix_tokens))
        self.shared_prefix_tokens = shared_prefix_tokens

    def make(self) -> Prompt:
        n_in = self.rng.randint(*self.input_tokens)
        n_out = self.rng.randint(*self.output_tokens)
        n_random = max(1, n_in - self.shared_prefix_tokens)
        words = " ".join(self.rng.choices(_WORDS, k=n_random + (8 if self.tokenizer else 0)))
        text = f"{self.prefix} {words}" if self.prefix else words
        if self.tokenizer is not None:
            text = self.tokenizer.cut(text, n_in)
        if self.api == "chat":
            return Prompt(None, [{"role": "user", "content": text}], n_in, n_out)
        return Prompt(text, None, n_in, n_out)


class FileWorkload:
    """Prompts from JSONL (`{"prompt"}`, `{"messages"}`, ShareGPT `{"conversations"}`) or a JSON list."""

    def __init__(
        self,
        path: Path,
        *,
        output_tokens: tuple[int, int] | None,
        seed: int = 0,
        tokenizer: TokenizerAdapter | None = None,
        api: Api = "chat",
    ) -> None:
        self.path = path
        self.rng = random.Random(seed)
        self.output_tokens = output_tokens
        self.tokenizer = tokenizer
        self.api = api
        self.items = self._load(path)
        self.next_index = 0

    def _count(self, text: str) -> int:
        return self.tokenizer.count(text) if self.tokenizer else max(1, round(len(text.split()) * 1.3))

    def _load(self, path: Path) -> list[Prompt]:
        data = read_regular_file(path, what="--dataset", limit=MAX_DATASET_BYTES)
        raw = decode_utf8(data, source=str(path))
        try:
            if raw.lstrip().startswith("["):
                rows = json.loads(raw)
            else:
                rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"{path} is not JSONL: line {exc.lineno}: {exc.msg}.",
                hint='Write one JSON object per line: {"prompt": "..."} or {"messages": [...]}.',
            ) from exc
        except RecursionError as exc:  # json's parser recurses once per nesting level
            raise UsageError(
                f"{path}: JSON nested too deeply to be a prompt.",
                hint='Fix the file: one JSON object per line, {"prompt": "..."} or {"messages": [...]}.',
            ) from exc
        if not isinstance(rows, list):
            rows = [rows]
        items = [p for p in (self._row(r) for r in rows if isinstance(r, dict)) if p is not None]
        self.rows, self.skipped = len(rows), len(rows) - len(items)
        if not items:
            raise UsageError(
                f"{path} holds no usable prompts.",
                hint='Each line needs "prompt", "messages" or ShareGPT "conversations" with a human turn.',
            )
        return items

    def _row(self, row: dict[str, Any]) -> Prompt | None:
        out_hint = row.get("output_tokens") or row.get("max_tokens")
        messages: list[dict[str, Any]] | None = None
        text: str | None = None
        if isinstance(row.get("prompt"), str):
            text = row["prompt"]
        elif isinstance(row.get("messages"), list):
            messages = [m for m in row["messages"] if isinstance(m, dict)]
            if messages and messages[-1].get("role") == "assistant":
                reply = messages.pop()
                out_hint = out_hint or self._count(str(reply.get("content", "")))
        elif isinstance(row.get("conversations"), list):
            turns = [t for t in row["conversations"] if isinstance(t, dict)]
            human: dict[str, Any] | None = next(
                (t for t in turns if t.get("from") in ("human", "user")), None
            )
            if human is None:
                return None
            text = str(human.get("value", ""))
            answer: dict[str, Any] | None = next(
                (t for t in turns if t.get("from") in ("gpt", "assistant")), None
            )
            if answer is not None and not out_hint:
                out_hint = self._count(str(answer.get("value", "")))
        if text is None and not messages:
            return None
        if self.api == "chat" and messages is None:
            messages = [{"role": "user", "content": text}]
        if self.api == "completions" and text is None:
            text = "\n".join(str(m.get("content", "")) for m in messages or [])
        prompt_text = (
            text if text is not None else " ".join(str(m.get("content", "")) for m in messages or [])
        )
        return Prompt(
            text if self.api == "completions" else None,
            messages if self.api == "chat" else None,
            self._count(prompt_text),
            _token_hint(out_hint),
        )

    def make(self) -> Prompt:
        item = self.items[self.next_index % len(self.items)]
        self.next_index += 1
        if self.output_tokens is not None:
            item = Prompt(item.text, item.messages, item.prompt_tokens, self.rng.randint(*self.output_tokens))
        elif item.output_tokens is None:
            item = Prompt(item.text, item.messages, item.prompt_tokens, 128)
        return item


def request_body(prompt: Prompt, *, model: str, api: Api, force_length: bool) -> dict[str, Any]:
    """The JSON body of one streamed request.

    Both `max_tokens` and `max_completion_tokens` go out: llama-server ignored the second until
    ggml-org/llama.cpp#19831 and OpenAI deprecates the first. `ignore_eos` + `min_tokens` force the
    length where the engine supports them (vLLM, llama.cpp); the result checks whether they were honoured.
    """
    body: dict[str, Any] = {"model": model, "stream": True, "stream_options": {"include_usage": True}}
    if api == "chat":
        body["messages"] = prompt.messages
    else:
        body["prompt"] = prompt.text
    if prompt.output_tokens is not None:
        body["max_tokens"] = prompt.output_tokens
        if api == "chat":
            body["max_completion_tokens"] = prompt.output_tokens
        if force_length:
            body["ignore_eos"] = True
            body["min_tokens"] = prompt.output_tokens
    return body
