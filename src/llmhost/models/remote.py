"""Remote inputs: Hub repos (safetensors), GGUF repos with a quant tag, GGUF URLs.

Reads only config.json (+ quantize_config.json for old GPTQ repos), model.safetensors.index.json,
the safetensors headers (range reads) and GGUF headers (range reads, grown until they parse).
Parsed headers and file lists are cached next to the HF cache, so a second run and offline runs
read nothing over the network (docs/models.md, "Caching").
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmhost.atomic import write_atomic_quietly
from llmhost.errors import ModelError
from llmhost.models import gguf_tags, hub
from llmhost.models.build import spec_from_gguf, spec_from_hf
from llmhost.models.files import MAX_JSON_BYTES, too_large
from llmhost.models.refs import DEFAULT_GGUF_TAG, ParsedRef
from llmhost.models.safetensors_meta import header_length, parse_header, shard_names
from llmhost.models.spec import ModelFile, ModelSpec, QuantizedVariant, QuantMethod
from llmhost.models.tensors import TensorRecord

if TYPE_CHECKING:  # gguf_header (the header reader): only GGUF inputs load it
    from llmhost.models.gguf_header import GGUFHeader

# Safetensors headers of real shards are a few KiB; one 16 KiB read usually holds the whole header.
_SAFETENSORS_FIRST_READ = 16 * 1024
_CACHE_VERSION = 1


class _Cache:
    """JSON files under <HF hub cache>/llmhost/: file lists by revision, parsed headers by commit."""

    def __init__(self, ctx: hub.HubContext, key: str) -> None:
        self.root = ctx.cache_dir / "llmhost" / key.replace("/", "--")

    def _read(self, path: Path) -> Any:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("v") != _CACHE_VERSION:
            return None
        return data.get("data")

    def _write(self, path: Path, data: Any) -> None:
        # A read-only cache only costs a re-read next time.
        write_atomic_quietly(path, json.dumps({"v": _CACHE_VERSION, "data": data}))

    def listing(self, revision: str) -> hub.RepoInfo | None:
        d = self._read(self.root / "refs" / f"{_safe(revision)}.json")
        if not d:
            return None
        return hub.RepoInfo(d["repo_id"], d["sha"], [hub.RepoFile(p, s) for p, s in d["files"]], d["gated"])

    def save_listing(self, revision: str, info: hub.RepoInfo) -> None:
        data = {
            "repo_id": info.repo_id,
            "sha": info.sha,
            "files": [[f.path, f.size] for f in info.files],
            "gated": info.gated,
        }
        self._write(self.root / "refs" / f"{_safe(revision)}.json", data)
        self._write(self.root / "refs" / f"{_safe(info.sha)}.json", data)

    def header(self, sha: str, filename: str) -> Any:
        return self._read(self.root / "headers" / _safe(sha) / f"{_safe(filename)}.json")

    def save_header(self, sha: str, filename: str, data: Any) -> None:
        self._write(self.root / "headers" / _safe(sha) / f"{_safe(filename)}.json", data)

    def raw_header_path(self, sha: str, filename: str) -> Path:
        return self.root / "headers" / _safe(sha) / f"{_safe(filename)}.gguf-header"

    def save_raw_header(self, sha: str, filename: str, raw: bytes) -> None:
        write_atomic_quietly(self.raw_header_path(sha, filename), raw)


def _safe(name: str) -> str:
    return name.replace("/", "--").replace("\\", "--")


def resolve_remote(parsed: ParsedRef, *, offline: bool | None = None) -> ModelSpec:
    ctx = hub.context(offline)
    if parsed.kind == "gguf_url":
        assert parsed.url is not None
        return _resolve_gguf_url(ctx, parsed)
    assert parsed.repo_id is not None
    revision = parsed.revision or "main"
    cache = _Cache(ctx, parsed.repo_id)
    if ctx.offline and parsed.kind == "hf_repo" and cache.listing(revision) is None:
        return _offline_config_only(ctx, parsed, revision)
    info = _listing(ctx, cache, parsed.repo_id, revision)
    names = {f.path for f in info.files}
    if parsed.kind == "gguf_repo" or ("config.json" not in names and any(n.endswith(".gguf") for n in names)):
        return _resolve_gguf_repo(ctx, cache, parsed, info)
    return _resolve_hf_repo(ctx, cache, parsed, info)


def _listing(ctx: hub.HubContext, cache: _Cache, repo_id: str, revision: str) -> hub.RepoInfo:
    if ctx.offline:
        cached = cache.listing(revision)
        if cached is None:
            raise ModelError(
                f"{repo_id}@{revision} has not been resolved on this machine yet and offline mode is on.",
                hint="Run the same command once online, or unset HF_HUB_OFFLINE.",
            )
        return cached
    info = hub.repo_info(ctx, repo_id, revision)
    cache.save_listing(revision, info)
    return info


def _offline_config_only(ctx: hub.HubContext, parsed: ParsedRef, revision: str) -> ModelSpec:
    """Offline, never resolved by llmhost, but another tool left config.json in the HF cache."""
    repo_id = parsed.repo_id or ""
    try:
        config, sha, _ = hub.download_json(ctx, repo_id, "config.json", revision)
    except ModelError as exc:
        raise ModelError(
            f"{repo_id}@{revision} is not in the local cache and offline mode is on.",
            hint="Run the same command once online, or unset HF_HUB_OFFLINE.",
        ) from exc
    return spec_from_hf(
        ref=parsed.raw,
        kind="hf_repo",
        name=repo_id.split("/")[-1],
        config=config,
        tensors=None,
        files=[],
        repo_id=repo_id,
        revision=sha,
        notes=["Offline with only config.json cached: counts come from the architecture."],
    )


# --- safetensors repos ----------------------------------------------------------------------------


def _resolve_hf_repo(ctx: hub.HubContext, cache: _Cache, parsed: ParsedRef, info: hub.RepoInfo) -> ModelSpec:
    repo_id = info.repo_id
    names = {f.path: f.size for f in info.files}
    if "config.json" not in names:
        raise ModelError(
            f"{repo_id} has no config.json and no .gguf files.",
            hint="Pass a transformers model repo or a GGUF repo with a :QUANT tag.",
        )
    bytes_read = 0
    config, _sha, n = _small_json(ctx, info, "config.json", names)
    bytes_read += n
    if not isinstance(config, dict):
        raise ModelError(f"{repo_id}/config.json is not a JSON object.")
    if "quantization_config" not in config and "quantize_config.json" in names:  # older GPTQ repos
        qcfg, _, n = _small_json(ctx, info, "quantize_config.json", names)
        bytes_read += n
        if isinstance(qcfg, dict):
            config = {**config, "quantization_config": {"quant_method": "gptq", **qcfg}}
    shards: list[str]
    if "model.safetensors.index.json" in names:
        index, _, n = _small_json(ctx, info, "model.safetensors.index.json", names)
        bytes_read += n
        shards = shard_names(index, label=f"{repo_id}/model.safetensors.index.json")
    elif "model.safetensors" in names:
        shards = ["model.safetensors"]
    else:
        shards = sorted(n for n in names if n.endswith(".safetensors") and "/" not in n)
        shards = [s for s in shards if not s.startswith("consolidated")] or shards
    notes: list[str] = []
    tensors: list[TensorRecord] = []
    # Large MoE repos have 100+ shards: fetch their headers concurrently (as huggingface_hub does).
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(shards)))) as pool:
        results = list(pool.map(lambda s: _safetensors_header(ctx, cache, repo_id, info.sha, s), shards))
    for records, n in results:
        if records is None:
            notes.append("Safetensors headers are not cached (offline): counts come from config.json.")
            tensors = []
            break
        tensors.extend(records)
        bytes_read += n
    files = [
        ModelFile(path=s, size_bytes=names.get(s), url=hub.file_url(ctx, repo_id, s, info.sha))
        for s in shards
    ]
    if not shards:
        notes.append("The repo has no .safetensors files: counts come from config.json.")
    return spec_from_hf(
        ref=parsed.raw,
        kind="hf_repo",
        name=repo_id.split("/")[-1],
        config=config,
        tensors=tensors or None,
        files=files,
        repo_id=repo_id,
        revision=info.sha,
        bytes_read=bytes_read,
        notes=notes,
    )


def _small_json(
    ctx: hub.HubContext, info: hub.RepoInfo, filename: str, sizes: dict[str, int | None]
) -> tuple[Any, str, int]:
    """A repo's JSON file, refused from the listing's size before anything is downloaded if too big."""
    size = sizes.get(filename)
    if size is not None and size > MAX_JSON_BYTES:
        raise too_large(f"{info.repo_id}/{filename}", size, MAX_JSON_BYTES)
    return hub.download_json(ctx, info.repo_id, filename, info.sha)


def _safetensors_header(
    ctx: hub.HubContext, cache: _Cache, repo_id: str, sha: str, filename: str
) -> tuple[list[TensorRecord] | None, int]:
    cached = cache.header(sha, filename)
    if cached is not None:
        return [TensorRecord(n, d, tuple(s), b) for n, d, s, b in cached], 0
    if ctx.offline:
        return None, 0
    url = hub.file_url(ctx, repo_id, filename, sha)
    label = f"{repo_id}/{filename}"
    first, total = hub.fetch_range(ctx, url, 0, _SAFETENSORS_FIRST_READ - 1, label=label)
    size = header_length(first, label=label)
    fetched = len(first)
    raw = first[8 : 8 + size]
    if len(raw) < size:
        rest, _ = hub.fetch_range(ctx, url, len(first), 8 + size - 1, label=label)
        fetched += len(rest)
        raw += rest
        if len(raw) < size:
            raise ModelError(f"{label}: safetensors header is truncated.")
    records = parse_header(raw, label=label, data_bytes=None if total is None else total - 8 - size)
    cache.save_header(sha, filename, [[r.name, r.dtype, list(r.shape), r.n_bytes] for r in records])
    return records, fetched


# --- GGUF -------------------------------------------------------------------------------------------


def _remote_gguf_header(
    ctx: hub.HubContext, cache: _Cache, sha: str, filename: str, url: str, size: int | None, label: str
) -> tuple[GGUFHeader, int]:
    from llmhost.models.gguf_header import header_from_json, header_to_json, read_remote_header

    cached = cache.header(sha, filename)
    if cached is not None:
        try:
            return header_from_json(cached), 0
        except (KeyError, TypeError, ValueError, AttributeError):
            pass  # a cache entry of another shape (edited, or from a future llmhost): read it again
    if ctx.offline:
        raise ModelError(
            f"The header of {label} is not cached and offline mode is on.",
            hint="Run the same command once online, or unset HF_HUB_OFFLINE.",
        )

    def fetch(start: int, end: int) -> tuple[bytes, int | None]:
        return hub.fetch_range(ctx, url, start, end, label=label)

    header, n = read_remote_header(
        fetch, size, label=label, keep=lambda raw: cache.save_raw_header(sha, filename, raw)
    )
    cache.save_header(sha, filename, header_to_json(header))
    return header, n


def cached_gguf_headers(spec: ModelSpec) -> list[tuple[str, Path, int]] | None:
    """For a remote GGUF spec: (file name, cached raw header, file size) of each of its files, as read
    when it was resolved, or None when one is missing (a cache from before raw headers were kept)."""
    ctx = hub.context(None)
    out: list[tuple[str, Path, int]] = []
    if spec.kind == "gguf_repo" and spec.repo_id and spec.revision:
        cache, sha = _Cache(ctx, spec.repo_id), spec.revision
        entries = [(f.path, f.path.rsplit("/", 1)[-1], f.size_bytes) for f in spec.files]
    elif spec.kind == "gguf_url" and spec.files:
        url = spec.files[0].path
        cache, sha = _Cache(ctx, _url_key(url)), "url"
        entries = [("header", url.split("?", 1)[0].rsplit("/", 1)[-1], spec.files[0].size_bytes)]
    else:
        return None
    for filename, basename, size in entries:
        raw = cache.raw_header_path(sha, filename)
        if not size or not raw.is_file():
            return None
        out.append((basename, raw, size))
    return out


def _url_key(url: str) -> str:
    return "url-" + hashlib.sha256(url.encode()).hexdigest()[:16]


def _resolve_gguf_repo(
    ctx: hub.HubContext, cache: _Cache, parsed: ParsedRef, info: hub.RepoInfo
) -> ModelSpec:
    repo_id = info.repo_id
    urls = {
        f.path: hub.file_url(ctx, repo_id, f.path, info.sha) for f in info.files if f.path.endswith(".gguf")
    }
    variants = gguf_tags.variants(((f.path, f.size) for f in info.files), urls)
    if not variants:
        raise ModelError(
            f"{repo_id} has no .gguf files.", hint=f"Try `llmhost plan {repo_id}` without a tag."
        )
    explicit = parsed.tag is not None and not (parsed.tag == DEFAULT_GGUF_TAG and ":" not in parsed.raw)
    chosen = gguf_tags.pick(variants, parsed.tag or DEFAULT_GGUF_TAG, explicit=explicit)
    if chosen is None:
        tags = ", ".join(v.tag for v in variants)
        raise ModelError(
            f"{repo_id} has no {parsed.tag} file.", hint=f"Available tags: {tags}. Use {repo_id}:<TAG>."
        )
    headers: list[GGUFHeader] = []
    bytes_read = 0
    for f in chosen.files:
        h, n = _remote_gguf_header(
            ctx, cache, info.sha, f.path, urls[f.path], f.size_bytes, f"{repo_id}/{f.path}"
        )
        headers.append(h)
        bytes_read += n
    headers.sort(key=lambda h: 0 if h.fields.get("general.architecture") else 1)
    return spec_from_gguf(
        ref=parsed.raw,
        kind="gguf_repo",
        name=repo_id.split("/")[-1].removesuffix("-GGUF").removesuffix("-gguf") + f"-{chosen.tag}",
        headers=headers,
        files=chosen.files,
        repo_id=repo_id,
        revision=info.sha,
        bytes_read=bytes_read,
        variants=variants,
    )


def _resolve_gguf_url(ctx: hub.HubContext, parsed: ParsedRef) -> ModelSpec:
    url = parsed.url or ""
    cache = _Cache(ctx, _url_key(url))
    header, n = _remote_gguf_header(ctx, cache, "url", "header", url, None, url)
    name = url.split("?", 1)[0].rsplit("/", 1)[-1].removesuffix(".gguf")
    if header.fields.get("split.count", 1) not in (0, 1):
        raise ModelError(
            f"{url} is one shard of a split GGUF.", hint="Pass the Hub repo with a :TAG to read every shard."
        )
    return spec_from_gguf(
        ref=parsed.raw,
        kind="gguf_url",
        name=name,
        headers=[header],
        files=[ModelFile(path=url, size_bytes=header.file_size, url=url)],
        bytes_read=n,
    )


def _guess_method(repo_id: str, tags: list[str]) -> QuantMethod | None:
    words = {t.lower() for t in tags} | {repo_id.lower()}
    text = " ".join(sorted(words))
    for needle, method in (
        ("gguf", "gguf"),
        ("awq", "awq"),
        ("gptq", "gptq"),
        ("compressed-tensors", "compressed-tensors"),
        ("fp8", "fp8"),
        ("mxfp4", "mxfp4"),
        ("bnb", "bitsandbytes"),
        ("bitsandbytes", "bitsandbytes"),
    ):
        if needle in text:
            return method  # type: ignore[return-value]
    return "other"


def find_quantized_variants(repo_id: str, *, offline: bool | None = None) -> list[QuantizedVariant]:
    ctx = hub.context(offline)
    return [
        QuantizedVariant(
            repo_id=m["repo_id"], method=_guess_method(m["repo_id"], m["tags"]), downloads=m["downloads"]
        )
        for m in hub.list_quantized(ctx, repo_id)
    ]
