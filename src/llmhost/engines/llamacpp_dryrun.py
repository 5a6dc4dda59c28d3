"""The compute buffer as llama.cpp itself reserves it: a no-alloc dry run of the installed llama.cpp.

llmhost's analytic model of ggml's graph allocator (`llmhost.estimate.llamacpp.compute_buffer_bytes`)
is within 5% on most shapes but misses by up to 14% where the allocator reuses freed blocks in ways a
closed formula does not follow (docs/accuracy.md). llama.cpp's own `--fit` (common/fit.cpp) answers
the same question exactly by loading the model with `no_alloc` — the header and tensor shapes only, no
weight read or allocated — and creating a context, which reserves the compute graph and prints its
buffer sizes. `ComputeProbe` does the same through llama-cpp-python's C API, in a child process (a
failed llama.cpp assertion aborts its process), for one GGUF file and any number of context settings.

It measures the backend of the installed library, so `plan` uses it only where that is the backend
the model will run on: the detected machine (not a `--hardware` what-if) with no GPU. The GGUF may be
local, on the Hub (`org/name-GGUF:TAG`, split or not) or at a URL: for a remote one, llama.cpp reads a
replica made of the header bytes `resolve` already fetched plus a sparse hole for the tensor data.
Everywhere else, and whenever llama-cpp-python is missing or the child fails, the analytic estimate
stands. Answers are cached on disk by file identity, llama-cpp-python version and settings, so a
repeated `plan` starts no child. `LLMHOST_LLAMACPP_DRY_RUN=0` turns the probe off.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from llmhost.atomic import write_atomic_quietly
from llmhost.cache import cache_dir
from llmhost.estimate.llamacpp import LlamaCppSettings

if TYPE_CHECKING:
    from llmhost.hardware.models import Hardware
    from llmhost.models.spec import ModelSpec

MIB = 1024 * 1024
LOAD_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 30.0
_DISABLE_ENV = "LLMHOST_LLAMACPP_DRY_RUN"


def dry_run_enabled() -> bool:
    return os.environ.get(_DISABLE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def llama_cpp_version() -> str | None:
    """The installed llama-cpp-python, or None (without importing it: that costs ~0.3 s)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    try:
        return importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def context_params(settings: LlamaCppSettings) -> dict[str, Any]:
    """The llama_context_params llama-server (or llama-cpp-python's `Llama`) would create."""
    quantized_v = settings.cache_type_v not in ("f16", "bf16", "f32")
    return {
        "n_ctx": settings.n_ctx,
        "n_batch": settings.n_batch,
        "n_ubatch": settings.n_ubatch,
        "n_seq_max": settings.n_parallel,
        "type_k": settings.cache_type_k,
        "type_v": settings.cache_type_v,
        # llmhost launches with flash attention on (and llama.cpp requires it for a quantized V cache).
        "flash_attn": settings.flash_attn or quantized_v,
        "kv_unified": settings.kv_unified,
        "swa_full": settings.swa_full,
        # llama-server reserves one output per slot (tools/server: n_outputs_max = n_parallel).
        "n_outputs_max": settings.n_outputs_max or settings.n_parallel,
    }


def _died(proc: subprocess.Popen[str]) -> bool:
    """The child exited (an abort in llama.cpp), rather than hanging past the timeout."""
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        return False
    return True


class ComputeProbe:
    """`probe(settings)` -> the CPU compute buffer llama.cpp reserves, in bytes, or None if unknown.

    Create one per GGUF file with `ComputeProbe.for_file`; call `close()` (or use it as a context
    manager) to stop the child and save new answers to the cache.
    """

    def __init__(
        self, gguf_path: Path, version: str, *, disk_cache: bool = True, identity: str | None = None
    ) -> None:
        self.path = gguf_path
        self.version = version
        self._proc: subprocess.Popen[str] | None = None
        self._ready = False
        self._failed = False
        # llama.cpp's CPU "extra" buffer types (AMX on Sapphire Rapids and later, CPU_REPACK) hold weights
        # only, but on an AMX CPU llama.cpp 0.3.36 aborts reserving deepseek2's MLA graph with them
        # (GGML_ASSERT(*cur_backend_id != -1) in ggml_backend_sched_split_graph): a child that dies is
        # started once more without them, and its compute-buffer answer is the same graph's.
        self._extra_bufts = True
        self._cache_file = _cache_file(gguf_path, version, identity) if disk_cache else None
        self._answers: dict[str, int | None] = _read_cache(self._cache_file) if self._cache_file else {}
        self._new_answers = False
        self.children_started = 0

    @classmethod
    def for_file(
        cls, gguf_path: str | os.PathLike[str], *, disk_cache: bool = True, identity: str | None = None
    ) -> ComputeProbe | None:
        """A probe for `gguf_path`, or None when llama-cpp-python is missing or the probe is off.

        `identity` names the file in the disk cache (default: its path, size and mtime); a replica of a
        remote file passes the repo, commit and file name, so the answers outlive the replica.
        """
        if not dry_run_enabled():
            return None
        version = llama_cpp_version()
        path = Path(gguf_path)
        if version is None or not path.is_file():
            return None
        return cls(path, version, disk_cache=disk_cache, identity=identity)

    def __enter__(self) -> ComputeProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, settings: LlamaCppSettings) -> int | None:
        key = json.dumps(context_params(settings), sort_keys=True)
        if key in self._answers:
            answer = self._answers[key]
        else:
            answer = self._ask(key)
            if answer is not None or not self._failed:
                # A refusal (e.g. an impossible setting) is an answer too; a dead child is not.
                self._answers[key] = answer
                self._new_answers = True
        return answer

    def _ask(self, key: str) -> int | None:
        proc = self._child()
        if proc is None or proc.stdin is None or proc.stdout is None:
            return None
        try:
            proc.stdin.write(key + "\n")
            proc.stdin.flush()
            reply = _read_line(proc.stdout, REQUEST_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError):
            reply = None
        if reply is None and self._extra_bufts and _died(proc):
            self._stop()
            self._extra_bufts = False
            return self._ask(key)
        if reply is None:
            self._fail()
            return None
        mib = reply.get("compute_mib")
        return round(float(mib) * MIB) if isinstance(mib, (int, float)) else None

    def start(self) -> None:
        """Start the child now, without waiting: llama.cpp loads the model while the caller works."""
        if self._failed or self._proc is not None:
            return
        self.children_started += 1
        try:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "llmhost.engines._llamacpp_dryrun_child",
                    str(self.path),
                    *([] if self._extra_bufts else ["--no-extra-bufts"]),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                bufsize=1,
            )
        except OSError:
            self._fail()

    @property
    def has_cached_answers(self) -> bool:
        return bool(self._answers)

    def _child(self) -> subprocess.Popen[str] | None:
        self.start()
        if self._failed or self._proc is None or self._proc.stdout is None:
            return None
        if self._ready:
            return self._proc
        try:
            ready = _read_line(self._proc.stdout, LOAD_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError):
            ready = None
        if not ready or not ready.get("ready"):
            self._fail()
            return None
        self._ready = True
        return self._proc

    def _fail(self) -> None:
        self._failed = True
        self._stop()

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        ready, self._ready = self._ready, False
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin:
                proc.stdin.close()
        if not ready:
            proc.kill()  # still loading (or never asked): nothing to wait for
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()

    def close(self) -> None:
        self._stop()
        if self._new_answers and self._cache_file is not None:
            _write_cache(self._cache_file, self._answers)
            self._new_answers = False


def _read_line(stream: IO[str], timeout_s: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("llama.cpp dry run did not answer")
        ready, _, _ = select.select([stream], [], [], left)
        if ready:
            line = stream.readline()
            if not line:
                return None  # the child exited (llama.cpp aborted)
            data = json.loads(line)
            return data if isinstance(data, dict) else None


def _cache_file(path: Path, version: str, identity: str | None) -> Path:
    if identity is None:
        st = path.stat()
        identity = json.dumps([str(path.resolve()), st.st_size, st.st_mtime_ns])
    digest = hashlib.sha256(json.dumps([identity, version]).encode()).hexdigest()[:24]
    return cache_dir() / "llamacpp-dry-run" / f"{digest}.json"


def _read_cache(path: Path) -> dict[str, int | None]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return (
        {k: v for k, v in data.items() if v is None or isinstance(v, int)} if isinstance(data, dict) else {}
    )


def _write_cache(path: Path, answers: dict[str, int | None]) -> None:
    # A cache that cannot be written only costs a dry run next time.
    write_atomic_quietly(path, json.dumps(answers, sort_keys=True))


def _local_probe(ref: str, version: str) -> ComputeProbe | None:
    path = Path(ref).expanduser()
    try:
        if path.suffix.lower() != ".gguf" or not path.is_file():
            return None
    except OSError:  # ENAMETOOLONG and the like: no file to probe; `resolve` reports the path
        return None
    return ComputeProbe(path, version)


@contextlib.contextmanager
def compute_probes(
    ref: str, hardware: Hardware, *, what_if: bool
) -> Iterator[Callable[[ModelSpec], dict[str, ComputeProbe]]]:
    """Before `resolve(ref)`: yields `for_spec(spec)`, the probes `make_plan` may use for that spec.

    A probe exists only for a GGUF planned for this machine (not a `--hardware` what-if) when it has
    no GPU (the installed library's CPU graph is not a CUDA or Metal graph) and llama-cpp-python is
    installed. For a local file the child starts at once unless the disk cache already holds answers
    for it, so llama.cpp loads the model while llmhost parses the header; for a remote GGUF it starts
    on the first question, once `resolve` has fetched the header. The block's end stops the children,
    removes the replicas and saves new answers.
    """
    # Decided once: does the installed llama.cpp measure the backend this plan is for?
    measures_here = not what_if and not hardware.gpus and dry_run_enabled()
    version = llama_cpp_version() if measures_here else None
    probe = _local_probe(ref, version) if version else None
    if probe is not None and not probe.has_cached_answers:
        probe.start()
    remote: list[ComputeProbe] = []
    replicas: list[Path] = []

    def for_spec(spec: ModelSpec) -> dict[str, ComputeProbe]:
        if version is None or not spec.files:
            return {}
        first = spec.files[0].path
        if spec.kind in ("gguf_repo", "gguf_url"):
            made = _remote_probe(spec, version, replicas)
            if made is None:
                return {}
            remote.append(made)
            return {first: made}
        if probe is None or spec.kind != "local_gguf":
            return {}
        return {first: probe} if Path(first).resolve() == probe.path.resolve() else {}

    try:
        yield for_spec
    finally:
        for p in (probe, *remote):
            if p is not None:
                p.close()
        for directory in replicas:
            shutil.rmtree(directory, ignore_errors=True)


def _remote_probe(spec: ModelSpec, version: str, replicas: list[Path]) -> ComputeProbe | None:
    """A probe for a GGUF on the Hub or at a URL: llama.cpp reads a replica made of the header bytes
    `resolve` already fetched (kept in the HF cache) and a sparse hole the size of the tensor data, so
    nothing more is downloaded and nothing is written but the header."""
    from llmhost.models.remote import cached_gguf_headers

    headers = cached_gguf_headers(spec)
    if not headers:
        return None
    directory = Path(tempfile.mkdtemp(prefix="llmhost-gguf-replica-"))
    replicas.append(directory)
    try:
        for name, raw, size in headers:
            target = directory / name
            shutil.copyfile(raw, target)
            os.truncate(target, size)
    except OSError:
        return None
    identity = json.dumps([spec.repo_id, spec.revision, [f.path for f in spec.files]])
    return ComputeProbe(directory / headers[0][0], version, identity=identity)
