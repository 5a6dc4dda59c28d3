"""Child process of `llmhost.engines.llamacpp_dryrun`: llama.cpp's no-alloc dry run, one context per request.

Run as `python -m llmhost.engines._llamacpp_dryrun_child MODEL.gguf`. It loads the model with
`no_alloc` (metadata and tensor shapes only: no weight is read or allocated) from a replica of the
header without the tokenizer (`vocabless_replica`: the vocabulary's size kept, its tokens not), then
answers one JSON line per JSON line of context parameters on stdin: `{"compute_mib": X}` (the sum of
the `compute buffer size` lines llama.cpp prints while it reserves the graph) or `{"error": "..."}`.
The first line it writes says whether the model loaded. A separate process because llama.cpp aborts
the whole process on a failed assertion; the parent treats a dead child as "no measurement" and keeps
its own estimate.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import re
import struct
import sys
import tempfile
from typing import IO, Any

_COMPUTE = re.compile(r"compute buffer size\s*=\s*([0-9.]+)\s*MiB")
GGML_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "bf16": 30}


def context_params(llama_cpp: Any, p: dict[str, Any]) -> Any:
    """llama_context_params from plain values (`flash_attn`: -1 auto, 0 off, 1 on; types by name).

    Also used by benchmarks/accuracy_llamacpp.py, so the dry run and the measurement it is checked
    against create their contexts the same way.
    """
    cp = llama_cpp.llama_context_default_params()
    cp.n_ctx = p["n_ctx"]
    cp.n_batch = p["n_batch"]
    cp.n_ubatch = p["n_ubatch"]
    cp.n_seq_max = p["n_seq_max"]
    cp.type_k = GGML_TYPES[p["type_k"]]
    cp.type_v = GGML_TYPES[p["type_v"]]
    cp.flash_attn_type = p["flash_attn"]
    cp.kv_unified = p["kv_unified"]
    cp.swa_full = p["swa_full"]
    cp.n_outputs_max = p["n_outputs_max"]
    cp.n_threads = cp.n_threads_batch = 1  # the graph is reserved, never run
    return cp


# GGUF value type -> the size of one item, for the fixed-size types (8 = string, 9 = array: walked).
_GGUF_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY, _GGUF_UINT32 = 8, 9, 4
_MAX_STRINGS = 1 << 22  # llmhost.models.gguf_header.MAX_HEADER_STRINGS (not imported: the child stays light)


def _gguf_str(value: bytes) -> bytes:
    return struct.pack("<Q", len(value)) + value


def _skip_value(data: Any, offs: int, vtype: int) -> int:
    """The offset after a metadata value at `offs` (struct.error past the end of `data`)."""
    if vtype in _GGUF_SCALAR_SIZES:
        return offs + _GGUF_SCALAR_SIZES[vtype]
    if vtype == _GGUF_STRING:
        return offs + 8 + int(struct.unpack_from("<Q", data, offs)[0])
    if vtype != _GGUF_ARRAY:
        raise ValueError(f"GGUF value type {vtype}")
    itype, count = struct.unpack_from("<IQ", data, offs)
    offs += 12
    if itype in _GGUF_SCALAR_SIZES:
        return offs + _GGUF_SCALAR_SIZES[itype] * int(count)
    if itype != _GGUF_STRING:
        raise ValueError(f"array of GGUF type {itype}")
    if count > _MAX_STRINGS:  # a hostile count: the parent's reader refuses it too
        raise ValueError(f"{count} strings")
    unpack = struct.Struct("<Q").unpack_from  # a 262k vocabulary: one length prefix after another
    for _ in range(count):
        offs += 8 + unpack(data, offs)[0]
    return offs


def vocabless_replica(path: str, directory: str) -> str | None:
    """A copy of the GGUF's header without its tokenizer (`tokenizer.ggml.model = "none"` and the
    vocabulary size as `{arch}.vocab_size`), the tensor table unchanged, the data a sparse hole.

    The compute buffer depends on the vocabulary's size (the logits), never its tokens; loading a 262k
    vocabulary (reading the strings, building the tokenizer) was 1.8 of the 3 s a dry run took for
    Gemma 3 270M on a loaded 2-core machine. llama.cpp gives a vocabulary of type none that many dummy
    tokens (llama-vocab.cpp). None (use the file itself) when the header is not a little-endian GGUF v3
    with a token list, or is the first shard of a split model: nothing is guessed.
    """
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", data, 0)
        if magic != b"GGUF" or version != 3:
            return None
        offs = 24
        kept: list[bytes] = []
        arch = b""
        n_vocab = None
        alignment = 32
        for _ in range(n_kv):
            start = offs
            (klen,) = struct.unpack_from("<Q", data, offs)
            key = data[offs + 8 : offs + 8 + klen]
            (vtype,) = struct.unpack_from("<I", data, offs + 8 + klen)
            value = offs + 12 + klen
            offs = _skip_value(data, value, vtype)
            if key == b"tokenizer.ggml.tokens" and vtype == _GGUF_ARRAY:
                n_vocab = struct.unpack_from("<IQ", data, value)[1]
            elif key == b"general.architecture" and vtype == _GGUF_STRING:
                arch = data[value + 8 : offs]
            elif key == b"general.alignment" and vtype == _GGUF_UINT32:
                (alignment,) = struct.unpack_from("<I", data, value)
            elif (
                key == b"split.count"
                and vtype in _GGUF_SCALAR_SIZES
                and int.from_bytes(data[value:offs], "little") > 1
            ):
                return None  # llama.cpp finds shards 2..n next to the first file by name: load the file
            if not key.startswith(b"tokenizer.") and not (arch and key == arch + b".vocab_size"):
                kept.append(data[start:offs])  # tokenizer keys and the vocabulary size: replaced below
        if n_vocab is None or not arch or n_vocab >= 2**32 or alignment <= 0:
            return None
        table_start = offs
        for _ in range(n_tensors):
            (nlen,) = struct.unpack_from("<Q", data, offs)
            (n_dims,) = struct.unpack_from("<I", data, offs + 8 + nlen)
            offs += 8 + nlen + 4 + 8 * n_dims + 4 + 8
        table = data[table_start:offs]
        if len(table) != offs - table_start:
            return None  # the table runs past the end of the file
        data_size = len(data) - (-(-offs // alignment) * alignment)
    kept.append(_gguf_str(b"tokenizer.ggml.model") + struct.pack("<I", _GGUF_STRING) + _gguf_str(b"none"))
    kept.append(_gguf_str(arch + b".vocab_size") + struct.pack("<II", _GGUF_UINT32, n_vocab))
    header = struct.pack("<4sIQQ", b"GGUF", 3, n_tensors, len(kept)) + b"".join(kept) + table
    header += b"\0" * (-len(header) % alignment)
    fd, replica = tempfile.mkstemp(dir=directory, suffix=".gguf")
    with os.fdopen(fd, "wb") as out:
        out.write(header)
        out.truncate(len(header) + max(data_size, 0))  # sparse: llama.cpp reads no tensor data here
    return replica


def _bindings() -> Any:
    """llama-cpp-python's ctypes bindings (`llama_cpp.llama_cpp`) without the package's `__init__`,
    which also imports the high-level `Llama` class, numpy and jinja2: 170 ms of a cold `plan`, for
    nothing the dry run uses. The bindings module imports only the stdlib and `_ctypes_extensions`."""
    import importlib
    import importlib.util
    import types

    found = importlib.util.find_spec("llama_cpp")
    if found is None or not found.submodule_search_locations or "llama_cpp" in sys.modules:
        import llama_cpp

        return llama_cpp
    package = types.ModuleType("llama_cpp")
    package.__path__ = list(found.submodule_search_locations)
    package.__spec__ = found
    sys.modules["llama_cpp"] = package
    try:
        return importlib.import_module("llama_cpp.llama_cpp")
    except Exception:  # a layout we do not know: take the package the ordinary way
        for name in [m for m in sys.modules if m == "llama_cpp" or m.startswith("llama_cpp.")]:
            del sys.modules[name]
        import llama_cpp

        return llama_cpp


def _protocol_stream() -> Any:
    """Our own copy of stdout for the JSON lines; fd 1 itself goes to stderr so stray prints cannot
    corrupt the protocol."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return out


def main(argv: list[str]) -> int:
    out = _protocol_stream()
    extra_bufts = "--no-extra-bufts" not in argv
    argv = [a for a in argv if a != "--no-extra-bufts"]
    if len(argv) != 1:
        out.write(json.dumps({"error": "usage: _llamacpp_dryrun_child MODEL.gguf [--no-extra-bufts]"}) + "\n")
        return 2
    llama_cpp = _bindings()

    lines: list[str] = []

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def on_log(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    mp = llama_cpp.llama_model_default_params()
    mp.n_gpu_layers = 0
    mp.no_alloc = True
    if not extra_bufts and hasattr(mp, "use_extra_bufts"):
        mp.use_extra_bufts = False
    if hasattr(mp, "load_mode"):
        mp.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE  # no_alloc maps nothing (llama.cpp common/fit.cpp)
    else:
        mp.use_mmap = False
    with tempfile.TemporaryDirectory(prefix="llmhost-dry-run-") as tmp:
        try:
            replica = vocabless_replica(argv[0], tmp)
        except (OSError, ValueError, struct.error):
            replica = None  # a header this walk does not follow: llama.cpp reads the file itself
        model = llama_cpp.llama_model_load_from_file((replica or argv[0]).encode(), mp)
    return _serve(llama_cpp, model, lines, out)


def _serve(llama_cpp: Any, model: Any, lines: list[str], out: IO[str]) -> int:
    if not model:
        tail = [ln.strip() for ln in "".join(lines).splitlines() if ln.strip()][-3:]
        out.write(json.dumps({"error": "; ".join(tail) or "llama.cpp could not load the model"}) + "\n")
        return 1
    out.write(json.dumps({"ready": True}) + "\n")
    for raw in sys.stdin:
        request = json.loads(raw)
        cp = context_params(llama_cpp, {**request, "flash_attn": 1 if request["flash_attn"] else 0})
        lines.clear()
        ctx = llama_cpp.llama_init_from_model(model, cp)
        text = "".join(lines)
        if not ctx:
            tail = [ln.strip() for ln in text.splitlines() if ln.strip()][-2:]
            out.write(json.dumps({"error": "; ".join(tail) or "context creation failed"}) + "\n")
            continue
        sizes = [float(m) for m in _COMPUTE.findall(text)]
        llama_cpp.llama_free(ctx)
        if not sizes:
            out.write(json.dumps({"error": "llama.cpp printed no compute buffer size"}) + "\n")
            continue
        out.write(json.dumps({"compute_mib": sum(sizes)}) + "\n")
    llama_cpp.llama_model_free(model)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
