"""A model's files are untrusted input: open regular files only, read a bounded number of bytes, parse
JSON with bounded nesting and no non-standard numbers.

A FIFO or a device opened for reading blocks or never ends, a 1 GiB config.json would be read whole,
and deeply nested JSON exhausts Python's recursion limit; every such file is refused here with a
`ModelError` naming it, before any reader looks at its contents.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from pathlib import Path
from typing import IO, Any

from llmhost import inputs
from llmhost.errors import ModelError
from llmhost.inputs import describe_mode

# config.json files are a few KiB; the largest model.safetensors.index.json (DeepSeek-V3's, ~90k tensors
# in 163 shards) is about 9 MiB. 64 MiB is far above both and still cheap to parse.
MAX_JSON_BYTES = 64 * 2**20
# Real configs nest 4 levels deep (quantization_config.config_groups.group_0.weights); safetensors
# headers 3. Anything deeper than 64 is not a model description (and would reach Python's recursion
# limit in the parser or in anything that walks it).
MAX_JSON_DEPTH = 64


def not_regular(path: Path, mode: int) -> ModelError:
    return ModelError(
        f"{path} is {describe_mode(mode)}, not a regular file.",
        hint="Point at the model's real file (or its directory); re-download it if it was replaced.",
    )


def cannot_read(path: Path, exc: OSError) -> ModelError:
    return ModelError(
        f"Cannot read {path}: {exc.strerror or type(exc).__name__}.",
        hint="Check that the file exists and that you may read it (ls -l).",
    )


def present(path: Path) -> bool:
    """Path.exists(), except that a name the OS cannot look up (too long, a permission denied on the
    way) is an error naming it rather than an OSError from deep inside a reader."""
    try:
        path.stat()
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return False
        raise cannot_read(path, exc) from exc
    except ValueError as exc:  # an embedded NUL byte
        raise ModelError(f"{str(path)!r} is not a valid path.", hint="Check the path.") from exc
    return True


def require_regular(path: Path) -> os.stat_result:
    """stat() `path` and refuse anything but a regular file (following symlinks)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise cannot_read(path, exc) from exc
    except ValueError as exc:  # an embedded NUL byte
        raise ModelError(f"{path!r} is not a valid path.", hint="Check the path.") from exc
    if not stat.S_ISREG(st.st_mode):
        raise not_regular(path, st.st_mode)
    return st


def open_regular(path: Path) -> IO[bytes]:
    """Open `path` for reading, refusing special files without blocking on them (`inputs.open_regular`)."""
    try:
        fd = inputs.open_regular(path)
    except inputs.NotRegularFile as exc:
        raise not_regular(path, exc.mode) from None
    except OSError as exc:
        raise cannot_read(path, exc) from exc
    except ValueError as exc:
        raise ModelError(f"{path!r} is not a valid path.", hint="Check the path.") from exc
    return os.fdopen(fd, "rb")


def read_bounded(path: Path, limit: int = MAX_JSON_BYTES) -> bytes:
    """The whole of a regular file of at most `limit` bytes."""
    with open_regular(path) as fh:
        try:
            size = os.fstat(fh.fileno()).st_size
            if size > limit:
                raise too_large(path, size, limit)
            data = fh.read(limit + 1)
        except OSError as exc:
            raise cannot_read(path, exc) from exc
    if len(data) > limit:  # grew while we read it
        raise too_large(path, len(data), limit)
    return data


def too_large(label: object, size: int, limit: int) -> ModelError:
    return ModelError(
        f"{label} is {size:,} bytes; a model's JSON file is at most {limit:,} bytes.",
        hint="Check that it is the right file; re-download it if it is corrupt.",
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} overflows a double")
    return value


def parse_json(raw: bytes, *, label: object) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity (RFC 8259), finite numbers, nesting at most MAX_JSON_DEPTH,
    strings that are valid Unicode (a lone surrogate escape cannot be printed or re-serialised)."""
    hint = "Check the file; re-download it if it is corrupt."
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite_float)
    except UnicodeDecodeError as exc:
        raise ModelError(f"{label} is not valid JSON: not UTF-8 at byte {exc.start}.", hint=hint) from exc
    except RecursionError as exc:
        raise ModelError(f"{label} nests deeper than {MAX_JSON_DEPTH} levels.", hint=hint) from exc
    except ValueError as exc:  # JSONDecodeError, the hooks above, an integer over 4300 digits
        raise ModelError(f"{label} is not valid JSON: {exc}.", hint=hint) from exc
    _check_tree(data, label=label, hint=hint)
    return data


def _check_tree(data: Any, *, label: object, hint: str) -> None:
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: list[Any] = [*node.keys(), *node.values()]
        elif isinstance(node, list):
            children = node
        elif isinstance(node, str):
            _check_text(node, label=label, hint=hint)
            continue
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise ModelError(f"{label} nests deeper than {MAX_JSON_DEPTH} levels.", hint=hint)
        stack.extend((child, depth + 1) for child in children)


def _check_text(text: str, *, label: object, hint: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ModelError(
            f"{label} has a string with an unpaired surrogate escape (\\u{ord(text[exc.start]):04x}).",
            hint=hint,
        ) from exc


_JSON_TYPES = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def load_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object (config.json, an index), read and parsed with the bounds above."""
    data = parse_json(read_bounded(path), label=path)
    if not isinstance(data, dict):
        raise ModelError(
            f"{path} holds a JSON {_JSON_TYPES.get(type(data), 'value')}, not an object.",
            hint="Check that it is the model's config.json or index file.",
        )
    return data
