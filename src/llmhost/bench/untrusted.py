"""What a benchmarked server sends, read within bounds and checked before anything uses it.

`llmhost bench --base-url` talks to servers the user may not control. A broken or hostile one must
only be able to fail requests (a `bad_stream` or HTTP error: bench then ends with exit 6), never crash
bench, hang it or make it grow without bound. So every body is read up to a cap, every JSON document
is parsed depth-safely, and every field the client uses is checked for its type and range here.
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeGuard

import aiohttp

# An error body, a /v1/models list or a /props answer: a real one is a few KiB (a model list of
# hundreds of entries is under 100 KiB); 1 MiB is far above that and small enough to hold.
MAX_JSON_BODY_BYTES = 2**20
# One SSE line (one event): a token chunk is a few hundred bytes; one with logprobs or a whole tool
# call a few KiB. 8 MiB is thousands of times that.
MAX_EVENT_LINE_BYTES = 8 * 2**20
# One streamed response: about 400 bytes of SSE per token, so 100k output tokens are about 40 MB.
MAX_STREAM_BYTES = 128 * 2**20
# A usage count: no request has a billion tokens; above that (or below 0) it is no token count.
MAX_TOKEN_COUNT = 10**9
# Server text quoted in a message (an error, a finish reason): enough to read, not a screenful.
MAX_QUOTED_CHARS = 300
# llama-server's `timings` has about 10 fields; a hostile server must not make every record huge.
MAX_TIMINGS_FIELDS = 64


class BadEvent(ValueError):
    """What the server streamed is not what an OpenAI-compatible server sends (the request fails)."""


def quoted(value: object, limit: int = MAX_QUOTED_CHARS) -> str:
    """Server text for a message: on one line (an error is one line), cut to `limit` characters."""
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split("\n")).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most `limit` bytes of the body; the rest is left unread (aiohttp then closes the connection
    instead of reusing it)."""
    body = bytearray()
    while len(body) < limit:
        data = await response.content.read(limit - len(body))
        if not data:
            break
        body += data
    return bytes(body)


def parse_json(body: bytes) -> Any:
    """`json.loads` that fails only with `ValueError`: nesting deeper than the parser's recursion limit
    (a body of a million `[`) raises RecursionError, which is no bug of llmhost's."""
    try:
        return json.loads(body)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc


def decode_event(payload: bytes) -> dict[str, Any]:
    """One `data:` payload as a JSON object."""
    try:
        obj = parse_json(payload)
    except ValueError as exc:
        raise BadEvent(f"a stream event is not JSON: {quoted(str(exc))}") from exc
    if not isinstance(obj, dict):
        raise BadEvent(f"a stream event is {quoted(obj, 60)}, not a JSON object")
    return obj


def error_text(err: object) -> str:
    """The message of an `{"error": ...}` event or body."""
    return quoted(err.get("message", err) if isinstance(err, dict) else err)


def first_choice(obj: dict[str, Any]) -> dict[str, Any] | None:
    """`choices[0]`; None for a chunk without choices (`null` or `[]`, as usage-only chunks send)."""
    choices = obj.get("choices")
    if not choices:
        return None
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise BadEvent(f"a stream event's choices are {quoted(choices, 60)}, not a list of objects")
    return choices[0]


def object_field(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """`obj[key]` when it is an object; {} when absent or null."""
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadEvent(f"a stream event's {key} is {quoted(value, 60)}, not an object")
    return value


def text_field(obj: dict[str, Any], key: str, limit: int | None = None) -> str | None:
    """`obj[key]` when it is a string (cut to `limit`); None when absent or null."""
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise BadEvent(f"a stream event's {key} is {quoted(value, 60)}, not a string")
    return value if value is None or limit is None else quoted(value, limit)


def token_count(value: object) -> TypeGuard[int]:
    """A count of tokens: an integer (not a bool, not 12.0) from 0 to MAX_TOKEN_COUNT."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_COUNT


def usage_counts(value: object) -> dict[str, int]:
    """`usage`'s prompt and completion token counts (those it has)."""
    if not isinstance(value, dict):
        raise BadEvent(f"a stream event's usage is {quoted(value, 60)}, not an object")
    counts: dict[str, int] = {}
    for key in ("prompt_tokens", "completion_tokens"):
        n = value.get(key)
        if n is None:
            continue
        if not token_count(n):
            raise BadEvent(f"the server's usage.{key} is {quoted(n, 60)}, not a token count")
        counts[key] = n
    return counts


def _finite(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) < 2**63  # a bigger int has no float (OverflowError) and is no timing
    return isinstance(value, float) and math.isfinite(value)


def timing_fields(value: object) -> dict[str, Any] | None:
    """llama-server's `timings` (an extension, so never a reason to fail): its finite numbers only."""
    if not isinstance(value, dict):
        return None
    kept = {str(k)[:64]: v for k, v in value.items() if v is None or _finite(v)}
    return dict(list(kept.items())[:MAX_TIMINGS_FIELDS]) or None
