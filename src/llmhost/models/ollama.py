"""Ollama's local model store as a model source: `ollama:NAME[:TAG]` and `llmhost inspect --ollama`.

Layout (see docs/models.md for the sources in ollama/ollama this follows):

    $OLLAMA_MODELS/manifests/<host>/<namespace>/<model>/<tag>   a JSON manifest (Docker v2 shaped)
    $OLLAMA_MODELS/blobs/sha256-<hex>                            content-addressed layers

The manifest's `application/vnd.ollama.image.model` layer is a plain GGUF file, served in place by
llama.cpp (no copy). Everything in the store is untrusted input: names are checked part by part so
that `..` or an absolute component can never leave the store, digests must be `sha256:<64 hex>` (which
is also what keeps a blob path inside `blobs/`), and manifests go through the bounded JSON reader.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import ConfigDict, Field, ValidationError

from llmhost.atomic import write_atomic_quietly
from llmhost.contract import FrozenContract
from llmhost.errors import ModelError
from llmhost.models.files import cannot_read, open_regular, parse_json, present, read_bounded
from llmhost.models.spec import ModelSpec, OllamaSource

PREFIX = "ollama:"
DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

MT_MODEL = "application/vnd.ollama.image.model"
MT_TEMPLATE = "application/vnd.ollama.image.template"
MT_PARAMS = "application/vnd.ollama.image.params"
MT_SYSTEM = "application/vnd.ollama.image.system"
MT_LICENSE = "application/vnd.ollama.image.license"
MT_PROJECTOR = "application/vnd.ollama.image.projector"
MT_ADAPTER = "application/vnd.ollama.image.adapter"

# Real manifests are under 2 KiB; templates and params a few KiB. Anything far larger is not one.
MAX_MANIFEST_BYTES = 1 * 2**20
MAX_TEXT_LAYER_BYTES = 4 * 2**20
_HASH_CHUNK = 8 * 2**20

# A name part: what Ollama's own name rules allow (letters, digits, '_', '-', '.'), starting with a letter
# or digit; so '..', '.', '' and anything with a separator are refused before a path is built.
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,349}$")
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_NAME_HINT = (
    "Use ollama:NAME[:TAG], ollama:USER/NAME[:TAG] or ollama:HOST/NAMESPACE/NAME:TAG (see `ollama list`)."
)
_STORE_HINT = (
    "Set OLLAMA_MODELS to the directory holding manifests/ and blobs/ (see `llmhost inspect --ollama`)."
)


class _Strict(FrozenContract):
    # strict: a manifest's "size": "12" or true is damage, not something to coerce
    model_config = ConfigDict(strict=True)


class Layer(_Strict):
    model_config = ConfigDict(populate_by_name=True)  # merged with _Strict's

    mediaType: str
    digest: str
    size: int = Field(ge=0)
    # Optional in Ollama's Layer (server/layer.go): `from` on layers inherited from a base model, and
    # name/dtype/shape on the tensor layers of safetensors-based models (not servable here, but a
    # manifest that has them is still a manifest, refused later for having no GGUF model layer).
    from_: str | None = Field(default=None, alias="from")
    name: str | None = None
    dtype: str | None = None
    shape: list[int] | None = None


class Manifest(_Strict):
    schemaVersion: int
    mediaType: str | None = None
    config: Layer | None = None
    layers: list[Layer]


@dataclass(frozen=True)
class OllamaName:
    host: str
    namespace: str
    model: str
    tag: str

    @property
    def full(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def short(self) -> str:
        """How `ollama list` shows it: the default host and namespace are left out."""
        if self.host == DEFAULT_HOST:
            if self.namespace == DEFAULT_NAMESPACE:
                return f"{self.model}:{self.tag}"
            return f"{self.namespace}/{self.model}:{self.tag}"
        return self.full

    def manifest_path(self, root: Path) -> Path:
        return root / "manifests" / self.host / self.namespace / self.model / self.tag


def _bad_name(text: str, why: str) -> ModelError:
    return ModelError(f"{text[:80]!r} is not a valid Ollama model name: {why}.", hint=_NAME_HINT)


def parse_name(text: str) -> OllamaName:
    """`name`, `name:tag`, `user/name[:tag]`, `host/ns/name[:tag]` (the `ollama:` prefix optional)."""
    body = text.removeprefix(PREFIX).strip()
    if not body:
        raise _bad_name(text, "empty")
    parts = body.split("/")
    if len(parts) > 3:
        raise _bad_name(text, "more than host/namespace/name")
    last, sep, tag = parts[-1].partition(":")
    if sep and not tag:
        raise _bad_name(text, "empty tag after ':'")
    parts[-1] = last
    host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
    if len(parts) == 3:
        host, namespace, model = parts
    elif len(parts) == 2:
        namespace, model = parts
    else:
        (model,) = parts
    if not _HOST.match(host) or ".." in host:
        raise _bad_name(text, f"bad host {host[:40]!r}")
    for what, part in (("namespace", namespace), ("model", model), ("tag", tag or DEFAULT_TAG)):
        if not _PART.match(part) or ".." in part:
            raise _bad_name(text, f"bad {what} {part[:40]!r}")
    return OllamaName(host=host, namespace=namespace, model=model, tag=tag or DEFAULT_TAG)


def candidate_roots() -> list[Path]:
    """Where Ollama keeps its models when OLLAMA_MODELS is unset, most likely first."""
    if sys.platform == "win32":
        profile = os.environ.get("USERPROFILE")
        return [Path(profile) / ".ollama" / "models"] if profile else []
    roots = [Path.home() / ".ollama" / "models"]
    if sys.platform.startswith("linux"):
        roots.append(Path("/usr/share/ollama/.ollama/models"))  # the systemd service's home
    return roots


def store_root() -> Path:
    # As Ollama's envconfig reads it: surrounding spaces and quotes stripped, empty means unset.
    env = os.environ.get("OLLAMA_MODELS", "").strip().strip("\"'")
    if env:
        root = Path(env).expanduser()
        if not present(root / "manifests"):
            raise ModelError(f"OLLAMA_MODELS={env} holds no manifests/ directory.", hint=_STORE_HINT)
        return root
    roots = candidate_roots()
    for root in roots:
        if present(root / "manifests"):
            return root
    looked = ", ".join(str(r) for r in roots) or "nowhere (no home directory)"
    raise ModelError(f"No Ollama model store found (looked in {looked}).", hint=_STORE_HINT)


def blob_path(root: Path, digest: str, *, label: object) -> Path:
    m = _DIGEST.match(digest)
    if m is None:
        raise ModelError(
            f"{label}: layer digest {digest[:80]!r} is not sha256:<64 hex digits>.",
            hint="The manifest is damaged: run `ollama pull` for the model again.",
        )
    return root / "blobs" / f"sha256-{m.group(1)}"  # Ollama writes ':' as '-' on every platform


def read_manifest(path: Path) -> Manifest:
    data = parse_json(read_bounded(path, MAX_MANIFEST_BYTES), label=path)
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "top level"
        raise ModelError(
            f"{path} is not an Ollama manifest ({where}: {first['msg']}).",
            hint="Run `ollama pull` for the model again, or remove the manifest.",
        ) from None


def list_names(root: Path) -> list[OllamaName]:
    """Every manifest in the store, as Ollama's own listing finds them (manifests/*/*/*/*)."""
    names: list[OllamaName] = []
    base = root / "manifests"
    for path in sorted(base.glob("*/*/*/*")):
        if not path.is_file():
            continue
        host, namespace, model, tag = path.relative_to(base).parts
        try:
            names.append(parse_name(f"{host}/{namespace}/{model}:{tag}"))
        except ModelError:
            continue  # a file Ollama itself would skip as a bad name
    return names


def _damaged(path: Path, what: str) -> ModelError:
    return ModelError(
        f"Ollama blob {path} {what}.", hint="Run `ollama pull` for the model again to repair the store."
    )


def _verified_cache() -> Path:
    from llmhost.cache import cache_dir

    return cache_dir() / "ollama-verified.json"


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def _load_verified() -> dict[str, Any]:
    path = _verified_cache()
    try:
        data = parse_json(read_bounded(path, MAX_MANIFEST_BYTES), label=path) if path.is_file() else {}
    except ModelError:
        return {}  # a damaged cache only costs a rehash
    return data if isinstance(data, dict) else {}


def _remember_verified(path: Path, st: os.stat_result) -> None:
    cache = _verified_cache()
    # Entries for blobs that are gone (`ollama rm`, a pruned store) are dropped so the memo stays small.
    data = {k: v for k, v in _load_verified().items() if os.path.lexists(k)}
    data[str(path)] = _identity(st)
    write_atomic_quietly(cache, json.dumps(data))  # not remembering only means hashing again next time


def _sha256_stream(fh: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := fh.read(_HASH_CHUNK):  # constant memory, whatever the blob's size
        digest.update(chunk)
    return digest.hexdigest()


def verify_blob(path: Path, layer: Layer) -> None:
    """Size against the manifest, then the sha256 of the whole blob (streamed).

    Hashing reads every byte (a 4.7 GB Q4_K_M takes a few seconds from a warm page cache, longer from
    disk), so a blob that verified once is remembered by (device, inode, size, mtime): an unchanged file
    is not hashed again, a rewritten or replaced one is."""
    with open_regular(path) as fh:
        try:
            st = os.fstat(fh.fileno())
            if st.st_size != layer.size:
                raise _damaged(path, f"is {st.st_size:,} bytes; the manifest says {layer.size:,}")
            if _load_verified().get(str(path)) == _identity(st):
                return
            hexdigest = _sha256_stream(fh)
        except OSError as exc:
            raise cannot_read(path, exc) from exc
    if f"sha256:{hexdigest}" != layer.digest:
        raise _damaged(path, f"does not match its digest {layer.digest[:19]}... (it is damaged)")
    _remember_verified(path, st)


def _text_layer(root: Path, layer: Layer, *, label: object) -> str:
    path = blob_path(root, layer.digest, label=label)
    if not present(path):
        raise _damaged(path, "is missing")
    raw = read_bounded(path, MAX_TEXT_LAYER_BYTES)
    if len(raw) != layer.size or f"sha256:{hashlib.sha256(raw).hexdigest()}" != layer.digest:
        raise _damaged(
            path, f"does not match its {layer.mediaType.rsplit('.', 1)[-1]} layer's size or digest"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _damaged(path, "is not UTF-8 text") from None


def _unknown(name: OllamaName, root: Path) -> ModelError:
    known = [n.short for n in list_names(root)]
    close = difflib.get_close_matches(name.short, known, n=3, cutoff=0.5)
    if not close:  # same model, another tag: show its tags
        close = [k for k in known if k.split(":")[0] == name.short.split(":")[0]][:3]
    hint = (
        f"Did you mean {', '.join('ollama:' + c for c in close)}? "
        if close
        else ("The store is empty. " if not known else "")
    )
    return ModelError(
        f"No Ollama model {name.short} in {root}.",
        hint=hint + "Run `llmhost inspect --ollama` to list the store, or `ollama pull` it first.",
    )


@dataclass(frozen=True)
class Resolved:
    name: OllamaName
    root: Path
    manifest_path: Path
    manifest: Manifest
    model_layer: Layer
    blob: Path


def locate(ref: str, root: Path | None = None) -> Resolved:
    """Find the manifest and the GGUF blob of `ref` and check the blob's presence, size and magic."""
    name = parse_name(ref)
    root = root or store_root()
    manifest_path = name.manifest_path(root)
    if not present(manifest_path):
        raise _unknown(name, root)
    manifest = read_manifest(manifest_path)
    models = [layer for layer in manifest.layers if layer.mediaType == MT_MODEL]
    if len(models) != 1:
        raise ModelError(
            f"{manifest_path} has {len(models)} model layers ({MT_MODEL}); llmhost serves one GGUF.",
            hint="This is not a GGUF model llmhost can serve (safetensors imports are not supported).",
        )
    layer = models[0]
    blob = blob_path(root, layer.digest, label=manifest_path)
    if not present(blob):
        raise _damaged(blob, f"is missing (the model layer of {name.short})")
    with open_regular(blob) as fh:
        try:
            magic = fh.read(4)
        except OSError as exc:
            raise cannot_read(blob, exc) from exc
    if magic != b"GGUF":
        raise ModelError(
            f"Ollama blob {blob} (model layer of {name.short}) is not a GGUF file (starts with {magic!r}).",
            hint="llmhost serves GGUF models only; run `ollama pull` again if the store is damaged.",
        )
    return Resolved(name, root, manifest_path, manifest, layer, blob)


def resolve_ollama(ref: str) -> ModelSpec:
    from llmhost.models.local import resolve_gguf_file

    found = locate(ref)
    verify_blob(found.blob, found.model_layer)
    template = system = projector = None
    params: dict[str, Any] = {}
    adapters: list[str] = []
    label = found.manifest_path
    for layer in found.manifest.layers:
        if layer.mediaType == MT_TEMPLATE:
            template = _text_layer(found.root, layer, label=label)
        elif layer.mediaType == MT_SYSTEM:
            system = _text_layer(found.root, layer, label=label)
        elif layer.mediaType == MT_PARAMS:
            text = _text_layer(found.root, layer, label=label)
            value = parse_json(text.encode(), label=f"params layer of {found.name.short}")
            if not isinstance(value, dict):
                raise _damaged(blob_path(found.root, layer.digest, label=label), "is not a JSON object")
            params = value
        elif layer.mediaType in (MT_PROJECTOR, MT_ADAPTER):
            path = str(blob_path(found.root, layer.digest, label=label))
            if layer.mediaType == MT_PROJECTOR:
                projector = path
            else:
                adapters.append(path)
    num_ctx = params.get("num_ctx")
    context_hint = (
        num_ctx if isinstance(num_ctx, int) and not isinstance(num_ctx, bool) and num_ctx > 0 else None
    )
    source = OllamaSource(
        name=found.name.full,
        manifest=str(found.manifest_path),
        model_digest=found.model_layer.digest,
        digest_verified=True,
        template=template,
        system=system,
        params=params,
        context_hint=context_hint,
        projector=projector,
        adapters=adapters,
    )
    notes = [f"Ollama {found.name.short}: serving blob {found.blob.name} in place (sha256 verified)."]
    if template is not None:
        notes.append(
            "Its template is Ollama's Go template, not Jinja: llama.cpp uses the GGUF's own template."
        )
    if context_hint:
        notes.append(
            f"Ollama's num_ctx is {context_hint}: plans default to that context (--context overrides)."
        )
    if projector or adapters:
        notes.append("Its projector/adapter layers are recorded but not loaded by llmhost.")
    spec = resolve_gguf_file(found.blob, ref)
    served = found.name.model if found.name.tag == DEFAULT_TAG else f"{found.name.model}-{found.name.tag}"
    return spec.model_copy(update={"name": served, "ollama": source, "notes": [*spec.notes, *notes]})


@dataclass(frozen=True)
class StoreEntry:
    name: str
    size_bytes: int | None
    digest: str | None
    quantization: str | None
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size_bytes": self.size_bytes,
            "digest": self.digest,
            "quantization": self.quantization,
            "error": self.error,
        }


def list_store(root: Path | None = None) -> tuple[Path, list[StoreEntry]]:
    """Every model in the store; a broken one is listed with its error rather than hiding the rest.

    Sizes are the manifest's (layers + config, as `ollama list` counts them); no blob is hashed here,
    only the GGUF header is read for the quantization (memory-mapped, tensor data untouched)."""
    from llmhost.models.gguf_header import read_local_header

    root = root or store_root()
    entries: list[StoreEntry] = []
    for name in list_names(root):
        size = digest = quant = None
        try:
            found = locate(name.full, root)
            layers = [*found.manifest.layers, *([found.manifest.config] if found.manifest.config else [])]
            size = sum(layer.size for layer in layers)
            digest = found.model_layer.digest
            quant = read_local_header(found.blob).file_type_tag
            entries.append(StoreEntry(name.short, size, digest, quant, None))
        except ModelError as exc:
            entries.append(StoreEntry(name.short, size, digest, quant, exc.message))
    return root, entries
